//! The mapper's own metric names and the one function per event that records them (names and
//! label sets live here only). The runtime already counts messages by outcome; these say *why*.

/// Counter, label `reason` (a fixed code such as `not_trigger_stage`): messages acked as ignored.
pub const IGNORED_TOTAL: &str = "l2l_mapper_ignored_total";
/// Counter, label `kind`: commands published (confirmed).
pub const COMMANDS_TOTAL: &str = "l2l_mapper_commands_total";
/// Counter, label `reason` (`unknown_sku`, `no_company`, …): deals or companies dead-lettered as unmappable.
pub const UNMAPPABLE_TOTAL: &str = "l2l_mapper_unmappable_total";
/// Counter, label `reason`: deals flagged `needs_review` (left the won stage, deleted, merged,
/// changed after their Sales Order was submitted).
pub const NEEDS_REVIEW_TOTAL: &str = "l2l_mapper_needs_review_total";
/// Counter: deals flagged `error` because erp-writer parked their command in its DLQ.
pub const SYNC_FAILED_TOTAL: &str = "l2l_mapper_sync_failed_total";
/// Counter, label `result` (`ok`, `error`): periodic ERPNext sweeps.
pub const SWEEPS_TOTAL: &str = "l2l_mapper_sweeps_total";
/// Counter: deal properties the sweep found different from ERPNext and corrected (each one a
/// fact a webhook did not deliver).
pub const SWEEP_REPAIRS_TOTAL: &str = "l2l_mapper_sweep_repairs_total";
/// Histogram: HubSpot calls spent reading one deal (the budget promise: ≤ 4 for a usual deal).
pub const DEAL_READ_CALLS: &str = "l2l_mapper_deal_read_hubspot_calls";

pub fn ignored(reason: &'static str) {
    metrics::counter!(IGNORED_TOTAL, "reason" => reason).increment(1);
}

pub fn command(kind: &str) {
    metrics::counter!(COMMANDS_TOTAL, "kind" => kind.to_string()).increment(1);
}

pub fn unmappable(reason: &'static str) {
    metrics::counter!(UNMAPPABLE_TOTAL, "reason" => reason).increment(1);
}

pub fn needs_review(reason: &'static str) {
    metrics::counter!(NEEDS_REVIEW_TOTAL, "reason" => reason).increment(1);
}

pub fn sync_failed() {
    metrics::counter!(SYNC_FAILED_TOTAL).increment(1);
}

pub fn deal_read_calls(calls: u32) {
    metrics::histogram!(DEAL_READ_CALLS).record(f64::from(calls));
}

pub fn sweep(result: &'static str) {
    metrics::counter!(SWEEPS_TOTAL, "result" => result).increment(1);
}

pub fn sweep_repairs(n: usize) {
    metrics::counter!(SWEEP_REPAIRS_TOTAL).increment(u64::try_from(n).unwrap_or(u64::MAX));
}
