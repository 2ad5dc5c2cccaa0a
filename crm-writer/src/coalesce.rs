//! Coalescing and batching of HubSpot writes (DESIGN §6): many `crm.*` commands, few API calls.
//!
//! # How a message becomes part of a batch
//! The handler does not call HubSpot. It [`Batcher::submit`]s its update to the batcher of its
//! object type and awaits a oneshot answer; the runtime acks the message only when that answer
//! is `Ok`, i.e. after the HubSpot write that carried it succeeded. A message is therefore never
//! acked early, and a batch that fails fails exactly the messages inside it.
//!
//! The batcher task keeps one pending [`Entry`] per object. Updates for the same object merge
//! into one input, newest `source_modified` winning per property; entries for different objects
//! are flushed together as one `batch/update` of at most `max_batch` objects when
//! - `max_batch` objects are waiting, or
//! - the oldest waiting update has waited `window` (default 200 ms),
//!
//! with at most `parallel` flushes in flight per object type. While every flush slot is busy
//! (e.g. waiting for the rate budget), updates keep accumulating, so batches grow exactly when
//! the budget is tight. An object being written is not flushed again until that write finished:
//! one process never has two writes of one object racing each other.
//!
//! # Prefetch and concurrency
//! Each waiting message holds a prefetch slot and a concurrency permit of the consumer runtime.
//! A batch of 100 objects can only form if at least 100 messages are in flight, so crm-writer
//! runs with `crm_writer.in_flight` (default 200, i.e. two full batches: one being written while
//! the next fills) as both prefetch and concurrency, instead of `worker.*`.
//!
//! # A flush
//! 1. [`OrderingGuard::prepare`]: leases, and properties older than what is applied are dropped.
//!    Objects leased by another replica go back to pending and are retried after `window`; after
//!    waiting longer than the lease TTL their messages fail as transient.
//! 2. [`apply::write`]: the HubSpot calls and one result per object.
//! 3. [`OrderingGuard::commit`], then every waiter gets its answer: [`Applied::Written`] if at
//!    least one of its properties was written with its value, [`Applied::Superseded`] if newer
//!    updates replaced all of them, or the object's error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::hubspot::types::BatchUpdateInput;
use shared::hubspot::{HubSpotClient, ObjectType};
use shared::runtime::HandlerError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::apply;
use crate::metrics;
use crate::ordering::{OrderingGuard, Stamped, Verdict};
use crate::versions::SourceVersions;

/// How batches form.
#[derive(Debug, Clone)]
pub struct CoalesceConfig {
    pub window: Duration,
    /// Objects per HubSpot call, 1..=100.
    pub max_batch: usize,
    /// HubSpot calls in flight at once for this object type.
    pub parallel: usize,
}

/// What happened to one submitted update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// At least one of its properties was written to HubSpot with its value.
    Written,
    /// Every property was older than a value written or being written; nothing of it was sent.
    Superseded(String),
}

/// The handle the handler submits to; the task behind it owns all pending state.
#[derive(Debug, Clone)]
pub struct Batcher {
    object_type: ObjectType,
    tx: mpsc::UnboundedSender<Submission>,
}

#[derive(Debug)]
struct Submission {
    object_id: String,
    properties: BTreeMap<String, String>,
    at: DateTime<Utc>,
    reply: oneshot::Sender<Result<Applied, HandlerError>>,
}

/// One message waiting for the write of its object.
#[derive(Debug)]
struct Waiter {
    properties: BTreeMap<String, String>,
    at: DateTime<Utc>,
    reply: oneshot::Sender<Result<Applied, HandlerError>>,
}

/// The pending updates of one object.
#[derive(Debug)]
struct Entry {
    object_id: String,
    /// In arrival order; the merged input is derived from them ([`Entry::merged`]).
    waiters: Vec<Waiter>,
    /// When the oldest waiter arrived: the window runs from here.
    since: Instant,
    /// Not before this instant (set after the object's lease was busy).
    not_before: Option<Instant>,
    /// When its lease was first found busy.
    busy_since: Option<Instant>,
}

impl Entry {
    fn new(object_id: String, now: Instant) -> Self {
        Self {
            object_id,
            waiters: Vec::new(),
            since: now,
            not_before: None,
            busy_since: None,
        }
    }

