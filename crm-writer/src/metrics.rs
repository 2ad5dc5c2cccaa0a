//! crm-writer's metric names and the few helpers that record them, in one place so dashboards
//! and code agree. HubSpot call counts and latencies are recorded by the client itself
//! (`l2l_external_requests_total{system="hubspot"}`); the consumer runtime records acks, retries
//! and dead letters. What is left here is what only crm-writer knows: how well it batches, how
//! often ordering skipped an old fact, and when Redis could not guard ordering.

use shared::hubspot::ObjectType;

/// Histogram, label `object_type`: objects per HubSpot write call (1 = a single PATCH).
pub const BATCH_OBJECTS: &str = "l2l_crm_writer_batch_objects";
/// Histogram, label `object_type`: updates (messages) merged into one flushed batch.
pub const BATCH_UPDATES: &str = "l2l_crm_writer_batch_updates";
/// Counter, labels `object_type`, `result` (`written` | `superseded` | `transient` | `permanent`):
/// per message.
pub const UPDATES: &str = "l2l_crm_writer_updates_total";
/// Counter, label `object_type`: properties left out because a newer value was already applied.
pub const STALE_PROPERTIES: &str = "l2l_crm_writer_stale_properties_total";
const SKIPPED: &str = "l2l_crm_writer_skipped_total";
const STALE_IN_HUBSPOT: &str = "l2l_crm_writer_stale_in_hubspot_total";
/// Counter, label `step` (`prepare` | `commit`): Redis did not answer; the write went ahead
/// without the ordering guard.
pub const ORDERING_UNAVAILABLE: &str = "l2l_crm_writer_ordering_unavailable_total";
/// Counter, label `object_type`: objects postponed because another writer held their lease.
pub const LEASE_BUSY: &str = "l2l_crm_writer_lease_busy_total";
/// Counter, label `object_type`: a whole `batch/update` refused with a 4xx, split in two to find
/// the inputs at fault.
pub const BISECTIONS: &str = "l2l_crm_writer_bisections_total";
/// Counter, label `object_type`: inputs a 207 reported as failed, retried alone with PATCH.
pub const ISOLATED: &str = "l2l_crm_writer_isolated_total";

/// One HubSpot write call carrying `objects` objects.
pub fn call(object_type: ObjectType, objects: usize) {
    metrics::histogram!(BATCH_OBJECTS, "object_type" => object_type.as_str())
        .record(objects as f64);
}

/// One flush of the coalescer carrying `updates` messages.
pub fn flush(object_type: ObjectType, updates: usize) {
    metrics::histogram!(BATCH_UPDATES, "object_type" => object_type.as_str())
        .record(updates as f64);
}

pub fn update(object_type: ObjectType, result: &'static str) {
    metrics::counter!(UPDATES, "object_type" => object_type.as_str(), "result" => result)
        .increment(1);
}

pub fn stale(object_type: ObjectType, properties: usize) {
    metrics::counter!(STALE_PROPERTIES, "object_type" => object_type.as_str())
        .increment(properties as u64);
}

/// Updates not written, by reason (`superseded`: every property older than a value written or
/// being written; `no_property`: nothing to write).
pub fn skipped(object_type: ObjectType, reason: &'static str) {
    metrics::counter!(SKIPPED, "object_type" => object_type.as_str(), "reason" => reason)
        .increment(1);
}

/// Properties left out because HubSpot holds a newer source time beside them (Redis did not
/// know: restarted, failed over, or expired).
pub fn stale_in_hubspot(object_type: ObjectType, properties: usize) {
    metrics::counter!(STALE_IN_HUBSPOT, "object_type" => object_type.as_str())
        .increment(properties as u64);
}

pub fn ordering_unavailable(step: &'static str) {
    metrics::counter!(ORDERING_UNAVAILABLE, "step" => step).increment(1);
}

pub fn lease_busy(object_type: ObjectType, objects: usize) {
    metrics::counter!(LEASE_BUSY, "object_type" => object_type.as_str()).increment(objects as u64);
}

pub fn bisected(object_type: ObjectType) {
    metrics::counter!(BISECTIONS, "object_type" => object_type.as_str()).increment(1);
}

pub fn isolated(object_type: ObjectType, inputs: usize) {
    metrics::counter!(ISOLATED, "object_type" => object_type.as_str()).increment(inputs as u64);
}
