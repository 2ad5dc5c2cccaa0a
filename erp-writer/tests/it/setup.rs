//! `erp-writer setup` against a site without lead2ledger's custom fields and webhooks.

use std::time::Duration;

use erp_writer::setup::Action;
use l2l_tests::sim::erpnext::ErpNextSimConfig;
use serde_json::{Value, json};
use shared::config::Settings;
use shared::erpnext::ErpNextClient;
use shared::testkit::eventually;

use crate::common::{WEBHOOK_SECRET, World, deal};

async fn bare_site() -> (World, Settings) {
    let w = World::with_sim(ErpNextSimConfig {
        seed_custom_fields: false,
        webhook_retry_delays_ms: vec![10, 10],
        ..Default::default()
    })
    .await;
    let mut settings = w.settings();
    // Nothing listens on the discard port: deliveries fail, the simulator still records them.
    settings.erpnext.webhook_target = Some("http://127.0.0.1:9/l2l".parse().expect("url"));
    (w, settings)
}

#[tokio::test]
async fn setup_twice_creates_everything_then_changes_nothing() {
    let (w, settings) = bare_site().await;
    let first = erp_writer::run_setup(&settings).await.expect("first setup");
    assert_eq!(first.count(Action::Created), 8, "{first}");
    assert!(
        first
            .to_string()
            .contains("8 created, 0 updated, 0 already present"),
        "{first}"
    );

    w.sim.reset_calls();
    let second = erp_writer::run_setup(&settings)
        .await
        .expect("second setup");
    assert!(second.all_present(), "{second}");
    assert_eq!(second.rows.len(), 8);
    let writes: Vec<_> = w
        .sim
        .calls()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("GET"))
        .collect();
    assert!(writes.is_empty(), "the second run wrote: {writes:?}");

    // The custom fields exist with the right uniqueness.
    let fields = w.docs("Custom Field");
    let field = |dt: &str, name: &str| {
        fields
            .iter()
            .find(|f| f["dt"] == dt && f["fieldname"] == name)
            .unwrap_or_else(|| panic!("{dt}.{name} missing: {fields:#?}"))
            .clone()
    };
    assert_eq!(field("Customer", "hubspot_company_id")["unique"], 1);
    assert_eq!(field("Sales Order", "hubspot_deal_id")["unique"], 1);
    assert_eq!(field("Contact", "hubspot_contact_id")["unique"], 0);
    assert_eq!(
        field("Sales Invoice", "hubspot_deal_id")["fieldtype"],
        "Data"
    );
    // …and behave: a second Customer with the same HubSpot company is refused.
    let customer = json!({"customer_name": "Dup", "customer_group": "Commercial", "territory": "United States", "hubspot_company_id": "co-dup"});
    w.sim
        .seed("Customer", customer.clone())
        .expect("first customer");
    let err = w.sim.seed("Customer", customer).expect_err("unique");
    assert_eq!(err.exc_type(), "UniqueValidationError");

    // The webhooks: JSON, explicit Content-Type, security on, URL with doctype and event.
    let hooks = w.docs("Webhook");
    assert_eq!(hooks.len(), 4);
    for (doctype, event) in [
        ("Sales Invoice", "on_submit"),
        ("Sales Invoice", "on_change"),
        ("Sales Invoice", "on_cancel"),
        ("Customer", "after_insert"),
    ] {
        let h = hooks
            .iter()
            .find(|h| h["webhook_doctype"] == doctype && h["webhook_docevent"] == event)
            .unwrap_or_else(|| panic!("no webhook for {doctype} {event}"));
        assert_eq!(h["enabled"], 1);
        assert_eq!(h["request_structure"], "JSON");
        assert_eq!(h["request_method"], "POST");
        assert_eq!(h["enable_security"], 1);
        assert_eq!(
            h["request_url"],
            format!(
                "http://127.0.0.1:9/l2l/webhooks/erpnext/{}/{event}",
                doctype.replace(' ', "%20")
            )
        );
        assert_eq!(h["webhook_headers"][0]["key"], "Content-Type");
        assert_eq!(h["webhook_headers"][0]["value"], "application/json");
    }
    w.cleanup().await;
}

