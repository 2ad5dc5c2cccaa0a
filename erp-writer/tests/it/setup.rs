//! `erp-writer setup` against a site without lead2ledger's custom fields and webhooks.

use std::time::Duration;

use erp_writer::setup::Action;
use l2l_tests::sim::erpnext::{CustomFields, DeliveryState, ErpNextSimConfig, WebhookDelivery};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::config::Settings;
use shared::erpnext::ErpNextClient;
use shared::testkit::eventually;
use tokio_util::sync::CancellationToken;

use crate::common::{WEBHOOK_SECRET, World, deal};

async fn bare_site() -> (World, Settings) {
    let w = World::with_sim(ErpNextSimConfig {
        custom_fields: CustomFields::None,
        webhook_retry_delays_ms: vec![10, 10],
        ..Default::default()
    })
    .await;
    let mut settings = w.settings();
    // Nothing listens on the discard port: deliveries fail, the simulator still records them.
    settings.erpnext.webhook_target = Some("http://127.0.0.1:9/l2l".parse().expect("url"));
    (w, settings)
}

/// Calls that change the site: everything but GETs and the secret read (a POST that only reads).
fn writes(w: &World) -> Vec<(String, u64)> {
    w.sim
        .calls()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("GET") && !k.ends_with(erp_writer::setup::GET_PASSWORD))
        .collect()
}

