//! erp-writer's own metric names (the runtime counts deliveries, the client counts HTTP calls;
//! these count what the steps did to ERPNext documents).

/// Steps applied, `{doctype, result}`; result is `created`, `updated`, `unchanged`, `stale`
/// (HubSpot's change is older than ERPNext's document), `submitted` or `conflict`.
pub const STEPS_TOTAL: &str = "l2l_erp_writer_steps_total";
/// Commands skipped because their done marker was set, or another worker held their lease,
/// `{reason}` (`done`, `busy`).
pub const SKIPPED_TOTAL: &str = "l2l_erp_writer_skipped_total";
/// Changes to a submitted Sales Order that were reported instead of applied.
pub const SALES_ORDER_CONFLICTS_TOTAL: &str = "l2l_erp_writer_sales_order_conflicts_total";

pub(crate) fn step(doctype: &'static str, result: &'static str) {
    metrics::counter!(STEPS_TOTAL, "doctype" => doctype, "result" => result).increment(1);
}

pub(crate) fn skipped(reason: &'static str) {
    metrics::counter!(SKIPPED_TOTAL, "reason" => reason).increment(1);
}

pub(crate) fn sales_order_conflict() {
    metrics::counter!(SALES_ORDER_CONFLICTS_TOTAL).increment(1);
}
