//! End to end on the real broker and Redis with both simulators: the demo's story as assertions,
//! then many deals at once.

use std::time::Duration;

use l2l_tests::stack::{Stack, StackOptions};
use shared::testkit::eventually;

const LINES: &[(&str, u32, f64)] = &[
    ("SKU-WIDGET", 10, 25.0),
    ("SKU-GADGET", 5, 40.0),
    ("SKU-SERVICE", 3, 150.0),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_won_deal_becomes_a_sales_order_and_the_invoice_status_flows_back() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let deal = stack.seed_deal(1, 3, LINES).expect("seed");
    stack.win_deal(&deal.deal_id).expect("win");

    // ERPNext: one Sales Order for the deal, with the deal's lines.
    let so = eventually(
        Duration::from_secs(30),
        "a Sales Order for the won deal",
        || async { stack.sales_orders_for(&deal.deal_id).into_iter().next() },
    )
    .await;
    let items = so["items"].as_array().expect("items");
    let mut got: Vec<(String, f64, f64)> = items
        .iter()
        .map(|i| {
            (
                i["item_code"].as_str().expect("item_code").to_string(),
                i["qty"].as_f64().expect("qty"),
                i["rate"].as_f64().expect("rate"),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(String, f64, f64)> = LINES
        .iter()
        .map(|(s, q, p)| (s.to_string(), f64::from(*q), *p))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
    assert_eq!(so["currency"], "USD");
    assert_eq!(
        so["net_total"].as_f64(),
        Some(10.0 * 25.0 + 5.0 * 40.0 + 3.0 * 150.0)
    );
    // The tax template chosen by the customer's country (United States) is applied on top.
    assert!(
        so["taxes_and_charges"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{so}"
    );
    let taxes: f64 = so["taxes"]
        .as_array()
        .expect("taxes")
        .iter()
        .filter_map(|t| t["tax_amount"].as_f64())
        .sum();
    assert!(taxes > 0.0);
    assert_eq!(so["grand_total"].as_f64(), Some(900.0 + taxes));
    let customer_name = so["customer"].as_str().expect("customer").to_string();
    let customer = stack
        .erpnext
        .get("Customer", &customer_name)
        .expect("customer exists");
    assert_eq!(
        customer["hubspot_company_id"].as_str(),
        Some(deal.company_id.as_str())
    );
    let contacts: Vec<_> = stack
        .erpnext
        .list("Contact")
        .into_iter()
        .filter(|c| {
            deal.contact_ids
                .iter()
                .any(|id| c["hubspot_contact_id"].as_str() == Some(id))
        })
        .collect();
    assert_eq!(
        contacts.len(),
        3,
        "three Contacts linked by their HubSpot IDs"
    );
    let so_name = so["name"].as_str().expect("name").to_string();

    // HubSpot: the Customer ID on the company, the Sales Order on the deal.
    eventually(
        Duration::from_secs(30),
        "erpnext_customer_id on the company",
        || async {
            (stack
                .company_property(&deal.company_id, "erpnext_customer_id")
                .as_deref()
                == Some(customer_name.as_str()))
            .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "erpnext_sales_order on the deal",
        || async {
            (stack
                .deal_property(&deal.deal_id, "erpnext_sales_order")
                .as_deref()
                == Some(so_name.as_str()))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        stack
            .deal_property(&deal.deal_id, "erpnext_sync_status")
            .as_deref(),
        Some("synced")
    );
    assert_eq!(
        stack
            .deal_property(&deal.deal_id, "erpnext_sync_message")
            .filter(|m| !m.is_empty()),
        None,
        "a synced deal shows no sync message"
    );

    // The invoice, issued then paid in ERPNext, shows on the deal.
    let invoice = stack
        .erpnext
        .invoice_sales_order(&so_name)
        .expect("invoice");
    eventually(
        Duration::from_secs(30),
        "invoice_status Unpaid on the deal",
        || async {
            (stack
                .deal_property(&deal.deal_id, "invoice_status")
                .as_deref()
                == Some("unpaid"))
            .then_some(())
        },
    )
    .await;
    stack.erpnext.pay_invoice(&invoice, None).expect("pay");
    eventually(
        Duration::from_secs(30),
        "invoice_status Paid on the deal",
        || async {
            (stack
                .deal_property(&deal.deal_id, "invoice_status")
                .as_deref()
                == Some("paid"))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        stack.sales_orders_for(&deal.deal_id).len(),
        1,
        "still exactly one Sales Order"
    );
    stack.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_deals_won_together_give_twenty_sales_orders() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let deals: Vec<_> = (0..20)
        .map(|n| {
            stack
                .seed_deal(100 + n, 1, &LINES[..(n % 3) + 1])
                .expect("seed")
        })
        .collect();
    for d in &deals {
        stack.win_deal(&d.deal_id).expect("win");
    }
    eventually(
        Duration::from_secs(60),
        "every deal's Sales Order written back",
        || async {
            deals
                .iter()
                .all(|d| {
                    stack
                        .deal_property(&d.deal_id, "erpnext_sales_order")
                        .is_some()
                })
                .then_some(())
        },
    )
    .await;
    for (n, d) in deals.iter().enumerate() {
        let orders = stack.sales_orders_for(&d.deal_id);
        assert_eq!(orders.len(), 1, "deal {}", d.deal_id);
        assert_eq!(
            orders[0]["items"].as_array().map(Vec::len),
            Some((n % 3) + 1)
        );
        assert_eq!(
            stack
                .deal_property(&d.deal_id, "erpnext_sales_order")
                .as_deref(),
            orders[0]["name"].as_str()
        );
    }
    assert_eq!(stack.erpnext.list("Sales Order").len(), 20);
    assert_eq!(
        stack.erpnext.list("Customer").len(),
        20,
        "one Customer per HubSpot company"
    );
    stack.stop().await.expect("clean stop");
}

/// Issue 16: HubSpot's own deletion and merge webhooks, from the simulator. A synced deal whose
/// company is deleted, and one whose company is merged into another, both become `needs_review`
/// naming what happened; their Sales Orders stay as they are and nothing new is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn company_deletion_and_merge_flag_their_synced_deals() {
    use l2l_tests::sim::hubspot::{ObjectType, WebhookUpdate};
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    stack
        .hubspot
        .set_webhooks(WebhookUpdate {
            deletions: Some(true),
            merges: Some(true),
            ..WebhookUpdate::default()
        })
        .expect("subscribe");
    let deleted = stack.seed_deal(301, 1, &LINES[..1]).expect("seed");
    let merged = stack.seed_deal(302, 1, &LINES[..1]).expect("seed");
    let survivor = stack.seed_deal(303, 1, &LINES[..1]).expect("seed");
    for d in [&deleted, &merged, &survivor] {
        stack.win_deal(&d.deal_id).expect("win");
    }
    let status = |deal: &str| stack.deal_property(deal, "erpnext_sync_status");
    eventually(Duration::from_secs(30), "three deals synced", || async {
        [&deleted, &merged, &survivor]
            .iter()
            .all(|d| status(&d.deal_id).as_deref() == Some("synced"))
            .then_some(())
    })
    .await;

    stack
        .hubspot
        .delete_as_user(ObjectType::Companies, &deleted.company_id)
        .expect("delete");
    stack
        .hubspot
        .merge_as_user(
            ObjectType::Companies,
            &survivor.company_id,
            &merged.company_id,
        )
        .expect("merge");
    let kinds: Vec<String> = stack
        .hubspot
        .webhook_events()
        .iter()
        .map(|e| e.subscription_type.clone())
        .filter(|t| t.ends_with(".deletion") || t.ends_with(".merge"))
        .collect();
    assert_eq!(kinds, ["company.deletion", "company.merge"]);

    for (deal, what) in [
        (&deleted, format!("company {} ", deleted.company_id)),
        (
            &merged,
            format!("merged into company {}", survivor.company_id),
        ),
    ] {
        let message = eventually(
            Duration::from_secs(30),
            "the deal flagged for review",
            || async {
                (status(&deal.deal_id).as_deref() == Some("needs_review"))
                    .then(|| stack.deal_property(&deal.deal_id, "erpnext_sync_message"))
                    .flatten()
            },
        )
        .await;
        assert!(message.contains(&what), "{message}");
        assert_eq!(stack.sales_orders_for(&deal.deal_id).len(), 1);
    }
    assert_eq!(status(&survivor.deal_id).as_deref(), Some("synced"));
    stack.stop().await.expect("clean stop");
}

/// Issue 16: a line item edited after the win reaches the order. Line items have only HubSpot's
/// generic webhook subscriptions (`object.propertyChange`, `objectTypeId` 0-8); the mapper maps
/// the line item's deal again and the draft order follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_line_item_edited_after_the_win_reaches_the_draft_order() {
    use l2l_tests::sim::hubspot::{ObjectType, WebhookUpdate};
    let stack = Stack::start(StackOptions {
        submit_orders: false,
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    stack
        .hubspot
        .set_webhooks(WebhookUpdate {
            line_item_properties: Some(vec!["quantity".into(), "price".into()]),
            ..WebhookUpdate::default()
        })
        .expect("subscribe");
    let deal = stack.seed_deal(311, 1, &LINES[..1]).expect("seed");
    stack.win_deal(&deal.deal_id).expect("win");
    let qty = |stack: &Stack| {
        stack
            .sales_orders_for(&deal.deal_id)
            .first()
            .and_then(|so| so["items"][0]["qty"].as_f64())
    };
    eventually(Duration::from_secs(30), "the draft order", || async {
        (qty(&stack) == Some(10.0)).then_some(())
    })
    .await;

    stack
        .hubspot
        .update_as_user(
            ObjectType::LineItems,
            &deal.line_item_ids[0],
            &[("quantity", "7")],
        )
        .expect("edit the line item");
    assert!(
        stack
            .hubspot
            .webhook_events()
            .iter()
            .any(|e| e.subscription_type == "object.propertyChange"
                && e.extra.get("objectTypeId").and_then(|v| v.as_str()) == Some("0-8")),
        "the simulator sent HubSpot's generic line item event"
    );
    eventually(
        Duration::from_secs(30),
        "the order follows the line item",
        || async { (qty(&stack) == Some(7.0)).then_some(()) },
    )
    .await;
    assert_eq!(stack.sales_orders_for(&deal.deal_id).len(), 1);
    stack.stop().await.expect("clean stop");
}

/// Issue 16: HubSpot's `eventId` is "not guaranteed to be unique". With the simulator giving
/// every event the same ID, three deals won one after the other all become Sales Orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deals_whose_events_share_an_id_are_all_synced() {
    use l2l_tests::sim::hubspot::WebhookUpdate;
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    stack
        .hubspot
        .set_webhooks(WebhookUpdate {
            repeat_event_ids: Some(true),
            ..WebhookUpdate::default()
        })
        .expect("repeat event ids");
    let deals: Vec<_> = (0..3)
        .map(|n| stack.seed_deal(321 + n, 1, &LINES[..1]).expect("seed"))
        .collect();
    for d in &deals {
        stack.win_deal(&d.deal_id).expect("win");
    }
    let won_ids: std::collections::BTreeSet<u64> = stack
        .hubspot
        .webhook_events()
        .iter()
        .filter(|e| e.property_value.as_deref() == Some("closedwon"))
        .map(|e| e.event_id)
        .collect();
    assert_eq!(won_ids.len(), 1, "one event ID for every won event");
    eventually(
        Duration::from_secs(30),
        "every deal's Sales Order",
        || async {
            deals
                .iter()
                .all(|d| stack.sales_orders_for(&d.deal_id).len() == 1)
                .then_some(())
        },
    )
    .await;
    stack.stop().await.expect("clean stop");
}

/// Issue 16: `restore` and `associationChange` events, from the simulator with HubSpot's bodies.
/// A contact associated with a synced deal becomes an ERPNext Contact of its Customer; a deal
/// deleted and restored is mapped again and shows `synced`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn association_changes_and_restores_are_followed() {
    use l2l_tests::sim::hubspot::{ObjectType, WebhookUpdate};
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    stack
        .hubspot
        .set_webhooks(WebhookUpdate {
            deletions: Some(true),
            association_changes: Some(true),
            ..WebhookUpdate::default()
        })
        .expect("subscribe");
    let deal = stack.seed_deal(331, 1, &LINES[..1]).expect("seed");
    stack.win_deal(&deal.deal_id).expect("win");
    let status = || stack.deal_property(&deal.deal_id, "erpnext_sync_status");
    eventually(Duration::from_secs(30), "the deal synced", || async {
        (status().as_deref() == Some("synced")).then_some(())
    })
    .await;

    let newcomer = stack
        .hubspot
        .create_object(
            ObjectType::Contacts,
            &[
                ("firstname", "Nora"),
                ("lastname", "Newcomer"),
                ("email", "nora@example.com"),
            ],
        )
        .expect("contact");
    stack
        .hubspot
        .associate_as_user(
            (ObjectType::Deals, &deal.deal_id),
            (ObjectType::Contacts, &newcomer),
        )
        .expect("associate");
    let event = stack
        .hubspot
        .webhook_events()
        .into_iter()
        .find(|e| e.subscription_type == "deal.associationChange")
        .expect("an associationChange event");
    assert_eq!(
        (event.from_object_id, event.to_object_id),
        (deal.deal_id.parse().ok(), newcomer.parse().ok())
    );
    eventually(
        Duration::from_secs(30),
        "the newcomer's Contact",
        || async {
            stack
                .erpnext
                .list("Contact")
                .iter()
                .any(|c| c["hubspot_contact_id"].as_str() == Some(newcomer.as_str()))
                .then_some(())
        },
    )
    .await;

    // Deleted and restored. (HubSpot refuses writes to a deleted deal, so the flag the mapper
    // sends on deletion cannot land; a status set meanwhile shows whether the restore is
    // followed.)
    stack
        .hubspot
        .update_as_user(
            ObjectType::Deals,
            &deal.deal_id,
            &[("erpnext_sync_status", "error")],
        )
        .expect("status");
    stack
        .hubspot
        .delete_as_user(ObjectType::Deals, &deal.deal_id)
        .expect("delete");
    stack
        .hubspot
        .restore_as_user(ObjectType::Deals, &deal.deal_id)
        .expect("restore");
    assert!(
        stack
            .hubspot
            .webhook_events()
            .iter()
            .any(|e| e.subscription_type == "deal.restore"
                && e.change_flag.as_deref() == Some("RESTORED")),
        "the restore event"
    );
    eventually(
        Duration::from_secs(30),
        "the restored deal synced again",
        || async { (status().as_deref() == Some("synced")).then_some(()) },
    )
    .await;
    assert_eq!(stack.sales_orders_for(&deal.deal_id).len(), 1);
    stack.stop().await.expect("clean stop");
}
