//! `hubspot.deal.*`: a won deal becomes exactly one `erp.sync_deal` within the HubSpot call
//! budget; deals that are not won are ignored, or flagged when they already have a Sales Order.

use std::collections::BTreeMap;

use l2l_tests::sim::hubspot::ObjectType;
use shared::commands::{SyncDeal, UpdateCrmObject};
use shared::envelope::Kind;

use crate::support::{TestEnv, deal_won, hubspot_event, seed_won_deal};

/// Issue 16: HubSpot lists at most 100 associations of a type inline on a v3 read and pages v4
/// association reads at 500. A deal with 600 line items takes the inline page, the cut, and two
/// v4 pages, and every line reaches the command in its order.
#[tokio::test]
async fn a_deal_with_600_line_items_maps_every_line() {
    const LINES: usize = 600;
    let env = TestEnv::start().await;
    let ids = seed_won_deal(
        &env.hubspot,
        "Globex – big order",
        1,
        LINES,
        true,
        &BTreeMap::new(),
    );
    let deal = &ids["deal"];
    env.hubspot.reset_calls();
    env.publish_hubspot(&[deal_won(1, deal)]).await;
    let (erp, _) = env.settle().await;
    assert_eq!(erp.len(), 1, "dead letters: {:?}", env.dead_letters().await);
    let sync: SyncDeal = erp[0].envelope.decode_payload().expect("payload");
    let got: Vec<&str> = sync
        .order
        .items
        .iter()
        .map(|l| l.hubspot_line_item_id.as_str())
        .collect();
    let want: Vec<&str> = (0..LINES)
        .map(|i| ids[&format!("line{i}")].as_str())
        .collect();
    assert_eq!(got.len(), LINES);
    let mut sorted_got = got.clone();
    sorted_got.sort_unstable();
    let mut sorted_want = want.clone();
    sorted_want.sort_unstable();
    assert_eq!(sorted_got, sorted_want, "every line item, once");
    let calls = env.hubspot.calls();
    assert_eq!(
        calls
            .calls
            .get("POST /crm/v4/associations/deals/line_items/batch/read"),
        Some(&2),
        "the cut inline list is completed in two v4 pages: {:?}",
        calls.calls
    );
    env.finish().await;
}

