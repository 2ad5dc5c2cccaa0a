//! The mapper with the real erp-writer and the ERPNext simulator: the default mapping produces
//! commands ERPNext accepts (company, warehouse, price list, tax template, items of the demo
//! data), and the writer's outcomes come back as HubSpot write-backs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use shared::names::WorkQueue;
use shared::testkit::drain;
use tokio_util::sync::CancellationToken;

use crate::support::{Taken, TestEnv, deal_won, seed_won_deal};

#[tokio::test]
async fn won_deal_becomes_a_sales_order_and_its_name_comes_back_for_hubspot() {
    let env = TestEnv::start().await;
    let ids = seed_won_deal(
        &env.hubspot,
        "Globex – pipeline",
        2,
        3,
        true,
        &BTreeMap::new(),
    );
    let deal = ids["deal"].clone();
    let stop = CancellationToken::new();
    let writer = tokio::spawn(erp_writer::run(env.settings.clone(), stop.clone()));

    env.publish_hubspot(&[deal_won(1, &deal)]).await;

    // The writer consumes erp.sync_deal; the mapper turns its outcomes into crm.update_*.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut crm: Vec<Taken> = Vec::new();
    let synced = loop {
        for t in drain(
            &env.settings.amqp.url,
            &env.broker.names().queue(WorkQueue::CrmWriter),
        )
        .await
        {
            crm.push(Taken {
                routing_key: t.routing_key,
                envelope: serde_json::from_slice(&t.body).expect("envelope"),
            });
        }
        if let Some(u) = crm.iter().map(Taken::crm).find(|u| {
            u.object_id == deal
                && u.properties.get("erpnext_sync_status").map(String::as_str) == Some("synced")
        }) {
            break u;
        }
        assert!(
            Instant::now() < deadline,
            "no synced write-back; DLQ: {:?}",
            env.dead_letters().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let orders: Vec<Value> = env
        .erpnext
        .list("Sales Order")
        .into_iter()
        .filter(|o| o["hubspot_deal_id"] == deal.as_str())
        .collect();
    assert_eq!(orders.len(), 1, "one Sales Order for the deal");
    let so = &orders[0];
    assert_eq!(
        synced.properties["erpnext_sales_order"],
        so["name"].as_str().expect("name")
    );
    assert!(
        synced.properties["erpnext_sales_order_url"].ends_with(&format!(
            "/app/sales-order/{}",
            so["name"].as_str().expect("name")
        ))
    );
    assert_eq!(so["company"], "Acme Test Ltd");
    assert_eq!(so["customer"], "Globex Corporation");
    assert_eq!(so["set_warehouse"], "Stores - ATL");
    assert_eq!(so["taxes_and_charges"], "US Sales Tax - ATL");
    assert_eq!(so["docstatus"], 0, "draft by default");
    let codes: Vec<&str> = so["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["item_code"].as_str())
        .collect();
    assert_eq!(codes, ["SKU-WIDGET", "SKU-GADGET", "SKU-SERVICE"]);
    let company_write = crm
        .iter()
        .map(Taken::crm)
        .find(|u| u.object_id == ids["company"])
        .expect("the company's Customer ID is written back");
    assert_eq!(
        company_write.properties["erpnext_customer_id"],
        "Globex Corporation"
    );

    stop.cancel();
    let _ = writer.await;
    env.finish().await;
}
