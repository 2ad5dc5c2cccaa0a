//! Every name two processes must agree on: exchanges, queues, routing keys, AMQP header names and
//! Redis key shapes. Defined once here so a typo cannot split the pipeline in two.
//!
//! All broker and Redis names are prefixed by a namespace (default `l2l`), so tests and tenants can
//! share one broker and one Redis without seeing each other's messages.

use std::time::Duration;

/// AMQP header: how many times this message has been attempted (0 on first publish).
pub const HEADER_ATTEMPT: &str = "x-l2l-attempt";
/// AMQP header: the originating webhook's correlation ID, mirrored from the envelope.
pub const HEADER_CORRELATION_ID: &str = "x-l2l-correlation-id";
/// AMQP header: W3C trace context.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Dead-letter headers (DESIGN §3).
pub const HEADER_ERROR: &str = "x-l2l-error";
pub const HEADER_ERROR_KIND: &str = "x-l2l-error-kind";
pub const HEADER_ATTEMPTS: &str = "x-l2l-attempts";
pub const HEADER_FIRST_FAILED_AT: &str = "x-l2l-first-failed-at";
pub const HEADER_LAST_FAILED_AT: &str = "x-l2l-last-failed-at";
pub const HEADER_ROUTING_KEY: &str = "x-l2l-routing-key";
/// Set on a message republished from a retry tier, so the consumer knows its original routing key.
pub const HEADER_ORIGINAL_EXCHANGE: &str = "x-l2l-exchange";

/// The work queues of the pipeline: one per writer, two for the mapper.
///
/// The mapper has two because erp-writer's outcomes (`outcome.erp.*`, which become the deal's
/// Sales Order write-back) must not wait behind a backlog of raw webhook events: a bulk import
/// or a replay can queue thousands of those, and in one shared FIFO queue every write-back waited
/// for all of them (issue 15, item 6). Each queue has its own retry tiers and DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkQueue {
    /// Raw events: HubSpot and ERPNext webhooks.
    Mapper,
    /// erp-writer's outcomes, consumed by the mapper's second worker.
    MapperOutcomes,
    ErpWriter,
    CrmWriter,
}

impl WorkQueue {
    pub const ALL: [WorkQueue; 4] = [
        WorkQueue::Mapper,
        WorkQueue::MapperOutcomes,
        WorkQueue::ErpWriter,
        WorkQueue::CrmWriter,
    ];

    /// The queue's name without namespace: the consuming binary's name, plus `.outcomes` for
    /// the mapper's outcome queue. Also the `queue` label of the runtime's metrics.
    pub fn base_name(self) -> &'static str {
        match self {
            WorkQueue::Mapper => "mapper",
            WorkQueue::MapperOutcomes => "mapper.outcomes",
            WorkQueue::ErpWriter => "erp-writer",
            WorkQueue::CrmWriter => "crm-writer",
        }
    }

    /// The binary that consumes this queue.
    pub fn binary(self) -> &'static str {
        match self {
            WorkQueue::Mapper | WorkQueue::MapperOutcomes => "mapper",
            WorkQueue::ErpWriter => "erp-writer",
            WorkQueue::CrmWriter => "crm-writer",
        }
    }

    /// Which exchange feeds this queue, and with which binding patterns. The mapper's two
    /// queues split the events exchange: raw events (`hubspot.#`, `erpnext.#`) and outcomes
    /// (`outcome.erp.#`); a routing key neither matches is unroutable (publishes are
    /// mandatory), so a new event family fails loudly instead of vanishing.
    pub fn bindings(self) -> (Exchange, &'static [&'static str]) {
        match self {
            WorkQueue::Mapper => (Exchange::Events, &["hubspot.#", "erpnext.#"]),
            WorkQueue::MapperOutcomes => (Exchange::Events, &["outcome.erp.#"]),
            WorkQueue::ErpWriter => (Exchange::Commands, &["erp.#"]),
            WorkQueue::CrmWriter => (Exchange::Commands, &["crm.#"]),
        }
    }

    /// Bindings an older version declared and this one removes (on the same exchange as
    /// [`WorkQueue::bindings`]): the mapper's queue was bound to `#`, which would keep
    /// delivering every outcome to it as well as to [`WorkQueue::MapperOutcomes`].
    pub fn retired_bindings(self) -> &'static [&'static str] {
        match self {
            WorkQueue::Mapper => &["#"],
            WorkQueue::MapperOutcomes | WorkQueue::ErpWriter | WorkQueue::CrmWriter => &[],
        }
    }
}

/// The two topic exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// Raw webhook events and writer outcomes: `hubspot.*`, `erpnext.*`, `outcome.*`.
    Events,
    /// Commands for the writers: `erp.*`, `crm.*`.
    Commands,
}

impl Exchange {
    pub fn base_name(self) -> &'static str {
        match self {
            Exchange::Events => "events",
            Exchange::Commands => "commands",
        }
    }
}

