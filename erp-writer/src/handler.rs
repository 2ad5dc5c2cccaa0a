//! The runtime's [`Handler`] for the `erp-writer` queue: decode the command, guard it, apply it,
//! publish its outcomes with confirms, then let the runtime ack.
//!
//! # Guards (DESIGN §5)
//! 1. **Done marker** `<ns>:done:<idempotency_key>`: set after the outcomes are confirmed; a
//!    command seen again is acked as a duplicate without touching ERPNext.
//! 2. **A lock per HubSpot company**, in-process ([`KeyedLocks`]) and across processes (Redis
//!    lease `<ns>:lease:erp-writer:company:<id>`). Per company, not per command: two deals of
//!    one company share the Customer, Address and Contacts. (Their unique keys make twins
//!    impossible anyway; the lock saves the wasted inserts and conflicts.) The lease is renewed while the command runs; a command whose company is
//!    leased elsewhere waits for it, at most one lease TTL, before it counts as a failure.
//! 3. **The done marker again**, under the lock: the copy that waited for the lock finds the
//!    first copy's marker.
//!
//! Redis is only the fast path. When it does not answer, the lease and markers are skipped and
//! the steps still converge: every step looks its record up by the HubSpot key before creating
//! it, and a unique conflict means "exists". A crash anywhere — after the Sales Order insert,
//! before the publish, before the ack — leaves a state the next delivery completes.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use shared::broker::{Broker, Outgoing};
use shared::commands::{ErpOutcome, SyncDeal, UpdateContact, UpdateCustomer};
use shared::dedup::{Dedup, LeaseResult};
use shared::envelope::{Envelope, Kind, Source};
use shared::names::Exchange;
use shared::runtime::{DeadLetterKind, Handler, HandlerError, Incoming, Outcome};

use crate::error::StepFailure;
use crate::locks::KeyedLocks;
use crate::metrics;
use crate::site::ErpSite;
use crate::sync_deal::apply_sync_deal;
use crate::updates::{Applied, apply_update_contact, apply_update_customer};

/// How often a command waiting for its company's lease asks again.
const LEASE_POLL: Duration = Duration::from_millis(250);

/// Run `work` while renewing `lease` every third of `ttl`, so a live holder never loses it to
/// a slow ERPNext and a dead one's lapses within `ttl`.
async fn renewing<T>(
    dedup: &Dedup,
    lease: &shared::dedup::Lease,
    ttl: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                if let Ok(Some(false)) = dedup.renew_lease(lease, ttl).await {
                    tracing::warn!(
                        lease = lease.key(),
                        "lease expired while applying a command; another writer may now hold it"
                    );
                }
            }
        }
    }
}

/// Lease and marker lifetimes (from `[redis]`).
#[derive(Debug, Clone)]
pub struct Guards {
    pub lease_ttl: Duration,
    pub done_ttl: Duration,
}

/// Cheap to clone; one instance serves every delivery.
#[derive(Clone)]
pub struct ErpWriterHandler {
    inner: Arc<Inner>,
}

struct Inner {
    site: ErpSite,
    broker: Broker,
    dedup: Dedup,
    locks: KeyedLocks,
    /// `erp-writer/<pid>/<random>`: the lease holder's name, for the log of whoever is blocked.
    worker_id: String,
    guards: Guards,
}

impl std::fmt::Debug for ErpWriterHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErpWriterHandler")
            .field("worker_id", &self.inner.worker_id)
            .field("site", &self.inner.site)
            .finish_non_exhaustive()
    }
}

/// A decoded command and the key it is serialised on.
enum Command {
    SyncDeal(Box<SyncDeal>),
    UpdateCustomer(Box<UpdateCustomer>),
    UpdateContact(Box<UpdateContact>),
}

impl Command {
    fn decode(envelope: &Envelope) -> Result<Self, HandlerError> {
        fn payload<P: DeserializeOwned>(envelope: &Envelope) -> Result<P, HandlerError> {
            envelope.decode_payload().map_err(|e| {
                HandlerError::permanent(format!("{} payload does not decode: {e}", envelope.kind))
            })
        }
        match &envelope.kind {
            Kind::ErpSyncDeal => payload(envelope).map(|c| Command::SyncDeal(Box::new(c))),
            Kind::ErpUpdateCustomer => {
                payload(envelope).map(|c| Command::UpdateCustomer(Box::new(c)))
            }
            Kind::ErpUpdateContact => {
                payload(envelope).map(|c| Command::UpdateContact(Box::new(c)))
            }
            other => Err(HandlerError::permanent(format!(
                "erp-writer does not handle {other} messages"
            ))),
        }
    }

    /// What this command is serialised on: its HubSpot company (contact alone when unknown).
    fn lock_key(&self) -> String {
        match self {
            Command::SyncDeal(c) => format!("erp-writer:company:{}", c.customer.hubspot_company_id),
            Command::UpdateCustomer(c) => {
                format!("erp-writer:company:{}", c.customer.hubspot_company_id)
            }
            Command::UpdateContact(c) => match &c.hubspot_company_id {
                Some(company) => format!("erp-writer:company:{company}"),
                None => format!("erp-writer:contact:{}", c.contact.hubspot_contact_id),
            },
        }
    }
}

