//! Names and labels of the consumer runtime's metrics, in one place (STYLE "Telemetry"), so a
//! dashboard and the code cannot drift apart. The `queue` label is the queue's base name
//! (`mapper`, `erp-writer`, `crm-writer`), not the namespaced one: a test namespace must not
//! create a new time series per run.

use std::time::Duration;

use crate::names::WorkQueue;

use super::disposition::DeadLetterKind;

/// Deliveries taken from the work queue, `{queue}`.
pub const CONSUMED_TOTAL: &str = "l2l_messages_consumed_total";
/// Deliveries acked, `{queue, outcome}`; outcome is `done`, `ignored`, `duplicate`, `retried` or
/// `dead_lettered` (the last two after their republish was confirmed).
pub const ACKED_TOTAL: &str = "l2l_messages_acked_total";
/// Messages sent to a retry tier, `{queue, tier}` (tier label such as `5s`).
pub const RETRIED_TOTAL: &str = "l2l_messages_retried_total";
/// Messages sent to the DLQ by the runtime, `{queue, kind}`.
pub const DEAD_LETTERED_TOTAL: &str = "l2l_messages_dead_lettered_total";
/// Quick in-process retries, `{queue}`.
pub const QUICK_RETRIES_TOTAL: &str = "l2l_handler_quick_retries_total";
/// Handler panics caught (each one is a redelivery towards `poison`), `{queue}`.
pub const PANICS_TOTAL: &str = "l2l_handler_panics_total";
/// Handler latency per call, `{queue, result}`; result is `ok`, `transient`, `permanent`, `panic`.
pub const HANDLER_DURATION_SECONDS: &str = "l2l_handler_duration_seconds";
/// Acks and nacks given up because their connection died or the broker did not answer in time
/// (the broker redelivers those messages), `{queue, operation}`.
pub const ABANDONED_TOTAL: &str = "l2l_broker_ops_abandoned_total";

pub(crate) fn consumed(queue: WorkQueue) {
    metrics::counter!(CONSUMED_TOTAL, "queue" => queue.base_name()).increment(1);
}

pub(crate) fn acked(queue: WorkQueue, outcome: &'static str) {
    metrics::counter!(ACKED_TOTAL, "queue" => queue.base_name(), "outcome" => outcome).increment(1);
}

pub(crate) fn retried(queue: WorkQueue, tier: String) {
    metrics::counter!(RETRIED_TOTAL, "queue" => queue.base_name(), "tier" => tier).increment(1);
}

pub(crate) fn dead_lettered(queue: WorkQueue, kind: DeadLetterKind) {
    metrics::counter!(DEAD_LETTERED_TOTAL, "queue" => queue.base_name(), "kind" => kind.as_str())
        .increment(1);
}

pub(crate) fn quick_retry(queue: WorkQueue) {
    metrics::counter!(QUICK_RETRIES_TOTAL, "queue" => queue.base_name()).increment(1);
}

pub(crate) fn panicked(queue: WorkQueue) {
    metrics::counter!(PANICS_TOTAL, "queue" => queue.base_name()).increment(1);
}

pub(crate) fn handler_latency(queue: WorkQueue, result: &'static str, elapsed: Duration) {
    metrics::histogram!(HANDLER_DURATION_SECONDS, "queue" => queue.base_name(), "result" => result)
        .record(elapsed.as_secs_f64());
}

pub(crate) fn abandoned(queue: WorkQueue, operation: &'static str) {
    metrics::counter!(ABANDONED_TOTAL, "queue" => queue.base_name(), "operation" => operation)
        .increment(1);
}
