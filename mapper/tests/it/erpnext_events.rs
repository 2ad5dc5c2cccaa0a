//! ERPNext webhooks (captured bodies) → `crm.update_deal` with the invoice status, and a new
//! Customer → `crm.update_company`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::support::{TestEnv, captured_webhook};

/// Routing key, object, properties, source time of one CRM command.
type Write = (String, String, BTreeMap<String, String>, DateTime<Utc>);

#[tokio::test]
async fn invoice_status_webhooks_update_the_deal_found_through_its_sales_order() {
    let env = TestEnv::start().await;
    crate::support::seed_globex(&env.erpnext, "hs-co-1001");
    let order = env
        .erpnext
        .seed(
            "Sales Order",
            json!({"customer": "Globex Corporation", "company": "Acme Test Ltd", "transaction_date": "2026-11-24",
                   "delivery_date": "2026-12-15", "currency": "USD", "hubspot_deal_id": "18204735012", "docstatus": 1,
                   "items": [{"item_code": "SKU-WIDGET", "qty": 10, "rate": 25}]}),
        )
        .expect("sales order");
    assert_eq!(
        order["name"], "SAL-ORD-2026-00001",
        "the captures name this order"
    );

    env.publish_erpnext(
        "Sales Invoice",
        "on_submit",
        captured_webhook("sales_invoice_on_submit.json"),
    )
    .await;
    env.publish_erpnext(
        "Sales Invoice",
        "on_change",
        captured_webhook("sales_invoice_on_change_paid_after_payment_entry.json"),
    )
    .await;
    let (erp, crm) = env.settle().await;
    assert!(erp.is_empty());
    let got: Vec<Write> = crm
        .iter()
        .map(|t| {
            let u = t.crm();
            (
                t.routing_key.clone(),
                u.object_id,
                u.properties,
                u.source_modified,
            )
        })
        .collect();
    let status = |s: &str| BTreeMap::from([("invoice_status".to_string(), s.to_string())]);
    assert_eq!(
        got,
        [
            (
                "crm.update_deal".into(),
                "18204735012".into(),
                status("unpaid"),
                "2026-11-24T17:17:39.499006Z".parse().expect("t")
            ),
            (
                "crm.update_deal".into(),
                "18204735012".into(),
                status("paid"),
                "2026-11-24T17:17:41.035485Z".parse().expect("t")
            ),
        ],
        "modified is read in the site's time zone (America/New_York)"
    );

    // A body that carries the deal itself needs no ERPNext lookup; a draft is ignored; an
    // invoice without any link to a deal is ignored.
    env.erpnext.reset_calls();
    let mut direct = captured_webhook("sales_invoice_on_change_at_submit_unpaid.json");
    direct["hubspot_deal_id"] = json!("555");
    direct["status"] = json!("Overdue");
    direct["modified"] = json!("2026-12-30 09:00:00.000000");
    env.publish_erpnext("Sales Invoice", "on_change", direct)
        .await;
    let mut draft = captured_webhook("sales_invoice_on_submit.json");
    draft["docstatus"] = json!(0);
    draft["modified"] = json!("2026-11-24 12:00:00.000001");
    env.publish_erpnext("Sales Invoice", "on_update", draft)
        .await;
    let mut orphan = captured_webhook("sales_invoice_on_submit.json");
    orphan["sales_orders"] = json!([]);
    orphan["modified"] = json!("2026-11-24 12:00:00.000002");
    env.publish_erpnext("Sales Invoice", "on_submit", orphan)
        .await;
    let (_, crm) = env.settle().await;
    assert_eq!(crm.len(), 1, "{crm:?}");
    let u = crm[0].crm();
    assert_eq!(
        (
            u.object_id.as_str(),
            u.properties["invoice_status"].as_str()
        ),
        ("555", "overdue")
    );
    assert!(
        env.erpnext.calls().values().sum::<u64>() == 0,
        "{:?}",
        env.erpnext.calls()
    );
    env.finish().await;
}

