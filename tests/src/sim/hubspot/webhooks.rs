//! Webhook delivery as HubSpot does it: changes to subscribed properties (and creations) become
//! events with unique, increasing `eventId`s; events close together are batched (up to
//! `batch_max` per request, the first waits `flush_ms`); each batch is POSTed as a JSON array
//! signed with `X-HubSpot-Signature-v3` (and v1), and retried with doubling backoff on a non-2xx
//! answer or a connection error, `attemptNumber` counting up, at most `max_attempts` times.
//! With `duplicate` every batch is delivered twice, independently.
//!
//! Every attempt is logged ([`Delivery`]) so tests can assert retries and signatures, and a
//! pending count tells when the outbox is drained.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use serde::Serialize;
use shared::events::HubSpotEvent;
use shared::signature::{hubspot_v1_sign, hubspot_v3_sign, hubspot_v3_uri};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::WebhookConfig;
use super::model::{ObjectType, iso};
use super::portal::Portal;
use super::state::Change;

/// Who made a change: HubSpot's `changeSource` (and `sourceId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeSource {
    /// Through the API with an app's token.
    Api,
    /// A user in the HubSpot UI (the admin API stands in for them).
    CrmUi,
    /// A bulk import (admin seeds).
    Import,
}

/// One delivery attempt of one batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// Batch number, from 1.
    pub batch: u64,
    /// 0, or 1 for the duplicate of a batch.
    pub copy: u8,
    /// The `attemptNumber` sent.
    pub attempt: u32,
    pub event_ids: Vec<u64>,
    /// HTTP status of the answer; `None` when the request failed (connection, timeout) or no
    /// target was configured.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at: String,
}

/// The outbox: configuration, queue, logs.
#[derive(Debug)]
pub struct Webhooks {
    config: RwLock<WebhookConfig>,
    tx: mpsc::UnboundedSender<HubSpotEvent>,
    next_event_id: AtomicU64,
    /// Event deliveries not yet finished (queued, in flight or between retries), per copy.
    pending: AtomicUsize,
    emitted: Mutex<Vec<HubSpotEvent>>,
    log: Mutex<Vec<Delivery>>,
    client: reqwest::Client,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Subscription ids of the simulated app (stable, as HubSpot's are per subscription).
/// The kind of event a subscription delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Creation,
    PropertyChange,
    Deletion,
    Merge,
    Restore,
    AssociationChange,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Creation => "creation",
            Kind::PropertyChange => "propertyChange",
            Kind::Deletion => "deletion",
            Kind::Merge => "merge",
            Kind::Restore => "restore",
            Kind::AssociationChange => "associationChange",
        }
    }
}

fn subscription_id(ty: ObjectType, kind: Kind) -> u64 {
    let creation = match kind {
        Kind::Creation => true,
        Kind::PropertyChange => false,
        Kind::Deletion => return 2_881_800 + ty as u64,
        Kind::Merge => return 2_881_810 + ty as u64,
        Kind::Restore => return 2_881_820 + ty as u64,
        Kind::AssociationChange => return 2_881_830 + ty as u64,
    };
    match (ty, creation) {
        (ObjectType::Deals, false) => 2_881_778,
        (ObjectType::Companies, false) => 2_881_779,
        (ObjectType::Deals, true) => 2_881_780,
        (ObjectType::Contacts, true) => 2_881_781,
        (ObjectType::Companies, true) => 2_881_782,
        (ObjectType::Contacts, false) => 2_881_783,
        (_, false) => 2_881_790,
        (_, true) => 2_881_791,
    }
}

