//! Which Sales Order is a deal's, when people cancel and amend in ERPNext. erp-writer needs it to
//! decide whether to create, update or leave an order; the mapper to show the deal the order that
//! counts after a cancel or an amendment.
//!
//! Every revision carries the deal's ID in `hubspot_deal_id` (ERPNext copies it into an
//! amendment, the desk's Amend button too); only the order lead2ledger creates also carries it in
//! the unique, `no_copy` [`DEAL_KEY`], which keeps two writers from both creating one while a
//! human can still amend. The deal's order is the newest revision that is not cancelled.

use super::client::{Doc, ErpNextClient, ListQuery};
use super::error::ErpNextError;

pub const SALES_ORDER: &str = "Sales Order";

/// The unique, `no_copy` custom field holding the deal's ID on the order lead2ledger creates.
pub const DEAL_KEY: &str = "hubspot_deal_key";

/// More revisions of one order than anyone amends.
const MAX_REVISIONS: u32 = 100;

/// Where a deal's order stands in ERPNext.
#[derive(Debug, Clone)]
pub enum DealOrder {
    /// The newest revision that is not cancelled: the first order, or its latest amendment.
    Live(Doc),
    /// Every revision is cancelled; the newest one.
    Cancelled(Doc),
    Absent,
}

/// The deal's order across its revisions, with `fields` (always incl. `name` and `docstatus`).
pub async fn deal_order(
    client: &ErpNextClient,
    deal: &str,
    fields: &[&str],
) -> Result<DealOrder, ErpNextError> {
    let mut all = vec!["name", "docstatus"];
    all.extend(
        fields
            .iter()
            .copied()
            .filter(|f| !["name", "docstatus"].contains(f)),
    );
    let revisions = client
        .list(
            SALES_ORDER,
            &ListQuery::new()
                .filter("hubspot_deal_id", "=", deal)
                .fields(&all)
                .oldest_first()
                .limit(MAX_REVISIONS),
        )
        .await?;
    Ok(pick(revisions))
}

/// The live revision of `revisions` (oldest first).
pub fn pick(mut revisions: Vec<Doc>) -> DealOrder {
    match revisions.iter().rposition(|d| d.docstatus() != 2) {
        Some(i) => DealOrder::Live(revisions.swap_remove(i)),
        None => revisions
            .pop()
            .map_or(DealOrder::Absent, DealOrder::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn the_live_order_is_the_newest_revision_not_cancelled() {
        let rev = |name: &str, docstatus: i64| {
            let Value::Object(m) = json!({"name": name, "docstatus": docstatus}) else {
                unreachable!()
            };
            Doc(m)
        };
        let name = |c: DealOrder| match c {
            DealOrder::Live(d) => format!("live {}", d.name()),
            DealOrder::Cancelled(d) => format!("cancelled {}", d.name()),
            DealOrder::Absent => "absent".into(),
        };
        assert_eq!(name(pick(vec![])), "absent");
        assert_eq!(name(pick(vec![rev("SO-1", 0)])), "live SO-1");
        assert_eq!(name(pick(vec![rev("SO-1", 2)])), "cancelled SO-1");
        assert_eq!(
            name(pick(vec![
                rev("SO-1", 2),
                rev("SO-1-1", 2),
                rev("SO-1-2", 1)
            ])),
            "live SO-1-2"
        );
        assert_eq!(
            name(pick(vec![rev("SO-1", 2), rev("SO-1-1", 0)])),
            "live SO-1-1",
            "an amendment still in draft is the live order"
        );
        assert_eq!(
            name(pick(vec![rev("SO-1", 2), rev("SO-1-1", 2)])),
            "cancelled SO-1-1"
        );
    }
}