/// Namespaced names. Cheap to clone; every component that touches the broker or Redis holds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    namespace: String,
}

impl Names {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn exchange(&self, exchange: Exchange) -> String {
        format!("{}.{}", self.namespace, exchange.base_name())
    }

    pub fn queue(&self, queue: WorkQueue) -> String {
        format!("{}.{}", self.namespace, queue.base_name())
    }

    /// `<q>.retry.<tier>`, e.g. `l2l.mapper.retry.30s`. The tier's duration is part of the name
    /// because a queue's TTL cannot change after declaration: a new duration is a new queue.
    pub fn retry_queue(&self, queue: WorkQueue, delay: Duration) -> String {
        format!("{}.retry.{}", self.queue(queue), tier_label(delay))
    }

    pub fn dead_letter_queue(&self, queue: WorkQueue) -> String {
        format!("{}.dlq", self.queue(queue))
    }

    /// Redis key for the mapper's "seen" marker (DESIGN §5).
    pub fn seen_key(&self, consumer: &str, idempotency_key: &str) -> String {
        format!("{}:seen:{consumer}:{idempotency_key}", self.namespace)
    }

    /// Redis key for a writer's lease on one idempotency key.
    pub fn lease_key(&self, idempotency_key: &str) -> String {
        format!("{}:lease:{idempotency_key}", self.namespace)
    }

    /// Redis key of the mapper's ERPNext sweep state: `watermark` (where the last sweep got to)
    /// and `lease` (which replica is sweeping).
    pub fn sweep_key(&self, what: &str) -> String {
        format!("{}:sweep:{what}", self.namespace)
    }

    /// Redis key for a writer's "done" marker.
    pub fn done_key(&self, idempotency_key: &str) -> String {
        format!("{}:done:{idempotency_key}", self.namespace)
    }

    /// Redis hash of crm-writer: property name → last applied `source_modified` (µs) of one
    /// HubSpot object, so an older fact never overwrites a newer one (DESIGN §5).
    pub fn crm_applied_key(&self, object_type: &str, object_id: &str) -> String {
        format!("{}:crm:applied:{object_type}:{object_id}", self.namespace)
    }

    /// Redis key of one rate bucket (DESIGN §6), shared by every replica for one portal.
    pub fn budget_key(&self, portal: &str, bucket: &str) -> String {
        format!("{}:budget:{portal}:{bucket}", self.namespace)
    }
}

/// Compact, stable label for a retry tier: `50ms`, `5s`, `30s`, `5m`, `30m`, `2h`.
pub fn tier_label(delay: Duration) -> String {
    let ms = delay.as_millis();
    if ms == 0 || !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if !ms.is_multiple_of(60_000) {
        format!("{}s", ms / 1000)
    } else if !ms.is_multiple_of(3_600_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}h", ms / 3_600_000)
    }
}

/// Routing keys. Raw events keep the source's own object and event names.
pub mod routing {
    pub fn hubspot_event(object: &str, event: &str) -> String {
        format!("hubspot.{object}.{event}")
    }

    /// Frappe doctypes contain spaces (`Sales Invoice`); AMQP routing keys allow them, and keeping the
    /// doctype verbatim means the key reads like the ERPNext UI.
    pub fn erpnext_event(doctype: &str, event: &str) -> String {
        format!("erpnext.{doctype}.{event}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_labels_are_compact() {
        assert_eq!(tier_label(Duration::from_secs(5)), "5s");
        assert_eq!(tier_label(Duration::from_secs(30)), "30s");
        assert_eq!(tier_label(Duration::from_secs(300)), "5m");
        assert_eq!(tier_label(Duration::from_secs(1800)), "30m");
        assert_eq!(tier_label(Duration::from_secs(7200)), "2h");
        assert_eq!(tier_label(Duration::from_millis(50)), "50ms");
        assert_eq!(tier_label(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn names_are_namespaced() {
        let n = Names::new("t1");
        assert_eq!(n.queue(WorkQueue::Mapper), "t1.mapper");
        assert_eq!(n.queue(WorkQueue::MapperOutcomes), "t1.mapper.outcomes");
        assert_eq!(
            n.dead_letter_queue(WorkQueue::MapperOutcomes),
            "t1.mapper.outcomes.dlq"
        );
        assert_eq!(
            n.retry_queue(WorkQueue::MapperOutcomes, Duration::from_secs(5)),
            "t1.mapper.outcomes.retry.5s"
        );
        assert_eq!(n.exchange(Exchange::Events), "t1.events");
        assert_eq!(
            n.retry_queue(WorkQueue::ErpWriter, Duration::from_secs(5)),
            "t1.erp-writer.retry.5s"
        );
        assert_eq!(
            n.dead_letter_queue(WorkQueue::CrmWriter),
            "t1.crm-writer.dlq"
        );
        assert_eq!(
            n.seen_key("mapper", "hubspot:1:2"),
            "t1:seen:mapper:hubspot:1:2"
        );
    }
}
