//! The runtime's [`Handler`] for the `mapper` queue: drop duplicates, route the message to its
//! flow, publish the resulting commands with confirms, and answer the runtime.
//!
//! # Duplicates (DESIGN §5)
//! `SET <ns>:seen:mapper:<idempotency_key> <message id> NX` ([`Dedup::seen_by`]). HubSpot
//! re-sends whole batches, and ingest gives each delivery new message IDs with the same
//! idempotency keys: the second one is a `Duplicate`. The marker holds the message ID, so the
//! *same* message coming back — a quick retry, the retry ladder, a broker redelivery after a
//! crash, a DLQ replay — is processed again instead of being dropped as its own duplicate;
//! nothing needs forgetting when processing fails. Redis down: processed anyway (the writers'
//! keys absorb repeats).
//!
//! # Failures
//! A deal that cannot be mapped goes to the DLQ with the reason (permanent), and its
//! `erpnext_sync_status` is set to `error` so sales sees it in HubSpot; the replay after the
//! fix syncs it and erp-writer's outcome sets `synced`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use chrono_tz::Tz;
use serde::de::DeserializeOwned;
use shared::commands::{ErpOutcome, SyncStatus, UpdateCrmObject};
use shared::dedup::{Dedup, SeenResult};
use shared::envelope::{Envelope, Kind};
use shared::erpnext::ErpNextClient;
use shared::events::{ErpNextEvent, HubSpotEvent};
use shared::mapping::MappingConfig;
use shared::names::WorkQueue;
use shared::runtime::{Handler, HandlerError, Incoming, Outcome};
use url::Url;

use crate::catalog::Catalog;
use crate::emit::{Command, Decision, Emitter};
use crate::error::MapError;
use crate::map::Context;
use crate::markers::Markers;
use crate::snapshot::Reader;
use crate::{deal, invoice, metrics, outcomes, updates};

/// What every flow needs: the mapping, the site's time zone, the clients and the markers.
#[derive(Debug)]
pub struct Services {
    pub cfg: MappingConfig,
    /// ERPNext's time zone (naive `modified` timestamps, order dates).
    pub tz: Tz,
    pub reader: Reader,
    pub catalog: Catalog,
    /// For resolving invoices through their Sales Orders; `None` without credentials.
    pub erpnext: Option<ErpNextClient>,
    pub markers: Markers,
    /// Base of links to ERPNext documents.
    pub app_url: Url,
}

impl Services {
    pub fn ctx(&self) -> Context<'_> {
        Context {
            cfg: &self.cfg,
            tz: self.tz,
            now: Utc::now(),
        }
    }
}

/// Cheap to clone; one instance serves every delivery.
#[derive(Debug, Clone)]
pub struct MapperHandler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    services: Services,
    dedup: Dedup,
    seen_ttl: Duration,
    emitter: Emitter,
}

impl MapperHandler {
    pub fn new(services: Services, dedup: Dedup, seen_ttl: Duration, emitter: Emitter) -> Self {
        Self {
            inner: Arc::new(Inner {
                services,
                dedup,
                seen_ttl,
                emitter,
            }),
        }
    }