    /// One input: per property the value with the newest `source_modified`; on a tie the later
    /// arrival wins.
    fn merged(&self) -> BTreeMap<String, Stamped> {
        let mut out: BTreeMap<String, Stamped> = BTreeMap::new();
        for w in &self.waiters {
            for (name, value) in &w.properties {
                if out.get(name).is_some_and(|s| s.at > w.at) {
                    continue;
                }
                out.insert(
                    name.clone(),
                    Stamped {
                        value: value.clone(),
                        at: w.at,
                    },
                );
            }
        }
        out
    }

    /// Put `newer`'s waiters after ours (a postponed entry meeting updates that arrived since).
    fn absorb(&mut self, newer: Entry) {
        self.since = self.since.min(newer.since);
        self.waiters.extend(newer.waiters);
    }

    fn ready_at(&self, window: Duration) -> Instant {
        let by_window = self.since + window;
        match self.not_before {
            Some(t) => t.max(by_window),
            None => by_window,
        }
    }
}

impl Waiter {
    /// Whether the write of `written` carried at least one of this waiter's values.
    fn outcome(&self, written: &BTreeMap<String, Stamped>) -> Applied {
        let carried = self.properties.iter().any(|(name, value)| {
            written
                .get(name)
                .is_some_and(|s| s.at == self.at && &s.value == value)
        });
        if carried {
            Applied::Written
        } else {
            Applied::Superseded(format!(
                "every property is older than a value already applied (this update's source_modified is {})",
                self.at.to_rfc3339()
            ))
        }
    }
}

/// What a finished flush hands back to the batcher task.
struct Returned {
    /// Every object of the batch: no longer in flight.
    finished: Vec<String>,
    /// Objects whose lease was busy: pending again.
    postponed: Vec<Entry>,
}

/// Shared by the flushes of one batcher.
struct FlushCtx {
    object_type: ObjectType,
    client: HubSpotClient,
    guard: Option<Arc<OrderingGuard>>,
    versions: SourceVersions,
    window: Duration,
}

impl Batcher {
    /// Start the batcher task of one object type. It ends once every handle is dropped and all
    /// pending updates are written; await the returned handle to drain.
    pub fn start(
        object_type: ObjectType,
        cfg: CoalesceConfig,
        client: HubSpotClient,
        guard: Option<Arc<OrderingGuard>>,
        versions: SourceVersions,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(FlushCtx {
            object_type,
            client,
            guard,
            versions,
            window: cfg.window,
        });
        let task = tokio::spawn(run(ctx, cfg, rx));
        (Self { object_type, tx }, task)
    }

    pub fn object_type(&self) -> ObjectType {
        self.object_type
    }

    /// Queue an update and wait until the HubSpot write carrying it is done.
    pub async fn submit(
        &self,
        object_id: String,
        properties: BTreeMap<String, String>,
        at: DateTime<Utc>,
    ) -> Result<Applied, HandlerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Submission {
                object_id,
                properties,
                at,
                reply,
            })
            .map_err(|_| HandlerError::transient("crm-writer is stopping: its batcher is gone"))?;
        answer.await.map_err(|_| {
            HandlerError::transient("the batch carrying this update was lost (its flush failed)")
        })?
    }
}

