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

pub fn deal_read_calls(calls: u32) {
    metrics::histogram!(DEAL_READ_CALLS).record(f64::from(calls));
}