    async fn handle_message(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        let inner = &self.inner;
        let envelope = &msg.envelope;
        let key = envelope.idempotency_key.as_str();
        if key.is_empty() {
            return Err(HandlerError::permanent(
                "message has an empty idempotency_key",
            ));
        }
        let consumer = WorkQueue::Mapper.base_name();
        if let Ok(SeenResult::Duplicate) = inner
            .dedup
            .seen_by(consumer, key, &envelope.id.to_string(), inner.seen_ttl)
            .await
        {
            // Dropping is a decision about data: visible at INFO (and counted by the runtime as
            // `l2l_messages_acked_total{outcome="duplicate"}`).
            tracing::info!(idempotency_key = key, correlation_id = %envelope.correlation_id, routing_key = %msg.routing_key, "duplicate event dropped");
            return Ok(Outcome::Duplicate);
        }
        let decision = match self.decide(&msg).await {
            Ok(d) => d,
            Err(e) => {
                if let MapError::Unmappable(u) = &e {
                    metrics::unmappable(u.reason.code());
                    if let Some(deal) = &u.deal_id {
                        self.report_error_status(envelope, deal, &e.to_string())
                            .await;
                    }
                }
                let answer = e.to_handler_error();
                if answer.is_transient() {
                    tracing::warn!(routing_key = %msg.routing_key, error = %answer.message, "mapping failed; will retry");
                } else {
                    tracing::error!(routing_key = %msg.routing_key, error = %answer.message, "message cannot be mapped");
                }
                return Err(answer);
            }
        };
        match decision {
            Decision::Emit(commands) => {
                inner
                    .emitter
                    .publish(envelope, &commands)
                    .await
                    .map_err(|e| e.to_handler_error())?;
                Ok(Outcome::Done)
            }
            Decision::Ignore { code, reason } => {
                metrics::ignored(code);
                tracing::info!(routing_key = %msg.routing_key, reason = %reason, "ignored");
                Ok(Outcome::Ignored { reason })
            }
            Decision::Recorded { what } => {
                tracing::debug!(routing_key = %msg.routing_key, %what, "recorded");
                Ok(Outcome::Done)
            }
        }
    }

    /// Show the failure on the deal (`erpnext_sync_status = error`, the reason in
    /// `erpnext_sync_message`) while the message waits in
    /// the DLQ for a fix. Best effort: the dead letter is what matters.
    async fn report_error_status(&self, envelope: &Envelope, deal: &str, reason: &str) {
        let w = &self.inner.services.cfg.writeback;
        let update = UpdateCrmObject {
            object_id: deal.to_string(),
            properties: BTreeMap::from([
                (
                    w.deal_sync_status.clone(),
                    SyncStatus::Error.as_str().to_string(),
                ),
                (w.deal_sync_message.clone(), deal::short_reason(reason)),
            ]),
            source_modified: Utc::now(),
        };
        let published = match Command::new(Kind::CrmUpdateDeal, format!("deal:{deal}"), &update) {
            Ok(c) => self.inner.emitter.publish(envelope, &[c]).await,
            Err(e) => Err(e),
        };
        if let Err(e) = published {
            tracing::warn!(deal, error = %e, "could not flag the deal's sync status as error");
        }
    }

    /// Route a message to its flow.
    async fn decide(&self, msg: &Incoming) -> Result<Decision, MapError> {
        let s = &self.inner.services;
        let envelope = &msg.envelope;
        match &envelope.kind {
            Kind::HubSpotEvent => {
                let event: HubSpotEvent = payload(envelope)?;
                let Some((object, name)) = event.object_and_event() else {
                    return Err(MapError::BadMessage(format!(
                        "HubSpot event {} has subscriptionType {:?}",
                        event.event_id, event.subscription_type
                    )));
                };
                match object {
                    "deal" => deal::on_event(s, &event, name).await,
                    "line_item" => deal::on_line_item_event(s, &event, name).await,
                    "company" => updates::on_company_event(s, &event, name).await,
                    "contact" => updates::on_contact_event(s, &event, name).await,
                    other => Ok(Decision::ignore(
                        "unsupported_event",
                        format!("HubSpot {other} events are not mapped"),
                    )),
                }
            }
            Kind::ErpNextEvent => {
                invoice::on_event(s, envelope, &payload::<ErpNextEvent>(envelope)?).await
            }
            Kind::ErpOutcome => {
                outcomes::on_outcome(s, envelope, &payload::<ErpOutcome>(envelope)?).await
            }
            other => Err(MapError::BadMessage(format!(
                "the mapper does not handle {other} messages"
            ))),
        }
    }
}

fn payload<P: DeserializeOwned>(envelope: &Envelope) -> Result<P, MapError> {
    envelope.decode_payload().map_err(|e| {
        MapError::BadMessage(format!("{} payload does not decode: {e}", envelope.kind))
    })
}

impl Handler for MapperHandler {
    fn handle(
        &self,
        msg: Incoming,
    ) -> impl std::future::Future<Output = Result<Outcome, HandlerError>> + Send {
        self.handle_message(msg)
    }
}