impl ErpWriterHandler {
    pub fn new(site: ErpSite, broker: Broker, dedup: Dedup, guards: Guards) -> Self {
        let worker_id = format!(
            "erp-writer/{}/{}",
            std::process::id(),
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        Self {
            inner: Arc::new(Inner {
                site,
                broker,
                dedup,
                locks: KeyedLocks::new(),
                worker_id,
                guards,
            }),
        }
    }

    pub fn site(&self) -> &ErpSite {
        &self.inner.site
    }

    async fn handle_message(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        let envelope = &msg.envelope;
        let command = Command::decode(envelope)?;
        let key = envelope.idempotency_key.as_str();
        let inner = &self.inner;
        if key.is_empty() {
            return Err(HandlerError::permanent(
                "command has an empty idempotency_key",
            ));
        }
        if inner.dedup.done(key).await.ok().flatten().is_some() {
            metrics::skipped("done");
            return Ok(Outcome::Duplicate);
        }

        let lock_key = command.lock_key();
        let _local = inner.locks.lock(&lock_key).await;
        let lease = self.acquire(&lock_key).await?;
        let work = self.guarded(envelope, key, command);
        let result = match &lease {
            Some(lease) => renewing(&inner.dedup, lease, inner.guards.lease_ttl, work).await,
            None => work.await,
        };
        if let Some(lease) = &lease {
            let _ = inner.dedup.release_lease(lease).await;
        }
        result
    }

    /// The company's lease, waiting while another process holds it: at most one lease TTL,
    /// which is also the longest a dead holder's lease outlives it (leases are renewed while
    /// held, see [`renewing`]). So a SIGKILLed writer delays its companies by about one TTL and
    /// sends nothing up the retry ladder. `None` when Redis does not answer: the target's unique
    /// keys hold without it.
    async fn acquire(&self, lock_key: &str) -> Result<Option<shared::dedup::Lease>, HandlerError> {
        let inner = &self.inner;
        let ttl = inner.guards.lease_ttl;
        let deadline = tokio::time::Instant::now() + ttl + LEASE_POLL;
        let mut waited = false;
        loop {
            match inner
                .dedup
                .acquire_lease(lock_key, &inner.worker_id, ttl)
                .await
            {
                Ok(LeaseResult::Acquired(lease)) => return Ok(Some(lease)),
                Ok(LeaseResult::Busy { holder }) => {
                    if !waited {
                        metrics::skipped("busy");
                        tracing::info!(
                            lock_key,
                            holder = holder.as_deref().unwrap_or("unknown"),
                            "another erp-writer holds this company; waiting for its lease"
                        );
                        waited = true;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(HandlerError::transient(format!(
                            "another erp-writer ({}) has held {lock_key} for longer than its lease \
                             ({}); retrying later",
                            holder.as_deref().unwrap_or("unknown"),
                            format_args!("{ttl:?}")
                        )));
                    }
                    tokio::time::sleep(LEASE_POLL).await;
                }
                // Redis away (or a caller bug we cannot fix here): the target's unique keys hold.
                Ok(LeaseResult::Unavailable) | Err(_) => return Ok(None),
            }
        }
    }

    /// Under the lock: re-check the marker, apply, publish, mark done.
    async fn guarded(
        &self,
        envelope: &Envelope,
        key: &str,
        command: Command,
    ) -> Result<Outcome, HandlerError> {
        let inner = &self.inner;
        if inner.dedup.done(key).await.ok().flatten().is_some() {
            metrics::skipped("done");
            return Ok(Outcome::Duplicate);
        }
        let site = &inner.site;
        let applied = match &command {
            Command::SyncDeal(c) => apply_sync_deal(site, c).await.map(Applied::Outcomes),
            Command::UpdateCustomer(c) => apply_update_customer(site, c).await,
            Command::UpdateContact(c) => apply_update_contact(site, c).await,
        };
        match applied {
            Ok(Applied::Outcomes(outcomes)) => {
                self.publish(envelope, &outcomes).await?;
                let summary = summarise(&outcomes);
                let _ = inner
                    .dedup
                    .mark_done(key, &summary, inner.guards.done_ttl)
                    .await;
                tracing::info!(idempotency_key = key, %summary, "command applied");
                Ok(Outcome::Done)
            }
            Ok(Applied::NothingToDo(reason)) => {
                let _ = inner
                    .dedup
                    .mark_done(key, "nothing to do", inner.guards.done_ttl)
                    .await;
                Ok(Outcome::Ignored { reason })
            }
            Err(StepFailure { applied, error }) => {
                // What was applied is real; report it even though the command failed.
                if !applied.is_empty()
                    && let Err(e) = self.publish(envelope, &applied).await
                {
                    tracing::warn!(error = %e.message, "could not publish the outcomes of the applied steps");
                }
                let handler_error = error.to_handler_error();
                if handler_error.is_transient() {
                    tracing::warn!(idempotency_key = key, error = %handler_error.message, "command failed; will retry");
                } else {
                    tracing::error!(idempotency_key = key, error = %handler_error.message, "command rejected");
                }
                Err(handler_error)
            }
        }
    }

    /// Publish every outcome to `l2l.events` and wait for all confirms.
    async fn publish(
        &self,
        parent: &Envelope,
        outcomes: &[ErpOutcome],
    ) -> Result<(), HandlerError> {
        let broker = &self.inner.broker;
        let exchange = broker.names().exchange(Exchange::Events);
        let messages = outcomes
            .iter()
            .map(|o| {
                let envelope = parent.derive(
                    Kind::ErpOutcome,
                    outcome_key(&parent.idempotency_key, o),
                    Source::ErpWriter,
                    o,
                );
                Outgoing::envelope(exchange.clone(), o.routing_key(), &envelope, 0)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HandlerError::permanent(format!("cannot encode an outcome: {e}")))?;
        broker.publish_all(&messages).await.map_err(|e| {
            if e.is_transient() {
                HandlerError::transient(format!("publishing outcomes: {e}"))
            } else {
                HandlerError::permanent(format!("publishing outcomes: {e}"))
            }
        })
    }
}

impl Handler for ErpWriterHandler {
    fn handle(
        &self,
        msg: Incoming,
    ) -> impl std::future::Future<Output = Result<Outcome, HandlerError>> + Send {
        self.handle_message(msg)
    }

    /// A deal whose command is parked must say so on HubSpot at once (not after an operator
    /// looks at the DLQ): publish `sync_failed`, which the mapper turns into sync status
    /// `error` with the reason. Best effort: the dead letter is what keeps the command.
    async fn dead_lettered(&self, msg: &Incoming, kind: DeadLetterKind, reason: &str) {
        let Ok(Command::SyncDeal(cmd)) = Command::decode(&msg.envelope) else {
            return;
        };
        let failed = ErpOutcome::SyncFailed {
            hubspot_deal_id: cmd.hubspot_deal_id.clone(),
            reason: format!("ERPNext sync failed ({kind}): {reason}"),
        };
        if let Err(e) = self.publish(&msg.envelope, &[failed]).await {
            tracing::warn!(deal = %cmd.hubspot_deal_id, error = %e.message, "could not report the failure to the mapper");
        }
    }
}

/// Stable per command and record, so a re-published outcome is recognised as the same event.
pub fn outcome_key(command_key: &str, outcome: &ErpOutcome) -> String {
    let target = match outcome {
        ErpOutcome::CustomerUpserted {
            hubspot_company_id, ..
        }
        | ErpOutcome::AddressUpserted {
            hubspot_company_id, ..
        } => hubspot_company_id,
        ErpOutcome::ContactUpserted {
            hubspot_contact_id, ..
        } => hubspot_contact_id,
        ErpOutcome::SalesOrderUpserted {
            hubspot_deal_id, ..
        }
        | ErpOutcome::SalesOrderConflict {
            hubspot_deal_id, ..
        }
        | ErpOutcome::SyncFailed {
            hubspot_deal_id, ..
        } => hubspot_deal_id,
    };
    format!("{}:{target}:{command_key}", outcome.routing_key())
}

/// The done marker's value: which documents the command came to (operators read it in Redis).
fn summarise(outcomes: &[ErpOutcome]) -> String {
    outcomes
        .iter()
        .map(|o| match o {
            ErpOutcome::CustomerUpserted { customer, .. } => format!("Customer {customer}"),
            ErpOutcome::AddressUpserted { address, .. } => format!("Address {address}"),
            ErpOutcome::ContactUpserted { contact, .. } => format!("Contact {contact}"),
            ErpOutcome::SalesOrderUpserted {
                sales_order,
                status,
                ..
            } => format!("Sales Order {sales_order} ({status})"),
            ErpOutcome::SalesOrderConflict { sales_order, .. } => {
                format!("Sales Order {sales_order} (conflict)")
            }
            ErpOutcome::SyncFailed { reason, .. } => format!("failed: {reason}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_keys_differ_per_record_and_are_stable() {
        let a = ErpOutcome::ContactUpserted {
            hubspot_contact_id: "1".into(),
            contact: "A".into(),
            created: true,
        };
        let b = ErpOutcome::ContactUpserted {
            hubspot_contact_id: "2".into(),
            contact: "B".into(),
            created: true,
        };
        assert_ne!(outcome_key("k", &a), outcome_key("k", &b));
        assert_eq!(outcome_key("k", &a), "outcome.erp.contact_upserted:1:k");
        assert_eq!(summarise(&[a, b]), "Contact A, Contact B");
    }
}
