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