impl Webhooks {
    /// The outbox and the receiver its dispatcher ([`run`]) drains.
    pub fn new(config: WebhookConfig) -> (Self, mpsc::UnboundedReceiver<HubSpotEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        // Event ids unique across restarts too (a consumer's dedup keys outlive one simulator
        // run): epoch ms × 1000, still below 2^53 so JavaScript receivers read them exactly.
        let base = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0) * 1_000;
        let me = Self {
            config: RwLock::new(config),
            tx,
            next_event_id: AtomicU64::new(base),
            pending: AtomicUsize::new(0),
            emitted: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            client: reqwest::Client::new(),
        };
        (me, rx)
    }

    pub fn config(&self) -> WebhookConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update(
        &self,
        f: impl FnOnce(&mut WebhookConfig) -> Result<(), super::config::ConfigError>,
    ) -> Result<(), super::config::ConfigError> {
        let mut cfg = self.config.write().unwrap_or_else(|e| e.into_inner());
        let mut next = cfg.clone();
        f(&mut next)?;
        *cfg = next;
        Ok(())
    }

    /// Turn changes into events for the subscribed ones and queue them.
    pub fn emit(&self, changes: Vec<Change>, source: ChangeSource) {
        let cfg = self.config();
        let (change_source, source_id) = match source {
            ChangeSource::Api => ("API", Some(cfg.app_id.to_string())),
            ChangeSource::CrmUi => ("CRM_UI", Some("userId:3349201".to_string())),
            ChangeSource::Import => ("IMPORT", None),
        };
        for change in changes {
            let mut association = None;
            let (ty, id, at_ms, kind, property, merge) = match change {
                Change::Created { ty, id, at_ms } => (ty, id, at_ms, Kind::Creation, None, None),
                Change::PropertyChanged {
                    ty,
                    id,
                    name,
                    value,
                    at_ms,
                } => (
                    ty,
                    id,
                    at_ms,
                    Kind::PropertyChange,
                    Some((name, value)),
                    None,
                ),
                Change::Deleted { ty, id, at_ms } => (ty, id, at_ms, Kind::Deletion, None, None),
                Change::Merged {
                    ty,
                    primary,
                    merged,
                    at_ms,
                } => (ty, primary, at_ms, Kind::Merge, None, Some(merged)),
                Change::Restored { ty, id, at_ms } => (ty, id, at_ms, Kind::Restore, None, None),
                Change::Associated {
                    from,
                    to,
                    removed,
                    at_ms,
                } => {
                    association = Some((to, removed));
                    (from.0, from.1, at_ms, Kind::AssociationChange, None, None)
                }
            };
            let subscribed = match (kind, &property, ty) {
                (Kind::Deletion | Kind::Restore, _, _) => cfg.deletions,
                (Kind::Merge, _, _) => cfg.merges,
                (Kind::AssociationChange, _, _) => cfg.association_changes,
                (_, None, ObjectType::Deals) => cfg.deal_creation,
                (_, None, ObjectType::Companies) => cfg.company_creation,
                (_, None, ObjectType::Contacts) => cfg.contact_creation,
                (_, Some((n, _)), ObjectType::Deals) => cfg.deal_properties.contains(n),
                (_, Some((n, _)), ObjectType::Companies) => cfg.company_properties.contains(n),
                (_, Some((n, _)), ObjectType::Contacts) => cfg.contact_properties.contains(n),
                (_, Some((n, _)), ObjectType::LineItems) => cfg.line_item_properties.contains(n),
                _ => false,
            };
            if !subscribed {
                continue;
            }
            let (property_name, property_value) = property.unzip();
            let mut extra = serde_json::Map::new();
            // Line items have only HubSpot's generic subscriptions: `object.<event>`, the object
            // named by its type ID.
            let generic = ty == ObjectType::LineItems;
            if generic {
                extra.insert("objectTypeId".into(), serde_json::json!("0-8"));
            }
            // HubSpot's merge body: the surviving record, every record merged (it included),
            // and how many properties moved.
            // HubSpot's association change body: both ends, the type, and whether it was removed.
            let (mut object_id, mut from_object_id, mut to_object_id) = (Some(id), None, None);
            if let Some(((to_ty, to_id), removed)) = association {
                object_id = None;
                from_object_id = Some(id);
                to_object_id = Some(to_id);
                extra.insert(
                    "associationType".into(),
                    serde_json::json!(format!(
                        "{}_TO_{}",
                        ty.upper().trim_end_matches('S'),
                        to_ty.upper().trim_end_matches('S')
                    )),
                );
                extra.insert("associationRemoved".into(), serde_json::json!(removed));
                extra.insert("isPrimaryAssociation".into(), serde_json::json!(false));
            }
            let merged_object_ids = match &merge {
                Some(merged) => {
                    extra.insert("newObjectId".into(), serde_json::json!(id));
                    extra.insert("numberOfPropertiesMoved".into(), serde_json::json!(0));
                    merged.iter().copied().chain([id]).collect()
                }
                None => Vec::new(),
            };
            let event = HubSpotEvent {
                event_id: if cfg.repeat_event_ids {
                    self.next_event_id.load(Ordering::SeqCst)
                } else {
                    self.next_event_id.fetch_add(1, Ordering::SeqCst)
                },
                subscription_id: subscription_id(ty, kind),
                portal_id: cfg.portal_id,
                app_id: Some(cfg.app_id),
                occurred_at: at_ms,
                subscription_type: format!(
                    "{}.{}",
                    if generic { "object" } else { ty.singular() },
                    kind.name()
                ),
                attempt_number: 0,
                object_id,
                property_name,
                property_value,
                change_source: Some(change_source.to_string()),
                change_flag: match kind {
                    Kind::Creation => Some("CREATED".to_string()),
                    Kind::Deletion => Some("DELETED".to_string()),
                    Kind::Merge => Some("MERGED".to_string()),
                    Kind::Restore => Some("RESTORED".to_string()),
                    Kind::PropertyChange | Kind::AssociationChange => None,
                },
                source_id: source_id.clone(),
                primary_object_id: merge.is_some().then_some(id),
                merged_object_ids,
                from_object_id,
                to_object_id,
                extra,
            };
            lock(&self.emitted).push(event.clone());
            self.pending.fetch_add(1, Ordering::SeqCst);
            if self.tx.send(event).is_err() {
                // The dispatcher is gone (shutdown): nothing will deliver it.
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Every event emitted since start (or the last reset), in order.
    pub fn emitted(&self) -> Vec<HubSpotEvent> {
        lock(&self.emitted).clone()
    }

    /// Every delivery attempt since start (or the last reset).
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.log).clone()
    }

    /// Event deliveries not finished yet (succeeded or given up).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    pub fn clear_log(&self) {
        lock(&self.emitted).clear();
        lock(&self.log).clear();
    }

    fn record(&self, d: Delivery) {
        lock(&self.log).push(d);
    }
}