fn header<'a>(d: &'a WebhookDelivery, name: &str) -> Option<&'a str> {
    d.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn setup_twice_creates_everything_then_changes_nothing() {
    let (w, settings) = bare_site().await;
    let first = erp_writer::run_setup(&settings).await.expect("first setup");
    assert_eq!(first.count(Action::Created), 16, "{first}");
    assert!(
        first
            .to_string()
            .ends_with("16 created, 0 updated, 0 unchanged"),
        "{first}"
    );

    w.sim.reset_calls();
    let second = erp_writer::run_setup(&settings)
        .await
        .expect("second setup");
    assert!(second.unchanged(), "{second}");
    assert_eq!(second.rows.len(), 16);
    assert!(
        second.rows.iter().all(|r| r.result() == "unchanged"),
        "{second}"
    );
    let writes = writes(&w);
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
    // Every revision carries the deal's ID; only the first order carries the unique key, which
    // an amendment does not copy.
    assert_eq!(field("Sales Order", "hubspot_deal_id")["unique"], 0);
    assert_eq!(field("Sales Order", "hubspot_deal_key")["unique"], 1);
    assert_eq!(field("Sales Order", "hubspot_deal_key")["no_copy"], 1);
    // Contacts and Addresses are keyed uniquely too, and the keys are not copied by the desk's
    // Duplicate.
    for (dt, name) in [
        ("Contact", "hubspot_contact_id"),
        ("Address", "hubspot_address_key"),
    ] {
        assert_eq!(field(dt, name)["unique"], 1, "{dt}.{name}");
        assert_eq!(field(dt, name)["no_copy"], 1, "{dt}.{name}");
    }
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
    let contact = json!({"first_name": "Dup", "hubspot_contact_id": "ct-dup"});
    w.sim
        .seed("Contact", contact.clone())
        .expect("first contact");
    let err = w.sim.seed("Contact", contact).expect_err("unique");
    assert_eq!(err.exc_type(), "UniqueValidationError");

    // The webhooks: JSON, explicit Content-Type, security on, URL with doctype and event.
    let hooks = w.docs("Webhook");
    assert_eq!(hooks.len(), 6);
    for (doctype, event) in [
        ("Sales Invoice", "on_submit"),
        ("Sales Invoice", "on_change"),
        ("Sales Invoice", "on_cancel"),
        ("Customer", "after_insert"),
        ("Sales Order", "on_cancel"),
        ("Sales Order", "after_insert"),
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
        // Only amendments are inserted by someone else: our own inserts are not sent back.
        let want = (doctype, event) == ("Sales Order", "after_insert");
        assert_eq!(h["condition"] == "doc.amended_from", want, "{h}");
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
async fn setup_corrects_every_owned_field_that_drifted_and_says_which() {
    let (w, settings) = bare_site().await;
    erp_writer::run_setup(&settings).await.expect("setup");
    let client = ErpNextClient::new(&settings.erpnext).expect("client");
    // Hand edits in the desk: a webhook disabled, sent elsewhere, filtered, with another body
    // and an extra header…
    client
        .update(
            "Webhook",
            "lead2ledger-sales-invoice-on-change",
            &json!({
                "request_url": "http://old-host/hook",
                "enabled": 0,
                "condition": "doc.status == \"Paid\"",
                "webhook_json": "{\"name\": {{ doc.name | tojson }}}",
                "webhook_headers": [
                    {"key": "Content-Type", "value": "application/json"},
                    {"key": "X-Debug", "value": "1"}
                ],
            }),
        )
        .await
        .expect("drift the webhook");
    // …a unique key made non-unique and relabelled…
    client
        .update(
            "Custom Field",
            "Customer-hubspot_company_id",
            &json!({"unique": 0, "label": "Company"}),
        )
        .await
        .expect("drift the custom field");
    // …and a webhook replaced by one on another event (Frappe cannot change it in place).
    client
        .delete("Webhook", "lead2ledger-sales-invoice-on-cancel")
        .await
        .expect("delete");
    let other = json!({
        "name": "lead2ledger-sales-invoice-on-cancel",
        "webhook_doctype": "Sales Invoice",
        "webhook_docevent": "on_submit",
        "enabled": 1,
        "request_url": "http://127.0.0.1:9/l2l/webhooks/erpnext/Sales%20Invoice/on_cancel",
        "request_structure": "JSON",
        "webhook_json": "{\"name\": {{ doc.name | tojson }}}",
    });
    client.insert("Webhook", &other).await.expect("replace");

    let report = erp_writer::run_setup(&settings).await.expect("setup again");
    assert_eq!(report.count(Action::Updated), 3, "{report}");
    assert_eq!(report.count(Action::Unchanged), 13, "{report}");
    let result = |name: &str| report.row(name).expect(name).result();
    assert_eq!(
        result("lead2ledger-sales-invoice-on-change"),
        "updated: condition, enabled, request_url, webhook_headers, webhook_json",
        "{report}"
    );
    assert_eq!(
        result("Customer-hubspot_company_id"),
        "updated: label, unique",
        "{report}"
    );
    let cancel = result("lead2ledger-sales-invoice-on-cancel");
    assert!(
        cancel.contains(" webhook_docevent, ")
            && cancel.ends_with("re-created (webhook_docevent is set only once)"),
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.ends_with("0 created, 3 updated, 13 unchanged"),
        "{text}"
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
    assert!(
        hook["condition"].as_str().unwrap_or_default().is_empty(),
        "{hook}"
    );
    assert!(
        hook["webhook_json"]
            .as_str()
            .is_some_and(|t| t.contains("hubspot_deal_id")),
        "{hook}"
    );
    assert_eq!(
        hook["webhook_headers"].as_array().map(Vec::len),
        Some(1),
        "{hook}"
    );
    let cancel = w
        .sim
        .get("Webhook", "lead2ledger-sales-invoice-on-cancel")
        .expect("hook");
    assert_eq!(cancel["webhook_docevent"], "on_cancel");
    let field = w
        .sim
        .get("Custom Field", "Customer-hubspot_company_id")
        .expect("field");
    assert_eq!(field["unique"], 1);
    assert_eq!(field["label"], "HubSpot Company ID");

    // Corrected means stable: the next run changes nothing.
    w.sim.reset_calls();
    let again = erp_writer::run_setup(&settings).await.expect("third setup");
    assert!(again.unchanged(), "{again}");
    assert!(writes(&w).is_empty(), "{:?}", writes(&w));
    w.cleanup().await;
}

/// The rotation of issue 14: ERPNext kept signing with the old secret and ingest refused every
/// delivery. Setup now writes the new one, and ingest accepts what ERPNext sends next.
#[tokio::test]
async fn a_rotated_webhook_secret_is_written_and_ingest_accepts_the_deliveries() {
    const NEW_SECRET: &str = "rotated-webhook-secret-2027";
    let (w, mut settings) = bare_site().await;
    // ingest already runs with the new secret.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut ingest_settings = w.settings();
    ingest_settings.erpnext.webhook_secret = Some(SecretString::from(NEW_SECRET.to_string()));
    ingest_settings.ingest.public_url = format!("http://{addr}").parse().expect("url");
    let stop = CancellationToken::new();
    let ingest = tokio::spawn(ingest::run(ingest_settings, listener, stop.clone()));
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(15), "ingest ready", || {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("http://{addr}/readyz"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    settings.erpnext.webhook_target = Some(format!("http://{addr}").parse().expect("url"));

    // ERPNext set up with the old secret: ingest refuses its deliveries.
    erp_writer::run_setup(&settings)
        .await
        .expect("setup, old secret");
    let customer = |id: &str| {
        json!({"customer_name": format!("Rotated {id}"), "customer_group": "Commercial",
               "territory": "United States", "hubspot_company_id": id})
    };
    w.sim
        .seed("Customer", customer("co-old"))
        .expect("customer");
    let refused = eventually(Duration::from_secs(10), "refused delivery", || async {
        w.sim
            .webhook_deliveries()
            .into_iter()
            .find(|d| d.state == DeliveryState::Failed)
    })
    .await;
    assert!(
        refused.attempts.iter().all(|a| a.status == Some(401)),
        "{:?}",
        refused.attempts
    );

    // The rotation reaches ERPNext.
    settings.erpnext.webhook_secret = Some(SecretString::from(NEW_SECRET.to_string()));
    let report = erp_writer::run_setup(&settings)
        .await
        .expect("setup, new secret");
    for spec in erp_writer::setup::WEBHOOKS {
        assert_eq!(
            report.row(&spec.name()).expect("row").result(),
            "updated: webhook_secret",
            "{report}"
        );
    }
    assert_eq!(report.count(Action::Unchanged), 10, "{report}");
    assert!(!report.to_string().contains(NEW_SECRET), "{report}");

    w.sim.clear_webhook_deliveries();
    w.sim
        .seed("Customer", customer("co-new"))
        .expect("customer");
    let delivered = eventually(Duration::from_secs(10), "accepted delivery", || async {
        w.sim
            .webhook_deliveries()
            .into_iter()
            .find(|d| d.state != DeliveryState::Pending)
    })
    .await;
    assert_eq!(delivered.state, DeliveryState::Delivered, "{delivered:?}");
    assert_eq!(delivered.attempts.last().and_then(|a| a.status), Some(200));
    shared::signature::verify_frappe(
        NEW_SECRET,
        delivered.body.as_bytes(),
        header(&delivered, "X-Frappe-Webhook-Signature"),
    )
    .expect("signed with the new secret");
    let queued = shared::testkit::drain(
        &w.ns.settings.amqp.url,
        &w.ns.names().queue(shared::names::WorkQueue::Mapper),
    )
    .await;
    assert_eq!(queued.len(), 1, "one event, for the accepted delivery");
    assert_eq!(queued[0].routing_key, "erpnext.Customer.after_insert");

    // Same secret again: nothing to write.
    let again = erp_writer::run_setup(&settings).await.expect("setup again");
    assert!(again.unchanged(), "{again}");
    stop.cancel();
    let _ = ingest.await;
    w.cleanup().await;
}

#[tokio::test]
async fn setup_refuses_a_site_in_another_time_zone_before_writing_anything() {
    let (w, mut settings) = bare_site().await;
    assert_eq!(w.sim.config().timezone, "America/New_York");
    settings.erpnext.time_zone = "UTC".into();
    let err = erp_writer::run_setup(&settings)
        .await
        .expect_err("time zone mismatch");
    let text = format!("{err:#}");
    for needle in [
        "erpnext.time_zone",
        "\"UTC\"",
        "\"America/New_York\"",
        "nothing was changed",
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    assert!(w.docs("Custom Field").is_empty());
    assert!(w.docs("Webhook").is_empty());
    assert!(writes(&w).is_empty(), "{:?}", writes(&w));

    // An alias of the site's zone is the same clock: accepted.
    settings.erpnext.time_zone = "US/Eastern".into();
    let report = erp_writer::run_setup(&settings)
        .await
        .expect("alias accepted");
    assert_eq!(report.count(Action::Created), 16, "{report}");
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

/// A site an earlier lead2ledger set up: `Contact.hubspot_contact_id` not unique, no Address key.
/// Setup makes the Contact key unique in place and adds the Address key. Where two Contacts
/// already share a HubSpot ID, ERPNext refuses (`NonUniqueError`): setup stops with an error
/// that names the field and ERPNext's reason, and goes through once the twin is gone.
#[tokio::test]
async fn setup_makes_contact_keys_unique_and_says_which_twins_prevent_it() {
    let (w, settings) = bare_site().await;
    erp_writer::run_setup(&settings).await.expect("setup");
    let client = ErpNextClient::new(&settings.erpnext).expect("client");
    client
        .update(
            "Custom Field",
            "Contact-hubspot_contact_id",
            &json!({"unique": 0, "no_copy": 0, "search_index": 1}),
        )
        .await
        .expect("the earlier setup's Contact key");
    client
        .delete("Custom Field", "Address-hubspot_address_key")
        .await
        .expect("no Address key yet");
    for last in ["Twin A", "Twin B"] {
        w.sim
            .seed(
                "Contact",
                json!({"first_name": "Hank", "last_name": last, "hubspot_contact_id": "ct-twin"}),
            )
            .expect("twins are possible without the unique key");
    }

    let err = erp_writer::run_setup(&settings)
        .await
        .expect_err("the key cannot be unique while twins exist");
    let message = format!("{err:#}");
    assert!(
        message.starts_with("Custom Field Contact.hubspot_contact_id: ")
            && message.contains(
                "NonUniqueError: Contact: Field 'HubSpot Contact ID' cannot be set as Unique as it has non-unique values"
            ),
        "{message}"
    );
    let field = w
        .sim
        .get("Custom Field", "Contact-hubspot_contact_id")
        .expect("field");
    assert_eq!(field["unique"], 0, "refused means unchanged");

    let twin = w
        .docs_where("Contact", "hubspot_contact_id", "ct-twin")
        .pop()
        .expect("twin");
    client
        .delete("Contact", twin["name"].as_str().expect("name"))
        .await
        .expect("merge the twins");
    let report = erp_writer::run_setup(&settings).await.expect("setup again");
    assert_eq!(
        report
            .row("Contact-hubspot_contact_id")
            .expect("row")
            .result(),
        "updated: no_copy, search_index, unique",
        "{report}"
    );
    assert_eq!(
        report
            .row("Address-hubspot_address_key")
            .expect("row")
            .action,
        Action::Created,
        "{report}"
    );
    let err = w
        .sim
        .seed(
            "Contact",
            json!({"first_name": "Hank", "last_name": "Twin C", "hubspot_contact_id": "ct-twin"}),
        )
        .expect_err("unique now");
    assert_eq!(err.exc_type(), "UniqueValidationError");
    assert!(
        erp_writer::run_setup(&settings)
            .await
            .expect("third setup")
            .unchanged()
    );
    w.cleanup().await;
}