#[tokio::test]
async fn won_deal_becomes_one_sync_deal_within_four_hubspot_calls() {
    let env = TestEnv::start().await;
    let ids = seed_won_deal(
        &env.hubspot,
        "Globex – rollout",
        3,
        10,
        true,
        &BTreeMap::new(),
    );
    let deal = &ids["deal"];
    env.hubspot.reset_calls();
    env.erpnext.reset_calls();

    let correlation = env.publish_hubspot(&[deal_won(1, deal)]).await;
    let (erp, crm) = env.settle().await;

    assert_eq!(
        erp.len(),
        1,
        "exactly one command: {erp:?}, dead letters: {:?}",
        env.dead_letters().await
    );
    assert!(crm.is_empty(), "{crm:?}");
    let cmd = &erp[0];
    assert_eq!(cmd.routing_key, "erp.sync_deal");
    assert_eq!(cmd.envelope.kind, Kind::ErpSyncDeal);
    assert_eq!(
        cmd.envelope.correlation_id, correlation,
        "the webhook's correlation ID is carried on"
    );
    assert!(
        cmd.envelope
            .idempotency_key
            .starts_with(&format!("erp.sync_deal:deal:{deal}:"))
    );
    let sync: SyncDeal = cmd.envelope.decode_payload().expect("payload");
    assert_eq!(sync.hubspot_deal_id, *deal);
    assert_eq!(sync.deal_name, "Globex – rollout");
    let c = &sync.customer;
    assert_eq!(
        (c.hubspot_company_id.as_str(), c.customer_name.as_str()),
        (ids["company"].as_str(), "Globex Corporation")
    );
    assert_eq!(
        (c.customer_group.as_str(), c.territory.as_str()),
        ("Commercial", "United States")
    );
    let a = sync.address.as_ref().expect("address");
    assert_eq!(
        (
            a.address_line1.as_str(),
            a.city.as_str(),
            a.pincode.as_deref(),
            a.country.as_str()
        ),
        ("1 Main St", "Springfield", Some("62701"), "United States")
    );
    let contacts: Vec<(&str, bool)> = sync
        .contacts
        .iter()
        .map(|c| (c.hubspot_contact_id.as_str(), c.is_primary_contact))
        .collect();
    assert_eq!(
        contacts,
        [
            (ids["contact0"].as_str(), true),
            (ids["contact1"].as_str(), false),
            (ids["contact2"].as_str(), false)
        ]
    );
    let o = &sync.order;
    assert_eq!(o.company, "Acme Test Ltd");
    assert_eq!(o.currency, "USD");
    assert_eq!(o.transaction_date.to_string(), "2026-11-24");
    assert_eq!(o.delivery_date.to_string(), "2026-12-08");
    assert_eq!(o.selling_price_list.as_deref(), Some("Standard Selling"));
    assert_eq!(o.set_warehouse.as_deref(), Some("Stores - ATL"));
    assert_eq!(o.taxes_and_charges.as_deref(), Some("US Sales Tax - ATL"));
    assert!(!o.submit);
    assert_eq!(o.items.len(), 10);
    for (i, line) in o.items.iter().enumerate() {
        let (sku, price) = crate::support::ITEMS[i % 3];
        assert_eq!(line.item_code, sku);
        assert_eq!(line.qty, rust_decimal::Decimal::from(i + 1));
        assert_eq!(
            line.rate,
            price.parse::<rust_decimal::Decimal>().expect("price")
        );
        assert_eq!(line.hubspot_line_item_id, ids[&format!("line{i}")]);
    }

    let calls = env.hubspot.calls();
    assert_eq!(calls.total, 4, "1 deal + 3 batch reads: {:?}", calls.calls);
    assert_eq!(
        calls.calls.get("GET /crm/v3/objects/deals/{id}"),
        Some(&1),
        "{:?}",
        calls.calls
    );
    let erp_calls: u64 = env.erpnext.calls().values().sum();
    assert_eq!(erp_calls, 1, "one item lookup: {:?}", env.erpnext.calls());
    env.finish().await;
}

#[tokio::test]
async fn deal_not_won_is_ignored_for_one_call_and_flagged_once_it_has_a_sales_order() {
    let env = TestEnv::start().await;
    let ids = seed_won_deal(&env.hubspot, "Lost cause", 1, 2, true, &BTreeMap::new());
    let deal = &ids["deal"];
    env.hubspot
        .update_as_user(ObjectType::Deals, deal, &[("dealstage", "contractsent")])
        .expect("update");
    env.hubspot.reset_calls();
    env.publish_hubspot(&[hubspot_event(
        1,
        "deal.propertyChange",
        deal,
        Some(("dealstage", "contractsent")),
    )])
    .await;
    let (erp, crm) = env.settle().await;
    assert!(erp.is_empty() && crm.is_empty(), "{erp:?} {crm:?}");
    assert_eq!(
        env.hubspot.calls().total,
        1,
        "a deal that is not won costs one read"
    );

    // A deal with a Sales Order that leaves the won stage: needs review, never an ERPNext change.
    env.hubspot
        .update_as_user(
            ObjectType::Deals,
            deal,
            &[
                ("dealstage", "closedlost"),
                ("erpnext_sales_order", "SAL-ORD-2026-00001"),
            ],
        )
        .expect("update");
    env.publish_hubspot(&[hubspot_event(
        2,
        "deal.propertyChange",
        deal,
        Some(("dealstage", "closedlost")),
    )])
    .await;
    let (erp, crm) = env.settle().await;
    assert!(erp.is_empty(), "{erp:?}");
    assert_eq!(crm.len(), 1, "{crm:?}");
    assert_eq!(crm[0].routing_key, "crm.update_deal");
    let u: UpdateCrmObject = crm[0].envelope.decode_payload().expect("payload");
    assert_eq!(u.object_id, *deal);
    assert_eq!(u.properties.len(), 2, "{:?}", u.properties);
    assert_eq!(u.properties["erpnext_sync_status"], "needs_review");
    let reason = &u.properties["erpnext_sync_message"];
    assert!(
        reason.starts_with("deal left the won stage after Sales Order SAL-ORD-2026-00001")
            && reason.contains("closedlost"),
        "{reason}"
    );

    // Our own write-back echoing back as a webhook is not even read.
    env.hubspot.reset_calls();
    env.publish_hubspot(&[hubspot_event(
        3,
        "deal.propertyChange",
        deal,
        Some(("erpnext_sync_status", "needs_review")),
    )])
    .await;
    let (erp, crm) = env.settle().await;
    assert!(erp.is_empty() && crm.is_empty());
    assert_eq!(env.hubspot.calls().total, 0);
    env.finish().await;
}