/// The dispatcher: batch queued events and hand each batch to a delivery task. Ends on cancel.
pub async fn run(
    portal: Arc<Portal>,
    mut rx: mpsc::UnboundedReceiver<HubSpotEvent>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(
        portal.webhooks.config().max_concurrent.max(1),
    ));
    let mut batch_no = 0;
    loop {
        let first = tokio::select! {
            () = cancel.cancelled() => break,
            e = rx.recv() => match e { Some(e) => e, None => break },
        };
        let cfg = portal.webhooks.config();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.flush_ms);
        let mut batch = vec![first];
        while batch.len() < cfg.batch_max.max(1) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                _ => break,
            }
        }
        batch_no += 1;
        let copies: u8 = if cfg.duplicate { 2 } else { 1 };
        if copies == 2 {
            portal
                .webhooks
                .pending
                .fetch_add(batch.len(), Ordering::SeqCst);
        }
        for copy in 0..copies {
            let job = Job {
                portal: portal.clone(),
                batch: batch_no,
                copy,
                events: batch.clone(),
                limit: limit.clone(),
                cancel: cancel.clone(),
            };
            tracker.spawn(job.deliver());
        }
    }
}

struct Job {
    portal: Arc<Portal>,
    batch: u64,
    copy: u8,
    events: Vec<HubSpotEvent>,
    limit: Arc<Semaphore>,
    cancel: CancellationToken,
}

impl Job {
    async fn deliver(mut self) {
        let portal = self.portal.clone();
        let w = &portal.webhooks;
        let cancel = self.cancel.clone();
        for attempt in 0.. {
            let cfg = w.config();
            let outcome = tokio::select! {
                () = cancel.cancelled() => return,
                o = self.attempt(w, &cfg, attempt) => o,
            };
            if outcome || attempt + 1 >= cfg.max_attempts.max(1) {
                break;
            }
            let exp = cfg.retry_initial_ms.saturating_mul(1u64 << attempt.min(20));
            let pause = Duration::from_millis(exp.min(cfg.retry_max_ms));
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
        w.pending.fetch_sub(self.events.len(), Ordering::SeqCst);
    }

    /// One attempt; `true` when the target answered 2xx (or there is no target: nothing to retry).
    async fn attempt(&mut self, w: &Webhooks, cfg: &WebhookConfig, attempt: u32) -> bool {
        for e in &mut self.events {
            e.attempt_number = attempt;
        }
        let mut record = Delivery {
            batch: self.batch,
            copy: self.copy,
            attempt,
            event_ids: self.events.iter().map(|e| e.event_id).collect(),
            status: None,
            error: None,
            at: iso(chrono::Utc::now()),
        };
        let Some(target) = cfg.target_url.clone() else {
            record.error = Some("no target_url configured; dropped".into());
            w.record(record);
            return true;
        };
        let body = match serde_json::to_vec(&self.events) {
            Ok(b) => b,
            Err(e) => {
                record.error = Some(format!("encode: {e}"));
                w.record(record);
                return true;
            }
        };
        let Ok(_permit) = self.limit.clone().acquire_owned().await else {
            return true;
        };
        let timestamp = chrono::Utc::now().timestamp_millis().to_string();
        let v3 = hubspot_v3_sign(
            &cfg.client_secret,
            "POST",
            &hubspot_v3_uri(target.as_str()),
            &body,
            &timestamp,
        );
        let v1 = hubspot_v1_sign(&cfg.client_secret, &body);
        let sent = w
            .client
            .post(target)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                "HubSpot Connect 2.0 (http://dev.hubspot.com/) (lead2ledger simulator)",
            )
            .header("x-hubspot-signature-v3", v3)
            .header("x-hubspot-request-timestamp", timestamp)
            .header("x-hubspot-signature", v1)
            .header("x-hubspot-signature-version", "v1")
            .header("x-hubspot-timeout-millis", cfg.timeout_ms.to_string())
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .body(body)
            .send()
            .await;
        let ok = match sent {
            Ok(resp) => {
                record.status = Some(resp.status().as_u16());
                resp.status().is_success()
            }
            Err(e) => {
                record.error = Some(e.to_string());
                false
            }
        };
        w.record(record);
        ok
    }
}