#[tokio::test]
async fn customer_after_insert_writes_the_customer_id_to_the_company() {
    let env = TestEnv::start().await;
    env.publish_erpnext(
        "Customer",
        "after_insert",
        captured_webhook("customer_after_insert.json"),
    )
    .await;
    let (_, crm) = env.settle().await;
    assert_eq!(crm.len(), 1);
    assert_eq!(crm[0].routing_key, "crm.update_company");
    let u = crm[0].crm();
    assert_eq!(u.object_id, "hs-co-1001");
    assert_eq!(
        u.properties,
        BTreeMap::from([(
            "erpnext_customer_id".to_string(),
            "Globex Corporation".to_string()
        )])
    );
    env.finish().await;
}

/// erp-writer's `customer_upserted` outcome already wrote the Customer ID back; the Frappe
/// webhook of the same insert must not write it a second time (one HubSpot call per company).
#[tokio::test]
async fn customer_after_insert_after_its_outcome_writes_nothing_more() {
    let env = TestEnv::start().await;
    env.publish_outcome(&shared::commands::ErpOutcome::CustomerUpserted {
        hubspot_company_id: "hs-co-1001".into(),
        customer: "Globex Corporation".into(),
        created: true,
    })
    .await;
    let (_, crm) = env.settle().await;
    assert_eq!(crm.len(), 1, "the outcome's write-back");
    env.publish_erpnext(
        "Customer",
        "after_insert",
        captured_webhook("customer_after_insert.json"),
    )
    .await;
    let (_, crm) = env.settle().await;
    assert!(
        crm.is_empty(),
        "{:?}",
        crm.iter().map(|t| t.crm()).collect::<Vec<_>>()
    );
    env.finish().await;
}

/// Someone cancels a deal's Sales Order in ERPNext and amends it: the deal follows the live
/// amendment. A deal whose only order is cancelled shows it for review. Either way the mapper
/// re-reads the revisions, so the webhook of any revision gives the same answer.
#[tokio::test]
async fn sales_order_cancel_and_amend_move_the_deal_to_the_live_revision() {
    let env = TestEnv::start().await;
    crate::support::seed_globex(&env.erpnext, "hs-co-1001");
    // As people do it in ERPNext: submit, cancel, amend (the amendment copies the deal's ID).
    let erp = shared::erpnext::ErpNextClient::new(&env.settings.erpnext).expect("client");
    let original = crate::support::submitted_order(&erp, "deal-amended", None).await;
    crate::support::cancel_order(&erp, &original).await;
    let amendment = crate::support::submitted_order(&erp, "deal-amended", Some(&original)).await;
    let cancelled = crate::support::submitted_order(&erp, "deal-cancelled", None).await;
    crate::support::cancel_order(&erp, &cancelled).await;

    // The cancel of the original arrives (late, after the amendment exists).
    env.publish_erpnext(
        "Sales Order",
        "on_cancel",
        json!({"name": original, "hubspot_deal_id": "deal-amended", "docstatus": 2,
               "modified": "2026-11-24 12:00:00.000000"}),
    )
    .await;
    env.publish_erpnext(
        "Sales Order",
        "on_cancel",
        json!({"name": cancelled, "hubspot_deal_id": "deal-cancelled", "docstatus": 2,
               "modified": "2026-11-24 12:00:00.000000"}),
    )
    .await;
    let (erp, crm) = env.settle().await;
    assert!(erp.is_empty(), "nothing is created again");
    let mut by_deal: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for t in &crm {
        assert_eq!(t.routing_key, "crm.update_deal");
        let u = t.crm();
        by_deal.insert(u.object_id, u.properties);
    }
    let amended = &by_deal["deal-amended"];
    assert_eq!(amended["erpnext_sales_order"], amendment);
    assert_eq!(amended["erpnext_sync_status"], "synced");
    assert!(amended["erpnext_sales_order_url"].ends_with(&amendment));
    let flagged = &by_deal["deal-cancelled"];
    assert_eq!(flagged["erpnext_sales_order"], cancelled);
    assert_eq!(flagged["erpnext_sync_status"], "needs_review");
    assert!(
        flagged["erpnext_sync_message"].contains("cancelled"),
        "{flagged:?}"
    );
    env.finish().await;
}