#[tokio::test]
async fn webhooks_created_by_setup_deliver_signed_bodies_ingest_can_route() {
    let (w, settings) = bare_site().await;
    erp_writer::run_setup(&settings).await.expect("setup");
    // A deal synced, then invoiced in ERPNext.
    let site = erp_writer::site(&settings).expect("site");
    let cmd = deal("hook");
    erp_writer::apply_sync_deal(&site, &cmd)
        .await
        .expect("synced");
    let so = w.docs("Sales Order")[0]["name"]
        .as_str()
        .expect("so")
        .to_string();
    let invoice = w.sim.invoice_sales_order(&so).expect("invoiced");

    let deliveries = eventually(
        Duration::from_secs(10),
        "customer and invoice deliveries",
        || async {
            let d = w.sim.webhook_deliveries();
            let has = |suffix: &str| d.iter().any(|x| x.url.ends_with(suffix));
            (has("/Customer/after_insert") && has("/Sales%20Invoice/on_submit")).then_some(d)
        },
    )
    .await;
    for d in &deliveries {
        let sig = d
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("X-Frappe-Webhook-Signature"))
            .map(|(_, v)| v.as_str());
        shared::signature::verify_frappe(WEBHOOK_SECRET, d.body.as_bytes(), sig)
            .expect("signed with the shared secret");
        assert!(
            d.headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("Content-Type") && v == "application/json"),
            "{:?}",
            d.headers
        );
    }
    let body = |suffix: &str| -> Value {
        let d = deliveries
            .iter()
            .find(|x| x.url.ends_with(suffix))
            .expect("delivery");
        serde_json::from_str(&d.body).expect("JSON body")
    };
    let customer = body("/Customer/after_insert");
    assert_eq!(customer["event"], "after_insert");
    assert_eq!(customer["doctype"], "Customer");
    assert_eq!(customer["hubspot_company_id"], "co-hook");
    assert!(customer["modified"].is_string());
    let si = body("/Sales%20Invoice/on_submit");
    assert_eq!(si["event"], "on_submit");
    assert_eq!(si["name"], invoice.as_str());
    assert_eq!(si["status"], "Unpaid");
    assert_eq!(
        si["hubspot_deal_id"], "deal-hook",
        "copied from the Sales Order: {si}"
    );
    assert_eq!(si["sales_orders"], json!([so]));
    assert_eq!(si["customer"], "Globex hook");
    w.cleanup().await;
}

#[tokio::test]
async fn setup_corrects_a_webhook_that_drifted() {
    let (w, settings) = bare_site().await;
    erp_writer::run_setup(&settings).await.expect("setup");
    let client = ErpNextClient::new(&settings.erpnext).expect("client");
    client
        .update(
            "Webhook",
            "lead2ledger-sales-invoice-on-change",
            &json!({"request_url": "http://old-host/hook", "enabled": 0}),
        )
        .await
        .expect("drift");
    let report = erp_writer::run_setup(&settings).await.expect("setup again");
    assert_eq!(report.count(Action::Updated), 1, "{report}");
    assert_eq!(report.count(Action::Present), 7, "{report}");
    let row = report
        .rows
        .iter()
        .find(|r| r.action == Action::Updated)
        .expect("row");
    assert_eq!(row.name, "lead2ledger-sales-invoice-on-change");
    assert!(
        row.detail.contains("request_url") && row.detail.contains("enabled"),
        "{}",
        row.detail
    );
    let hook = w
        .sim
        .get("Webhook", "lead2ledger-sales-invoice-on-change")
        .expect("hook");
    assert_eq!(hook["enabled"], 1);
    assert_eq!(
        hook["request_url"],
        "http://127.0.0.1:9/l2l/webhooks/erpnext/Sales%20Invoice/on_change"
    );
    w.cleanup().await;
}

#[tokio::test]
async fn setup_without_a_webhook_secret_refuses_to_start() {
    let (w, mut settings) = bare_site().await;
    settings.erpnext.webhook_secret = None;
    let err = erp_writer::run_setup(&settings)
        .await
        .expect_err("no secret");
    assert!(
        format!("{err:#}").contains("erpnext.webhook_secret"),
        "{err:#}"
    );
    assert!(w.docs("Webhook").is_empty());
    w.cleanup().await;
}