#[tokio::test]
async fn deleted_deal_with_a_sales_order_is_flagged_for_review() {
    let env = TestEnv::start().await;
    // The mapper learns of the Sales Order from erp-writer's outcome.
    env.publish_outcome(&shared::commands::ErpOutcome::SalesOrderUpserted {
        hubspot_deal_id: "4242".into(),
        hubspot_company_id: "77".into(),
        sales_order: "SAL-ORD-2026-00009".into(),
        docstatus: 1,
        status: "To Deliver and Bill".into(),
        created: true,
        modified: "2026-11-24 12:17:39.499006".into(),
    })
    .await;
    let (_, crm) = env.settle().await;
    assert_eq!(crm.len(), 1, "the outcome's write-back");
    env.publish_hubspot(&[
        hubspot_event(5, "deal.deletion", "4242", None),
        hubspot_event(6, "deal.deletion", "4343", None),
    ])
    .await;
    let (erp, crm) = env.settle().await;
    assert!(erp.is_empty());
    assert_eq!(crm.len(), 1, "only the deal with an order: {crm:?}");
    let u = crm[0].crm();
    assert_eq!(
        (
            u.object_id.as_str(),
            u.properties["erpnext_sync_status"].as_str()
        ),
        ("4242", "needs_review")
    );
    assert_eq!(
        u.properties["erpnext_sync_message"],
        "deal was deleted in HubSpot, but Sales Order SAL-ORD-2026-00009 exists in ERPNext"
    );
    env.finish().await;
}

#[tokio::test]
async fn deleted_company_flags_its_deal_with_a_sales_order_for_review() {
    let env = TestEnv::start().await;
    // erp-writer reports deal 4242's Sales Order for company 77; HubSpot will no longer answer
    // the associations of the deleted company, so the mapper's own record must find the deal.
    env.publish_outcome(&shared::commands::ErpOutcome::SalesOrderUpserted {
        hubspot_deal_id: "4242".into(),
        hubspot_company_id: "77".into(),
        sales_order: "SAL-ORD-2026-00009".into(),
        docstatus: 1,
        status: "To Deliver and Bill".into(),
        created: true,
        modified: "2026-11-24 12:17:39.499006".into(),
    })
    .await;
    let (_, crm) = env.settle().await;
    assert_eq!(crm.len(), 1, "the outcome's write-back");
    env.publish_hubspot(&[
        hubspot_event(7, "company.deletion", "77", None),
        hubspot_event(8, "company.deletion", "78", None),
    ])
    .await;
    let (erp, crm) = env.settle().await;
    assert!(erp.is_empty(), "ERPNext is never changed: {erp:?}");
    assert_eq!(crm.len(), 1, "only the company with a synced deal: {crm:?}");
    let u = crm[0].crm();
    assert_eq!(
        (
            u.object_id.as_str(),
            u.properties["erpnext_sync_status"].as_str()
        ),
        ("4242", "needs_review")
    );
    let reason = &u.properties["erpnext_sync_message"];
    assert!(
        reason.contains("company 77 was deleted") && reason.contains("SAL-ORD-2026-00009"),
        "{reason}"
    );
    assert!(reason.chars().count() <= 250);
    env.finish().await;
}