/// The batcher task.
async fn run(ctx: Arc<FlushCtx>, cfg: CoalesceConfig, mut rx: mpsc::UnboundedReceiver<Submission>) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Returned>();
    let mut pending: HashMap<String, Entry> = HashMap::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut flushing = 0usize;
    let mut closed = false;
    let parallel = cfg.parallel.max(1);
    loop {
        if closed && pending.is_empty() && flushing == 0 {
            break;
        }
        let now = Instant::now();
        while flushing < parallel {
            let Some(batch) = take_ready(&mut pending, &in_flight, &cfg, now, closed) else {
                break;
            };
            flushing += 1;
            let ids: Vec<String> = batch.iter().map(|e| e.object_id.clone()).collect();
            in_flight.extend(ids.iter().cloned());
            let flush = tokio::spawn(flush(ctx.clone(), batch));
            let done = done_tx.clone();
            tokio::spawn(async move {
                // A panicking flush drops its waiters (their handlers retry); the objects must
                // still leave `in_flight`, or they would never be written again.
                let returned = flush.await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "a HubSpot flush failed unexpectedly");
                    Returned {
                        finished: ids,
                        postponed: Vec::new(),
                    }
                });
                let _ = done.send(returned);
            });
        }
        let wake = (flushing < parallel)
            .then(|| next_wake(&pending, &in_flight, cfg.window))
            .flatten();
        tokio::select! {
            Some(returned) = done_rx.recv() => {
                flushing = flushing.saturating_sub(1);
                for id in &returned.finished {
                    in_flight.remove(id);
                }
                for mut entry in returned.postponed {
                    if let Some(newer) = pending.remove(&entry.object_id) {
                        entry.absorb(newer);
                    }
                    pending.insert(entry.object_id.clone(), entry);
                }
            }
            sub = rx.recv(), if !closed => match sub {
                Some(sub) => {
                    let entry = pending
                        .entry(sub.object_id.clone())
                        .or_insert_with(|| Entry::new(sub.object_id.clone(), Instant::now()));
                    entry.waiters.push(Waiter {
                        properties: sub.properties,
                        at: sub.at,
                        reply: sub.reply,
                    });
                }
                None => closed = true,
            },
            _ = sleep_until(wake), if wake.is_some() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// The next batch, if one is due: up to `max_batch` eligible entries (not in flight, not
/// postponed), oldest first, when `max_batch` are eligible, the oldest's window has passed, or
/// the batcher is closing.
fn take_ready(
    pending: &mut HashMap<String, Entry>,
    in_flight: &HashSet<String>,
    cfg: &CoalesceConfig,
    now: Instant,
    closing: bool,
) -> Option<Vec<Entry>> {
    let mut eligible: Vec<(Instant, &String)> = pending
        .values()
        .filter(|e| !in_flight.contains(&e.object_id) && e.not_before.is_none_or(|t| t <= now))
        .map(|e| (e.since, &e.object_id))
        .collect();
    if eligible.is_empty() {
        return None;
    }
    eligible.sort();
    let due = closing
        || eligible.len() >= cfg.max_batch
        || pending
            .values()
            .filter(|e| !in_flight.contains(&e.object_id))
            .any(|e| e.ready_at(cfg.window) <= now);
    if !due {
        return None;
    }
    let ids: Vec<String> = eligible
        .into_iter()
        .take(cfg.max_batch.max(1))
        .map(|(_, id)| id.clone())
        .collect();
    Some(ids.iter().filter_map(|id| pending.remove(id)).collect())
}

/// When the earliest eligible entry becomes due.
fn next_wake(
    pending: &HashMap<String, Entry>,
    in_flight: &HashSet<String>,
    window: Duration,
) -> Option<Instant> {
    pending
        .values()
        .filter(|e| !in_flight.contains(&e.object_id))
        .map(|e| e.ready_at(window))
        .min()
}

/// Write one batch; answer every waiter whose object is settled; hand back postponed entries.
async fn flush(ctx: Arc<FlushCtx>, entries: Vec<Entry>) -> Returned {
    let ty = ctx.object_type;
    let finished: Vec<String> = entries.iter().map(|e| e.object_id.clone()).collect();
    let merged: Vec<BTreeMap<String, Stamped>> = entries.iter().map(Entry::merged).collect();
    let updates: usize = entries.iter().map(|e| e.waiters.len()).sum();
    metrics::flush(ty, updates);

    let (claim, verdicts) = match &ctx.guard {
        Some(guard) => {
            let objects: Vec<(&str, &BTreeMap<String, Stamped>)> = entries
                .iter()
                .zip(&merged)
                .map(|(e, m)| (e.object_id.as_str(), m))
                .collect();
            let (claim, verdicts) = guard.prepare(ty, &objects).await;
            (Some(claim), verdicts)
        }
        None => (
            None,
            merged
                .iter()
                .map(|m| Verdict::Write {
                    fresh: m.clone(),
                    stale: 0,
                })
                .collect(),
        ),
    };

    let mut postponed = Vec::new();
    // Entries whose lease we hold (or that run unguarded), with what to write.
    let mut settled: Vec<(Entry, BTreeMap<String, Stamped>)> = Vec::new();
    for (mut entry, verdict) in entries.into_iter().zip(verdicts) {
        match verdict {
            Verdict::Busy => {
                let now = Instant::now();
                let since = *entry.busy_since.get_or_insert(now);
                let give_up =
                    ctx.guard.as_ref().map_or(Duration::ZERO, |g| g.lease_ttl()) + ctx.window;
                if now.duration_since(since) > give_up {
                    let error = HandlerError::transient(format!(
                        "HubSpot {} {} has been locked by another crm-writer for {:?}",
                        crate::error::singular(ty),
                        entry.object_id,
                        now.duration_since(since)
                    ))
                    .with_retry_after(Duration::from_secs(1));
                    answer_all(ty, entry.waiters, &Err(error));
                } else {
                    metrics::lease_busy(ty, 1);
                    entry.not_before = Some(now + ctx.window);
                    postponed.push(entry);
                }
            }
            Verdict::Write { fresh, stale } => {
                if stale > 0 {
                    metrics::stale(ty, stale);
                }
                settled.push((entry, fresh));
            }
        }
    }

    // Values that carry their source time in HubSpot are checked against it there.
    let mut refused: HashMap<String, HandlerError> = HashMap::new();
    {
        let mut objects: Vec<(&str, &mut BTreeMap<String, Stamped>)> = settled
            .iter_mut()
            .map(|(e, fresh)| (e.object_id.as_str(), fresh))
            .collect();
        if let Err(e) = ctx.versions.check(&ctx.client, ty, &mut objects).await {
            let reason = format!("reading the source times HubSpot holds failed: {e}");
            for (id, fresh) in objects {
                if ctx.versions.guards(fresh) {
                    refused.insert(id.to_string(), HandlerError::transient(reason.clone()));
                }
            }
        }
    }

    let inputs: Vec<BatchUpdateInput> = settled
        .iter()
        .filter(|(e, fresh)| !fresh.is_empty() && !refused.contains_key(&e.object_id))
        .map(|(e, fresh)| BatchUpdateInput {
            id: e.object_id.clone(),
            properties: fresh
                .iter()
                .map(|(k, s)| (k.clone(), s.value.clone()))
                .collect(),
            id_property: None,
        })
        .collect();
    let mut results: HashMap<String, Result<(), HandlerError>> = if inputs.is_empty() {
        HashMap::new()
    } else {
        apply::write(&ctx.client, ty, inputs)
            .await
            .into_iter()
            .collect()
    };

    results.extend(refused.into_iter().map(|(id, e)| (id, Err(e))));

    if let (Some(guard), Some(claim)) = (&ctx.guard, &claim) {
        let empty = BTreeMap::new();
        let commits: Vec<(&str, &BTreeMap<String, Stamped>)> = settled
            .iter()
            .map(|(e, fresh)| {
                let written = matches!(results.get(&e.object_id), Some(Ok(())));
                (e.object_id.as_str(), if written { fresh } else { &empty })
            })
            .collect();
        guard.commit(ty, claim, &commits).await;
    }

    for (entry, fresh) in settled {
        let result = if fresh.is_empty() {
            Ok(())
        } else {
            results.remove(&entry.object_id).unwrap_or_else(|| {
                Err(HandlerError::transient(
                    "HubSpot's answer did not cover this object",
                ))
            })
        };
        match result {
            Ok(()) => {
                for w in entry.waiters {
                    let outcome = w.outcome(&fresh);
                    metrics::update(
                        ty,
                        match outcome {
                            Applied::Written => "written",
                            Applied::Superseded(_) => "superseded",
                        },
                    );
                    let _ = w.reply.send(Ok(outcome));
                }
            }
            Err(e) => answer_all(ty, entry.waiters, &Err(e)),
        }
    }
    Returned {
        finished,
        postponed,
    }
}

fn answer_all(ty: ObjectType, waiters: Vec<Waiter>, result: &Result<Applied, HandlerError>) {
    for w in waiters {
        if let Err(e) = result {
            metrics::update(
                ty,
                if e.is_transient() {
                    "transient"
                } else {
                    "permanent"
                },
            );
        }
        let _ = w.reply.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default()
    }

    fn waiter(
        props: &[(&str, &str)],
        secs: i64,
    ) -> (Waiter, oneshot::Receiver<Result<Applied, HandlerError>>) {
        let (reply, rx) = oneshot::channel();
        (
            Waiter {
                properties: props
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                at: at(secs),
                reply,
            },
            rx,
        )
    }

    fn entry(id: &str, since: Instant, waiters: Vec<Waiter>) -> Entry {
        let mut e = Entry::new(id.into(), since);
        e.waiters = waiters;
        e
    }

    #[test]
    fn merging_keeps_the_newest_value_per_property() {
        let (paid, _a) = waiter(&[("invoice_status", "paid")], 3);
        let (overdue, _b) = waiter(
            &[
                ("invoice_status", "overdue"),
                ("erpnext_sync_status", "synced"),
            ],
            2,
        );
        let (unpaid, _c) = waiter(&[("invoice_status", "unpaid")], 1);
        // Arrival order is newest first: the merge must not depend on it.
        let e = entry("1", Instant::now(), vec![paid, overdue, unpaid]);
        let m = e.merged();
        assert_eq!(m["invoice_status"].value, "paid");
        assert_eq!(m["invoice_status"].at, at(3));
        assert_eq!(m["erpnext_sync_status"].value, "synced");
        assert_eq!(e.waiters[0].outcome(&m), Applied::Written);
        assert_eq!(
            e.waiters[1].outcome(&m),
            Applied::Written,
            "its sync status was written"
        );
        assert!(matches!(e.waiters[2].outcome(&m), Applied::Superseded(_)));
    }

    #[test]
    fn equal_times_let_the_later_arrival_win() {
        let (first, _a) = waiter(&[("p", "a")], 5);
        let (second, _b) = waiter(&[("p", "b")], 5);
        let e = entry("1", Instant::now(), vec![first, second]);
        assert_eq!(e.merged()["p"].value, "b");
    }

    #[test]
    fn batches_form_by_size_window_and_skip_objects_in_flight() {
        let cfg = CoalesceConfig {
            window: Duration::from_millis(200),
            max_batch: 3,
            parallel: 1,
        };
        let t0 = Instant::now();
        let mut pending = HashMap::new();
        let mut keep = Vec::new();
        for (i, id) in ["a", "b"].iter().enumerate() {
            let (w, rx) = waiter(&[("p", "v")], 1);
            keep.push(rx);
            pending.insert(
                id.to_string(),
                entry(id, t0 + Duration::from_millis(i as u64), vec![w]),
            );
        }
        let none = HashSet::new();
        assert!(
            take_ready(&mut pending, &none, &cfg, t0, false).is_none(),
            "two of three, window still open"
        );
        assert_eq!(
            next_wake(&pending, &none, cfg.window),
            Some(t0 + cfg.window)
        );
        // The window passed: both go, oldest first.
        let batch = take_ready(&mut pending, &none, &cfg, t0 + cfg.window, false).expect("due");
        let ids: Vec<&str> = batch.iter().map(|e| e.object_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(pending.is_empty());

        // Full batch: goes at once, but an object in flight is never taken.
        for id in ["c", "d", "e", "f"] {
            let (w, rx) = waiter(&[("p", "v")], 1);
            keep.push(rx);
            pending.insert(id.to_string(), entry(id, t0, vec![w]));
        }
        let busy: HashSet<String> = ["c".to_string()].into_iter().collect();
        let batch = take_ready(&mut pending, &busy, &cfg, t0, false).expect("full");
        assert_eq!(batch.len(), 3);
        assert!(batch.iter().all(|e| e.object_id != "c"));
        assert!(pending.contains_key("c"));
        assert!(
            take_ready(
                &mut pending,
                &busy,
                &cfg,
                t0 + Duration::from_secs(1),
                false
            )
            .is_none(),
            "c stays while its object is in flight"
        );
    }

    #[test]
    fn postponed_entries_wait_for_not_before() {
        let cfg = CoalesceConfig {
            window: Duration::from_millis(10),
            max_batch: 100,
            parallel: 1,
        };
        let t0 = Instant::now();
        let (w, _rx) = waiter(&[("p", "v")], 1);
        let mut e = entry("a", t0, vec![w]);
        e.not_before = Some(t0 + Duration::from_millis(500));
        let mut pending: HashMap<String, Entry> = [("a".to_string(), e)].into_iter().collect();
        let none = HashSet::new();
        assert!(
            take_ready(
                &mut pending,
                &none,
                &cfg,
                t0 + Duration::from_millis(100),
                false
            )
            .is_none()
        );
        assert_eq!(
            next_wake(&pending, &none, cfg.window),
            Some(t0 + Duration::from_millis(500))
        );
        assert!(
            take_ready(
                &mut pending,
                &none,
                &cfg,
                t0 + Duration::from_millis(500),
                false
            )
            .is_some()
        );
    }
}
