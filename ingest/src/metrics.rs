//! Metric names and labels of ingest, in one place.

pub const WEBHOOKS: &str = "l2l_webhooks_received_total";
pub const EVENTS_PUBLISHED: &str = "l2l_events_published_total";
pub const REQUEST_SECONDS: &str = "l2l_ingest_request_seconds";
pub const REJECTED: &str = "l2l_webhooks_rejected_total";

/// Count one webhook request by source and result (`accepted`, or the error code).
pub fn webhook(source: &'static str, result: &'static str) {
    metrics::counter!(WEBHOOKS, "source" => source, "result" => result).increment(1);
}

/// Count one refused delivery by source and reason (`bad_signature`, `stale_timestamp`, …).
pub fn rejected(source: &'static str, reason: &'static str) {
    metrics::counter!(REJECTED, "source" => source, "reason" => reason).increment(1);
}

pub fn published(source: &'static str, routing_key: &str, n: u64) {
    metrics::counter!(EVENTS_PUBLISHED, "source" => source, "type" => routing_key.to_string())
        .increment(n);
}

pub fn latency(source: &'static str, seconds: f64) {
    metrics::histogram!(REQUEST_SECONDS, "source" => source).record(seconds);
}
