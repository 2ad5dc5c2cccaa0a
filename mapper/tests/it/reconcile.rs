//! `mapper reconcile [--fix]` against both simulators: won deals without a Sales Order are
//! reported, and with `--fix` enqueued so the running mapper syncs them.

use std::collections::{BTreeMap, BTreeSet};

use l2l_tests::sim::hubspot::ObjectType;
use serde_json::json;
use shared::commands::SyncDeal;

use crate::support::{TestEnv, seed_won_deal};

#[tokio::test]
async fn reconcile_reports_and_enqueues_won_deals_without_sales_orders() {
    let env = TestEnv::start().await;
    let a = seed_won_deal(&env.hubspot, "Has order", 1, 1, true, &BTreeMap::new());
    let b = seed_won_deal(&env.hubspot, "Lost webhook B", 1, 1, true, &BTreeMap::new());
    let c = seed_won_deal(&env.hubspot, "Lost webhook C", 1, 1, true, &BTreeMap::new());
    let lost = seed_won_deal(&env.hubspot, "Not won", 1, 1, true, &BTreeMap::new());
    env.hubspot
        .update_as_user(
            ObjectType::Deals,
            &lost["deal"],
            &[("dealstage", "closedlost")],
        )
        .expect("update");
    crate::support::seed_globex(&env.erpnext, &a["company"]);
    for (deal, docstatus) in [(a["deal"].as_str(), 1), (lost["deal"].as_str(), 0)] {
        env.erpnext
            .seed(
                "Sales Order",
                json!({"customer": "Globex Corporation", "company": "Acme Test Ltd", "transaction_date": "2026-11-24",
                       "delivery_date": "2026-12-15", "currency": "USD", "hubspot_deal_id": deal, "docstatus": docstatus,
                       "items": [{"item_code": "SKU-WIDGET", "qty": 1, "rate": 25}]}),
            )
            .expect("sales order");
    }

    let report = mapper::run_reconcile(&env.settings, false)
        .await
        .expect("reconcile");
    let missing: BTreeSet<String> = report.missing.iter().map(|d| d.id.clone()).collect();
    assert_eq!(
        missing,
        BTreeSet::from([b["deal"].clone(), c["deal"].clone()])
    );
    assert_eq!(report.won_deals, 3);
    assert_eq!(
        report.not_won,
        [("SAL-ORD-2026-00002".to_string(), lost["deal"].clone())]
    );
    assert_eq!(report.enqueued, 0);
    let (erp, _) = env.settle().await;
    assert!(erp.is_empty(), "a report changes nothing");

    let report = mapper::run_reconcile(&env.settings, true)
        .await
        .expect("reconcile --fix");
    assert_eq!(report.enqueued, 2);
    let (erp, _) = env.settle().await;
    let synced: BTreeSet<String> = erp
        .iter()
        .map(|t| {
            t.envelope
                .decode_payload::<SyncDeal>()
                .expect("payload")
                .hubspot_deal_id
        })
        .collect();
    assert_eq!(synced, missing);
    assert!(
        erp.iter()
            .all(|t| Some(&t.envelope.correlation_id) == report.correlation_id.as_ref())
    );
    env.finish().await;
}
