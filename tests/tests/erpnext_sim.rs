//! Contract tests of the ERPNext simulator against the captures of a real Frappe 15.92 /
//! ERPNext 15.92 site (`tests/contracts/erpnext`): every captured request is replayed against a
//! simulator brought into the same state, and the answer must have the captured status and the
//! captured body shape. Then fault injection, and webhooks (event rules, signatures, bytes).

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use l2l_tests::sim::erpnext::{
    CustomFields, DeliveryState, ErpNextSim, ErpNextSimConfig, ErpNextSimHandle, render_json,
};
use l2l_tests::sim::faults::FaultConfig;
use serde_json::{Value, json};
use shared::signature::verify_frappe;

const KEY: &str = "d9cc9a28606f973";
const SECRET: &str = "test-secret-0000";

fn contracts() -> PathBuf {
    shared::contracts::path("erpnext")
}

fn capture(file: &str) -> Value {
    let path = contracts().join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn config() -> ErpNextSimConfig {
    ErpNextSimConfig {
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        // The captures were taken on 2026-11-24 (site time); names and dates depend on it.
        clock_start: Some("2026-11-24 12:17:30".into()),
        webhook_retry_delays_ms: vec![20, 40],
        // The captured site's custom fields: a unique `hubspot_deal_id`.
        custom_fields: CustomFields::Captured,
        ..ErpNextSimConfig::default()
    }
}

struct Fx {
    sim: ErpNextSimHandle,
    http: reqwest::Client,
}

impl Fx {
    async fn start() -> Self {
        Self::with(config()).await
    }

    /// A simulator with `config`, on a free port.
    async fn with(config: ErpNextSimConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let sim = ErpNextSim::start(config, listener).await.expect("start");
        Self {
            sim,
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        auth: Option<String>,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{}", self.sim.base_url(), path))
            .header("Accept", "application/json");
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// An authenticated JSON call.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(
            method,
            path,
            Some(format!("token {KEY}:{SECRET}")),
            Some("application/json"),
            body.map(|b| b.to_string()),
        )
        .await
    }

    /// Send a captured request as it was, with the real secret in place of the redacted one.
    async fn replay_request(&self, request: &Value) -> (u16, Value) {
        let auth = request["headers"]["Authorization"]
            .as_str()
            .map(|a| a.replace("<REDACTED_API_SECRET>", SECRET));
        let body = match &request["body"] {
            Value::Null => None,
            Value::String(raw) => Some(raw.clone()),
            other => Some(other.to_string()),
        };
        self.send(
            request["method"].as_str().expect("method"),
            request["path"].as_str().expect("path"),
            auth,
            request["headers"]["Content-Type"].as_str(),
            body,
        )
        .await
    }

    /// Replay a capture used as a setup step; it must succeed as it did on the real site.
    async fn step(&self, file: &str) -> Value {
        let cap = capture(file);
        let (status, body) = self.replay_request(&cap["request"]).await;
        assert_eq!(
            status,
            cap["response"]["status"].as_u64().expect("status") as u16,
            "setup step {file}: {body}"
        );
        body
    }

    async fn modified(&self, doctype: &str, name: &str) -> String {
        let (status, body) = self
            .call(
                "GET",
                &format!("/api/resource/{}/{name}", doctype.replace(' ', "%20")),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["modified"]
            .as_str()
            .expect("modified")
            .to_string()
    }
}

const BASE: &[&str] = &["customer_create_ok.json", "address_create_ok.json"];

/// The captures that bring the simulator into the state each capture was taken in.
fn setup(file: &str) -> Vec<&'static str> {
    let chain =
        |extra: &[&'static str]| BASE.iter().chain(extra.iter()).copied().collect::<Vec<_>>();
    let so1 = ["sales_order_create_ok.json"];
    let so1_submitted = [
        "sales_order_create_ok.json",
        "sales_order_submit_put_docstatus.json",
    ];
    let si_draft = [
        "sales_order_create_ok.json",
        "sales_order_submit_put_docstatus.json",
        "sales_invoice_create_ok.json",
    ];
    let si_unpaid = [
        "sales_order_create_ok.json",
        "sales_order_submit_put_docstatus.json",
        "sales_invoice_create_ok.json",
        "sales_invoice_submit_put_docstatus.json",
    ];
    let pe_draft = [
        "sales_order_create_ok.json",
        "sales_order_submit_put_docstatus.json",
        "sales_invoice_create_ok.json",
        "sales_invoice_submit_put_docstatus.json",
        "payment_entry_create_ok.json",
    ];
    let paid = [
        "sales_order_create_ok.json",
        "sales_order_submit_put_docstatus.json",
        "sales_invoice_create_ok.json",
        "sales_invoice_submit_put_docstatus.json",
        "payment_entry_create_ok.json",
        "payment_entry_submit_put_docstatus.json",
    ];
    let so2 = ["sales_order_create_ok.json", "sales_order_create_ok_2.json"];
    match file {
        "auth_bad_token.json"
        | "auth_missing.json"
        | "customer_create_invalid_link.json"
        | "customer_create_ok.json"
        | "customer_get_not_found.json"
        | "item_list.json"
        | "item_price_list.json"
        | "item_price_list_permission_denied.json"
        | "malformed_json_body.json"
        | "method_not_found.json" => vec![],
        f if f.starts_with("webhooks/") => vec![],
        "address_create_missing_required.json"
        | "address_create_ok.json"
        | "contact_create_ok.json"
        | "customer_create_duplicate_hubspot_company_id.json"
        | "customer_create_same_customer_name.json"
        | "customer_get_ok.json"
        | "customer_list_by_hubspot_id_empty.json"
        | "customer_list_by_hubspot_id_found.json"
        | "customer_list_by_hubspot_id_found_dict_filters.json"
        | "customer_update_ok.json" => {
            vec!["customer_create_ok.json"]
        }
        "contact_list_by_email.json"
        | "contact_list_by_hubspot_id.json"
        | "contact_list_by_linked_customer.json"
        | "contact_update_ok.json" => vec!["customer_create_ok.json", "contact_create_ok.json"],
        "sales_order_create_missing_customer.json"
        | "sales_order_create_missing_delivery_date.json"
        | "sales_order_create_no_items.json"
        | "sales_order_create_ok.json"
        | "sales_order_create_unknown_customer.json"
        | "sales_order_create_unknown_item.json" => chain(&[]),
        "sales_order_create_duplicate_hubspot_deal_id.json"
        | "sales_order_create_ok_2.json"
        | "sales_order_list_by_hubspot_deal_id.json"
        | "sales_order_submit_put_docstatus.json" => chain(&so1),
        "sales_order_get_submitted.json"
        | "sales_order_update_after_submit_error.json"
        | "sales_order_update_after_submit_not_allowed.json"
        | "sales_invoice_make_from_sales_order.json"
        | "sales_invoice_create_ok.json" => chain(&so1_submitted),
        "sales_invoice_submit_put_docstatus.json" => chain(&si_draft),
        "sales_invoice_get_unpaid.json"
        | "sales_order_get_after_invoice.json"
        | "payment_entry_make_from_sales_invoice.json"
        | "payment_entry_create_ok.json" => chain(&si_unpaid),
        "payment_entry_submit_put_docstatus.json" => chain(&pe_draft),
        "sales_invoice_get_paid.json"
        | "sales_invoice_list_by_customer.json"
        | "sales_order_get_after_payment.json"
        | "sales_invoice_update_after_submit_allowed_field.json" => chain(&paid),
        "sales_order_submit_frappe_client_submit.json"
        | "sales_order_submit_frappe_client_submit_stale_doc.json"
        | "sales_order_cancel_frappe_client_cancel.json"
        | "sales_order_get_cancelled.json" => chain(&so2),
        "sales_order_list_paged.json" => chain(&[
            "sales_order_create_ok.json",
            "sales_order_submit_put_docstatus.json",
            "sales_order_create_ok_2.json",
            "sales_invoice_create_ok.json",
        ]),
        other => panic!("no setup for capture {other}: add it to the table"),
    }
}

/// Keys and JSON types, recursively; numbers distinguish int from float. JSON strings that
/// Frappe nests (`_server_messages`) are compared by the shape of what they hold.
fn shape_diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for k in e.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: missing"));
            }
            for k in a.keys().filter(|k| !e.contains_key(*k)) {
                out.push(format!("{path}.{k}: unexpected (= {})", a[k]));
            }
            for (k, ev) in e {
                if let Some(av) = a.get(k) {
                    if k == "_server_messages" {
                        server_messages_diff(&format!("{path}.{k}"), ev, av, out);
                    } else {
                        shape_diff(&format!("{path}.{k}"), ev, av, out);
                    }
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                out.push(format!(
                    "{path}: {} elements, expected {}",
                    a.len(),
                    e.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                shape_diff(&format!("{path}[{i}]"), ev, av, out);
            }
        }
        (Value::Number(e), Value::Number(a)) => {
            if e.is_f64() != a.is_f64() {
                out.push(format!("{path}: number {a}, expected a number like {e}"));
            }
        }
        (Value::Null, Value::Null)
        | (Value::Bool(_), Value::Bool(_))
        | (Value::String(_), Value::String(_)) => {}
        (e, a) => out.push(format!("{path}: {a} where the capture has {e}")),
    }
}

fn server_messages_diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    let decode = |v: &Value| -> Option<Vec<Value>> {
        let outer: Vec<String> = serde_json::from_str(v.as_str()?).ok()?;
        outer.iter().map(|m| serde_json::from_str(m).ok()).collect()
    };
    match (decode(expected), decode(actual)) {
        (Some(e), Some(a)) => shape_diff(path, &Value::Array(e), &Value::Array(a), out),
        _ => out.push(format!(
            "{path}: not a JSON string of a list of JSON strings: {actual}"
        )),
    }
}

fn capture_files() -> Vec<String> {
    let mut files = Vec::new();
    for (dir, prefix) in [
        (contracts(), ""),
        (contracts().join("webhooks"), "webhooks/"),
    ] {
        for entry in std::fs::read_dir(&dir).expect("contracts dir") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .to_string();
            if !name.ends_with(".json") {
                continue;
            }
            let file = format!("{prefix}{name}");
            // Only request/response pairs; deliveries and the secret are used below.
            if capture(&file).get("response").is_some() {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn every_capture_replays_with_the_captured_status_and_body_shape() {
    let files = capture_files();
    assert!(files.len() >= 57, "only {} captures found", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let fx = Fx::start().await;
        for step in setup(file) {
            fx.step(step).await;
        }
        let cap = capture(file);
        let mut request = cap["request"].clone();
        match file.as_str() {
            "item_price_list_permission_denied.json" => {
                fx.sim.set_denied_doctypes(vec!["Item Price".into()])
            }
            "sales_order_submit_frappe_client_submit.json" => {
                request["body"]["doc"]["modified"] =
                    json!(fx.modified("Sales Order", "SAL-ORD-2026-00002").await);
            }
            "sales_order_submit_frappe_client_submit_stale_doc.json" => {
                // Opened, then someone else saves it: the copy the client submits is stale.
                let opened = fx.modified("Sales Order", "SAL-ORD-2026-00002").await;
                let (status, body) = fx
                    .call(
                        "PUT",
                        "/api/resource/Sales%20Order/SAL-ORD-2026-00002",
                        Some(json!({"po_no": "PO-1"})),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                request["body"]["doc"]["modified"] = json!(opened);
            }
            "sales_order_cancel_frappe_client_cancel.json" | "sales_order_get_cancelled.json" => {
                let (status, body) = fx
                    .call(
                        "PUT",
                        "/api/resource/Sales%20Order/SAL-ORD-2026-00002",
                        Some(json!({"docstatus": 1})),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                if file == "sales_order_get_cancelled.json" {
                    let (status, body) = fx
                        .call(
                            "POST",
                            "/api/method/frappe.client.cancel",
                            Some(json!({"doctype": "Sales Order", "name": "SAL-ORD-2026-00002"})),
                        )
                        .await;
                    assert_eq!(status, 200, "{body}");
                }
            }
            "sales_order_list_paged.json" => {
                // SO 2 submitted before SO 1 is invoiced, as on the site: SO 1 is the newer.
                let (status, body) = fx
                    .call(
                        "PUT",
                        "/api/resource/Sales%20Order/SAL-ORD-2026-00002",
                        Some(json!({"docstatus": 1})),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                fx.step("sales_invoice_submit_put_docstatus.json").await;
            }
            _ => {}
        }
        let (status, body) = fx.replay_request(&request).await;
        let want = cap["response"]["status"].as_u64().expect("status") as u16;
        if status != want {
            failures.push(format!("{file}: status {status}, expected {want}: {body}"));
            continue;
        }
        let mut diffs = Vec::new();
        shape_diff("body", &cap["response"]["body"], &body, &mut diffs);
        if !diffs.is_empty() {
            failures.push(format!("{file}:\n    {}", diffs.join("\n    ")));
        }
        // Where the capture names a document or an error type, the simulator must agree.
        if let Some(exc) = cap["response"]["body"]["exc_type"].as_str()
            && body["exc_type"] != json!(exc)
        {
            failures.push(format!(
                "{file}: exc_type {}, expected {exc}",
                body["exc_type"]
            ));
        }
        for key in ["data", "message"] {
            for field in [
                "name",
                "status",
                "docstatus",
                "grand_total",
                "outstanding_amount",
                "customer",
                "hubspot_deal_id",
            ] {
                let want = &cap["response"]["body"][key][field];
                if !want.is_null()
                    && &body[key][field] != want
                    && !(file.contains("stale") || file.starts_with("webhooks/"))
                {
                    failures.push(format!(
                        "{file}: {key}.{field} = {}, expected {want}",
                        body[key][field]
                    ));
                }
            }
        }
        fx.sim.shutdown().await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} captures differ:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// Poll `check` until it returns `Some`, or fail after `timeout`.
async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A webhook receiver: records every request; `/fail` answers 500.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>,
}

impl Receiver {
    async fn start() -> (Self, String) {
        let me = Self::default();
        async fn record(
            State(r): State<Receiver>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let path = uri.path().to_string();
            let fail = path == "/fail";
            r.got.lock().expect("lock").push((path, headers, body));
            if fail {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
        let app = axum::Router::new()
            .route("/hook", post(record))
            .route("/bare", post(record))
            .route("/fail", post(record))
            .with_state(me.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (me, url)
    }

    fn got(&self) -> Vec<(String, HeaderMap, Bytes)> {
        self.got.lock().expect("lock").clone()
    }
}

fn webhook_secret() -> String {
    capture("webhooks/secret.json")["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_string()
}

/// The document state each captured delivery was rendered from, as another capture shows it.
const DELIVERY_STATE: &[(&str, &str)] = &[
    ("customer_after_insert.json", "customer_create_ok.json"),
    (
        "customer_after_insert_renamed_duplicate_name.json",
        "customer_create_same_customer_name.json",
    ),
    (
        "sales_invoice_on_update_draft_insert.json",
        "sales_invoice_create_ok.json",
    ),
    (
        "sales_invoice_on_update_at_submit.json",
        "sales_invoice_submit_put_docstatus.json",
    ),
    (
        "sales_invoice_on_submit.json",
        "sales_invoice_submit_put_docstatus.json",
    ),
    (
        "sales_invoice_on_change_at_submit_unpaid.json",
        "sales_invoice_get_unpaid.json",
    ),
    (
        "sales_invoice_on_change_paid_after_payment_entry.json",
        "sales_invoice_get_paid.json",
    ),
    (
        "sales_invoice_on_change_update_after_submit.json",
        "sales_invoice_update_after_submit_allowed_field.json",
    ),
];

fn webhook_template(webhook_name: &str) -> String {
    for entry in std::fs::read_dir(contracts().join("webhooks")).expect("dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if name.starts_with("webhook_create_") {
            let cap = capture(&format!("webhooks/{name}"));
            if cap["request"]["body"]["name"] == json!(webhook_name) {
                return cap["request"]["body"]["webhook_json"]
                    .as_str()
                    .expect("template")
                    .to_string();
            }
        }
    }
    panic!("no webhook_create capture for {webhook_name}")
}

#[test]
fn captured_webhook_templates_render_to_the_captured_bytes() {
    let secret = webhook_secret();
    for (delivery, state) in DELIVERY_STATE {
        let d = capture(&format!("webhooks/{delivery}"));
        let template = webhook_template(d["webhook"].as_str().expect("webhook"));
        let doc = &capture(state)["response"]["body"]["data"];
        let body = render_json(&template, doc).expect("render");
        assert_eq!(
            body,
            d["request"]["body_raw"].as_str().expect("raw"),
            "{delivery}"
        );
        let sig = d["request"]["headers"]["X-Frappe-Webhook-Signature"].as_str();
        assert!(
            verify_frappe(&secret, body.as_bytes(), sig).is_ok(),
            "{delivery}: signature"
        );
    }
    // `{{ doc | tojson }}`: sorted keys, Python floats, `<br>` and newlines as Python escapes them.
    let d = capture("webhooks/sales_invoice_on_submit_full_doc.json");
    let raw = d["request"]["body_raw"].as_str().expect("raw");
    let doc: Value = serde_json::from_str(raw).expect("json");
    assert_eq!(
        render_json("{{ doc | tojson }}", &doc).expect("render"),
        raw
    );
    // Non-ASCII is escaped as json.dumps does; key order is the template's.
    let out = render_json(
        r#"{"z": {{ doc.n | tojson }}, "a": 1.50}"#,
        &json!({"n": "Zoë & <Co>"}),
    )
    .expect("render");
    assert_eq!(out, r#"{"z": "Zo\u00eb & <Co>", "a": 1.5}"#);
}

async fn create_webhook(fx: &Fx, file: &str, url: &str) {
    let mut body = capture(file)["request"]["body"].clone();
    body["request_url"] = json!(format!("{url}/hook"));
    let (status, resp) = fx.call("POST", "/api/resource/Webhook", Some(body)).await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn webhooks_fire_per_frappe_event_rules_with_valid_signatures() {
    let (receiver, url) = Receiver::start().await;
    let fx = Fx::start().await;
    for entry in std::fs::read_dir(contracts().join("webhooks")).expect("dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if name.starts_with("webhook_create_") {
            create_webhook(&fx, &format!("webhooks/{name}"), &url).await;
        }
    }
    // No header configured, no security: Frappe sends neither Content-Type nor a signature.
    let (status, resp) = fx
        .call("POST", "/api/resource/Webhook", Some(json!({
            "name": "bare-customer", "webhook_doctype": "Customer", "webhook_docevent": "after_insert",
            "enabled": 1, "request_url": format!("{url}/bare"), "request_structure": "JSON",
            "webhook_json": "{\"name\": {{ doc.name | tojson }}}"
        })))
        .await;
    assert_eq!(status, 200, "{resp}");

    for step in [
        "customer_create_ok.json",
        "address_create_ok.json",
        "sales_order_create_ok.json",
        "sales_order_submit_put_docstatus.json",
    ] {
        fx.step(step).await;
    }
    // The documented invoice/payment flow, over HTTP.
    let (_, made) = fx
        .call(
            "POST",
            "/api/method/erpnext.selling.doctype.sales_order.sales_order.make_sales_invoice",
            Some(json!({"source_name": "SAL-ORD-2026-00001"})),
        )
        .await;
    let (status, si) = fx
        .call(
            "POST",
            "/api/resource/Sales%20Invoice",
            Some(made["message"].clone()),
        )
        .await;
    assert_eq!(status, 200, "{si}");
    let si_name = si["data"]["name"].as_str().expect("name").to_string();
    let si_path = format!("/api/resource/Sales%20Invoice/{si_name}");
    let (status, _) = fx
        .call("PUT", &si_path, Some(json!({"docstatus": 1})))
        .await;
    assert_eq!(status, 200);
    let (_, pe) = fx
        .call(
            "POST",
            "/api/method/erpnext.accounts.doctype.payment_entry.payment_entry.get_payment_entry",
            Some(json!({"dt": "Sales Invoice", "dn": si_name})),
        )
        .await;
    let mut pe = pe["message"].clone();
    pe["mode_of_payment"] = json!("Wire Transfer");
    pe["reference_no"] = json!("HS-PAY-0001");
    let (status, pe) = fx
        .call("POST", "/api/resource/Payment%20Entry", Some(pe))
        .await;
    assert_eq!(status, 200, "{pe}");
    let pe_path = format!(
        "/api/resource/Payment%20Entry/{}",
        pe["data"]["name"].as_str().expect("name")
    );
    let (status, _) = fx
        .call("PUT", &pe_path, Some(json!({"docstatus": 1})))
        .await;
    assert_eq!(status, 200);
    let (status, _) = fx
        .call("PUT", &si_path, Some(json!({"po_no": "HS-DEAL-3001-PO"})))
        .await;
    assert_eq!(status, 200);

    // Dispatch is synchronous with the request, so the log is complete now.
    let log = fx.sim.webhook_deliveries();
    let per = |w: &str| log.iter().filter(|d| d.webhook == w).collect::<Vec<_>>();
    let statuses = |w: &str| {
        per(w)
            .iter()
            .map(|d| serde_json::from_str::<Value>(&d.body).expect("body")["status"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(per("hubspot-sync-customer-after-insert").len(), 1);
    assert_eq!(
        statuses("hubspot-sync-sales-invoice-on-update"),
        vec![json!("Draft"), json!("Unpaid")]
    );
    assert_eq!(
        statuses("hubspot-sync-sales-invoice-on-submit"),
        vec![json!("Unpaid")]
    );
    assert_eq!(
        statuses("hubspot-sync-sales-invoice-on-change"),
        vec![json!("Unpaid"), json!("Paid"), json!("Paid")]
    );
    assert!(
        per("hubspot-sync-sales-invoice-on-update-after-submit").is_empty(),
        "on_update_after_submit never fires"
    );
    assert_eq!(
        per("hubspot-sync-sales-invoice-on-submit-full-doc").len(),
        1
    );
    assert_eq!(log.len(), 9, "{log:#?}");

    let got = eventually(Duration::from_secs(10), "9 deliveries", || {
        let got = receiver.got();
        async move { (got.len() >= 9).then_some(got) }
    })
    .await;
    let secret = webhook_secret();
    for (path, headers, body) in &got {
        let sig = headers
            .get("x-frappe-webhook-signature")
            .and_then(|v| v.to_str().ok());
        if path == "/bare" {
            assert!(
                sig.is_none() && headers.get("content-type").is_none(),
                "{headers:?}"
            );
            continue;
        }
        assert!(
            verify_frappe(&secret, body, sig).is_ok(),
            "signature of {}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
    }
    // The full-document delivery has every field the real one has.
    let full = got
        .iter()
        .map(|(_, _, b)| serde_json::from_slice::<Value>(b).expect("json"))
        .find(|v| v.get("items").is_some())
        .expect("full doc delivery");
    let want: Value = serde_json::from_str(
        capture("webhooks/sales_invoice_on_submit_full_doc.json")["request"]["body_raw"]
            .as_str()
            .expect("raw"),
    )
    .expect("json");
    let keys = |v: &Value| {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(keys(&full), keys(&want));
    assert_eq!(keys(&full["items"][0]), keys(&want["items"][0]));
    assert_eq!(
        keys(&full["payment_schedule"][0]),
        keys(&want["payment_schedule"][0])
    );
    fx.sim.shutdown().await;
}

#[tokio::test]
async fn failed_deliveries_are_attempted_three_times() {
    let (receiver, url) = Receiver::start().await;
    let fx = Fx::start().await;
    let (status, resp) = fx
        .call("POST", "/api/resource/Webhook", Some(json!({
            "name": "failing", "webhook_doctype": "Customer", "webhook_docevent": "after_insert", "enabled": 1,
            "request_url": format!("{url}/fail"), "request_structure": "JSON", "enable_security": 1,
            "webhook_secret": "s3cret", "webhook_json": "{\"name\": {{ doc.name | tojson }}}"
        })))
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp["data"]["webhook_secret"],
        json!("******"),
        "secrets are masked"
    );
    fx.step("customer_create_ok.json").await;
    let delivery = eventually(Duration::from_secs(5), "failed delivery", || {
        let log = fx.sim.webhook_deliveries();
        async move { log.into_iter().find(|d| d.state == DeliveryState::Failed) }
    })
    .await;
    assert_eq!(delivery.attempts.len(), 3);
    assert!(delivery.attempts.iter().all(|a| a.status == Some(500)));
    assert_eq!(receiver.got().len(), 3);
    fx.sim.shutdown().await;
}

#[tokio::test]
async fn faults_answer_5xx_without_effect_add_latency_and_hang_after_the_effect() {
    let fx = Fx::start().await;
    let customer = capture("customer_create_ok.json")["request"]["body"].clone();
    fx.sim.set_faults(FaultConfig {
        seed: 7,
        error_rate: 1.0,
        ..FaultConfig::default()
    });
    let (status, _) = fx
        .call("POST", "/api/resource/Customer", Some(customer.clone()))
        .await;
    assert!([500, 502, 503].contains(&status), "{status}");
    assert!(
        fx.sim.list("Customer").is_empty(),
        "an injected error has no effect"
    );
    assert_eq!(fx.sim.injected().get("error"), Some(&1));
    assert_eq!(fx.sim.calls().get("POST /api/resource/Customer"), Some(&1));
    // The admin API is never faulted.
    let admin = fx
        .http
        .get(format!("{}/_sim/docs/Customer", fx.sim.base_url()))
        .send()
        .await
        .expect("admin");
    assert_eq!(admin.status().as_u16(), 200);

    fx.sim.set_faults(FaultConfig {
        latency_ms: 250,
        ..FaultConfig::default()
    });
    let started = Instant::now();
    let (status, _) = fx.call("GET", "/api/resource/Customer", None).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    fx.sim.set_faults(FaultConfig {
        seed: 1,
        timeout_rate: 1.0,
        hang_ms: 2_000,
        ..FaultConfig::default()
    });
    let hung = fx
        .http
        .post(format!("{}/api/resource/Customer", fx.sim.base_url()))
        .header("Authorization", format!("token {KEY}:{SECRET}"))
        .json(&customer)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    assert_eq!(fx.sim.injected().get("timeout"), Some(&1));
    fx.sim.set_faults(FaultConfig::default());
    // The write went through although the client saw a timeout.
    assert_eq!(fx.sim.list("Customer").len(), 1);
    let (status, body) = fx
        .call("POST", "/api/resource/Customer", Some(customer))
        .await;
    assert_eq!(
        (status, body["exc_type"].clone()),
        (417, json!("UniqueValidationError"))
    );
    fx.sim.shutdown().await;
}

#[tokio::test]
async fn custom_fields_become_known_and_unique_fields() {
    let fx = Fx::with(ErpNextSimConfig {
        custom_fields: CustomFields::None,
        ..config()
    })
    .await;
    let customer = json!({"customer_name": "Initech", "customer_group": "Commercial", "hubspot_company_id": "hs-1"});
    let (status, body) = fx
        .call("POST", "/api/resource/Customer", Some(customer.clone()))
        .await;
    assert_eq!(status, 200);
    assert!(
        body["data"].get("hubspot_company_id").is_none(),
        "unknown fields are ignored"
    );
    let (status, body) = fx
        .call(
            "GET",
            "/api/resource/Customer?filters=%7B%22hubspot_company_id%22%3A%22hs-1%22%7D",
            None,
        )
        .await;
    assert_eq!(
        (status, body["exc_type"].clone()),
        (500, json!("OperationalError"))
    );

    let field = json!({"dt": "Customer", "label": "HubSpot Company ID", "fieldname": "hubspot_company_id", "fieldtype": "Data", "unique": 1, "insert_after": "customer_name"});
    let (status, body) = fx
        .call("POST", "/api/resource/Custom%20Field", Some(field.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], json!("Customer-hubspot_company_id"));
    let (status, body) = fx
        .call("POST", "/api/resource/Custom%20Field", Some(field))
        .await;
    assert_eq!(
        (status, body["exc_type"].clone()),
        (417, json!("ValidationError"))
    );

    let (status, body) = fx
        .call(
            "PUT",
            "/api/resource/Customer/Initech",
            Some(json!({"hubspot_company_id": "hs-1"})),
        )
        .await;
    assert_eq!(
        (status, body["data"]["hubspot_company_id"].clone()),
        (200, json!("hs-1"))
    );
    let (status, body) = fx
        .call(
            "POST",
            "/api/resource/Customer",
            Some(json!({"customer_name": "Other", "hubspot_company_id": "HS-1"})),
        )
        .await;
    assert_eq!(
        (status, body["exc_type"].clone()),
        (417, json!("UniqueValidationError")),
        "unique is case-insensitive"
    );
    assert!(
        body["_server_messages"]
            .as_str()
            .expect("messages")
            .contains("HubSpot Company ID must be unique")
    );
    let (status, body) = fx
        .call(
            "GET",
            "/api/resource/Customer?filters=%7B%22hubspot_company_id%22%3A%22hs-1%22%7D",
            None,
        )
        .await;
    assert_eq!(
        (status, body["data"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    fx.sim.shutdown().await;
}

#[tokio::test]
async fn admin_invoices_pays_and_marks_overdue_with_the_deal_id_copied() {
    let fx = Fx::start().await;
    let (status, _) = fx
        .call("POST", "/api/resource/Custom%20Field", Some(json!({"dt": "Sales Invoice", "label": "HubSpot Deal ID", "fieldname": "hubspot_deal_id", "fieldtype": "Data"})))
        .await;
    assert_eq!(status, 200);
    for step in [
        "customer_create_ok.json",
        "address_create_ok.json",
        "sales_order_create_ok.json",
        "sales_order_submit_put_docstatus.json",
    ] {
        fx.step(step).await;
    }
    let admin = |path: &str| fx.http.post(format!("{}{path}", fx.sim.base_url())).send();
    let si: Value = admin("/_sim/sales-orders/SAL-ORD-2026-00001/invoice")
        .await
        .expect("invoice")
        .json()
        .await
        .expect("json");
    let si_name = si["name"].as_str().expect("name").to_string();
    let invoice = fx.sim.get("Sales Invoice", &si_name).expect("invoice");
    assert_eq!(
        (
            invoice["status"].clone(),
            invoice["hubspot_deal_id"].clone()
        ),
        (json!("Unpaid"), json!("hs-deal-3001"))
    );
    let order = fx
        .sim
        .get("Sales Order", "SAL-ORD-2026-00001")
        .expect("order");
    assert_eq!(
        (order["status"].clone(), order["per_billed"].clone()),
        (json!("To Deliver"), json!(100.0))
    );

    let overdue: Value = admin(&format!("/_sim/invoices/{si_name}/overdue"))
        .await
        .expect("overdue")
        .json()
        .await
        .expect("json");
    assert_eq!(overdue["status"], json!("Overdue"));
    let paid: Value = admin(&format!("/_sim/invoices/{si_name}/pay"))
        .await
        .expect("pay")
        .json()
        .await
        .expect("json");
    assert_eq!(paid["invoice_status"], json!("Paid"));
    let (status, body) = fx.call("GET", "/api/resource/Sales%20Invoice?filters=%5B%5B%22hubspot_deal_id%22%2C%22%3D%22%2C%22hs-deal-3001%22%5D%5D&fields=%5B%22name%22%2C%22status%22%2C%22outstanding_amount%22%5D", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!([{"name": si_name, "status": "Paid", "outstanding_amount": 0.0}])
    );
    // A submitted order with a submitted invoice cannot be cancelled.
    let (status, body) = fx
        .call(
            "POST",
            "/api/method/frappe.client.cancel",
            Some(json!({"doctype": "Sales Order", "name": "SAL-ORD-2026-00001"})),
        )
        .await;
    assert_eq!(
        (status, body["exc_type"].clone()),
        (417, json!("LinkExistsError"))
    );
    // A stale `modified` in a PUT is refused like a stale submit.
    let (status, body) = fx
        .call(
            "PUT",
            "/api/resource/Customer/Globex%20Corporation",
            Some(json!({"website": "x", "modified": "2026-01-01 00:00:00.000000"})),
        )
        .await;
    assert_eq!(
        (status, body["exc_type"].clone()),
        (417, json!("TimestampMismatchError"))
    );
    fx.sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Live findings (`live-findings/`): what a full run against a real Frappe 15.92.0 / ERPNext
// 15.92.1 site showed that an earlier simulator forgave. Each test brings the simulator into the
// state the capture was taken in (customer "Capture Address Co" with its billing address, the
// naming series at the captured number), replays the captured request and compares the answer,
// then pins what the capture implies beyond itself (the same rule elsewhere, and the way out).
// ---------------------------------------------------------------------------------------------

fn live(file: &str) -> Value {
    capture(&format!("live-findings/{file}"))
}

impl Fx {
    /// A simulator whose clock starts just before the live captures were taken.
    async fn live() -> Self {
        let fx = Self::with(ErpNextSimConfig {
            clock_start: Some("2026-12-07 01:59:50".into()),
            ..config()
        })
        .await;
        fx.ok(
            "POST",
            "/api/resource/Customer",
            json!({
                "customer_name": "Capture Address Co", "customer_group": "Commercial",
                "territory": "All Territories"
            }),
        )
        .await;
        fx.ok(
            "POST",
            "/api/resource/Address",
            json!({
                "address_title": "Capture Address Co", "address_type": "Billing",
                "address_line1": "1 Capture Way", "city": "Springfield", "country": "United States",
                "links": [{"link_doctype": "Customer", "link_name": "Capture Address Co"}]
            }),
        )
        .await;
        fx
    }

    /// An authenticated call that must succeed; returns `data` (or `message`).
    async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (method != "GET").then_some(body);
        let (status, resp) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {resp}");
        match resp.get("data") {
            Some(data) => data.clone(),
            None => resp["message"].clone(),
        }
    }

    /// An authenticated call that must fail with `status` and `exc_type`; returns the body.
    async fn refused(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
        exc_type: &str,
    ) -> Value {
        let (got, resp) = self.call(method, path, body).await;
        assert_eq!(
            (got, resp["exc_type"].as_str()),
            (status, Some(exc_type)),
            "{method} {path}: {resp}"
        );
        resp
    }

    /// Replay a live capture: the status, the body shape and the exception must be the
    /// captured ones. Returns the body.
    async fn replay_live(&self, file: &str) -> Value {
        let mut cap = live(file);
        // Captured with another API user's key; the request is the same with ours.
        cap["request"]["headers"]["Authorization"] =
            json!(format!("token {KEY}:<REDACTED_API_SECRET>"));
        let (status, body) = self.replay_request(&cap["request"]).await;
        let want = &cap["response"];
        assert_eq!(
            status,
            want["status"].as_u64().expect("status") as u16,
            "{file}: {body}"
        );
        let mut diffs = Vec::new();
        shape_diff("body", &want["body"], &body, &mut diffs);
        assert!(diffs.is_empty(), "{file}:\n{}", diffs.join("\n"));
        for key in ["exc_type", "exception", "_exc_source"] {
            assert_eq!(body[key], want["body"][key], "{file}: {key}");
        }
        if let Some(want_messages) = want["body"]["_server_messages"].as_str() {
            assert_eq!(
                messages(&body),
                messages(&json!({"_server_messages": want_messages})),
                "{file}: _server_messages"
            );
        }
        body
    }

    async fn submit(&self, doctype: &str, name: &str) -> Value {
        self.ok(
            "PUT",
            &format!("/api/resource/{}/{name}", doctype.replace(' ', "%20")),
            json!({"docstatus": 1}),
        )
        .await
    }
}

/// The `message`s of a body's `_server_messages`.
fn messages(body: &Value) -> Vec<String> {
    let Some(raw) = body["_server_messages"].as_str() else {
        return Vec::new();
    };
    let outer: Vec<String> = serde_json::from_str(raw).expect("_server_messages");
    outer
        .iter()
        .map(|m| {
            serde_json::from_str::<Value>(m).expect("message")["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Fields whose value differs between the capture and the simulator's answer.
fn value_diff(what: &str, want: &Value, got: &Value, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter(|k| want[**k] != got[**k])
        .map(|k| format!("{what}.{k} = {}, captured {}", got[*k], want[*k]))
        .collect()
}

const TOTALS: &[&str] = &[
    "currency",
    "conversion_rate",
    "price_list_currency",
    "plc_conversion_rate",
    "total_qty",
    "total",
    "base_total",
    "net_total",
    "base_net_total",
    "total_taxes_and_charges",
    "base_total_taxes_and_charges",
    "grand_total",
    "base_grand_total",
    "rounding_adjustment",
    "base_rounding_adjustment",
    "rounded_total",
    "base_rounded_total",
    "in_words",
    "base_in_words",
    "amount_eligible_for_commission",
    "taxes",
    "taxes_and_charges",
    "customer_address",
    "customer_group",
    "territory",
    "status",
];

const ROW_PRICES: &[&str] = &[
    "qty",
    "price_list_rate",
    "base_price_list_rate",
    "margin_type",
    "margin_rate_or_amount",
    "rate_with_margin",
    "discount_percentage",
    "discount_amount",
    "base_rate_with_margin",
    "rate",
    "amount",
    "base_rate",
    "base_amount",
    "net_rate",
    "net_amount",
    "base_net_rate",
    "base_net_amount",
];

const SCHEDULE: &[&str] = &[
    "due_date",
    "invoice_portion",
    "payment_amount",
    "outstanding",
    "base_payment_amount",
    "base_outstanding",
];

/// The captured document's totals, row prices and schedule equal the simulator's.
fn assert_same_amounts(file: &str, want: &Value, got: &Value) {
    let mut diffs = value_diff("doc", want, got, TOTALS);
    diffs.extend(value_diff(
        "items[0]",
        &want["items"][0],
        &got["items"][0],
        ROW_PRICES,
    ));
    if want
        .get("payment_schedule")
        .is_some_and(|s| s[0].is_object())
    {
        diffs.extend(value_diff(
            "payment_schedule[0]",
            &want["payment_schedule"][0],
            &got["payment_schedule"][0],
            SCHEDULE,
        ));
    }
    assert!(diffs.is_empty(), "{file}:\n{}", diffs.join("\n"));
}

const ADDRESSES: &str = "/api/resource/Address";

fn list_path(base: &str, filters: Value, fields: Value, order_by: Option<&str>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("filters", &filters.to_string());
    q.append_pair("fields", &fields.to_string());
    if let Some(o) = order_by {
        q.append_pair("order_by", o);
    }
    format!("{base}?{}", q.finish())
}

fn linked_to(customer: &str) -> Value {
    json!([
        ["Dynamic Link", "link_doctype", "=", "Customer"],
        ["Dynamic Link", "link_name", "=", customer]
    ])
}

/// Finding 1: a child-table filter joins the child table, and MariaDB resolves an unqualified
/// `ORDER BY` column against every table: 500 `OperationalError` 1052 when both have it.
#[tokio::test]
async fn child_table_filter_with_unqualified_order_by_is_a_500_ambiguous_column() {
    let fx = Fx::live().await;
    let body = fx
        .replay_live("address_list_by_linked_customer_order_by_creation_ambiguous.json")
        .await;
    assert_eq!(body.get("data"), None);
    let body = fx
        .replay_live("address_list_by_linked_customer_order_by_qualified.json")
        .await;
    assert_eq!(
        body,
        live("address_list_by_linked_customer_order_by_qualified.json")["response"]["body"]
    );

    let ambiguous = |column: &str| {
        format!(
            "pymysql.err.OperationalError: (1052, \"Column '{column}' in ORDER BY is ambiguous\")"
        )
    };
    // Any column both tables have (the standard ones), in any position, for any doctype.
    for (base, filters, order_by, column) in [
        (
            ADDRESSES,
            linked_to("Capture Address Co"),
            "modified desc",
            "modified",
        ),
        (
            ADDRESSES,
            linked_to("Capture Address Co"),
            "address_type asc, idx desc",
            "idx",
        ),
        (
            ADDRESSES,
            linked_to("Capture Address Co"),
            "`creation` asc",
            "creation",
        ),
        (
            "/api/resource/Contact",
            json!([["Dynamic Link", "link_name", "=", "Capture Address Co"]]),
            "creation desc",
            "creation",
        ),
        (
            "/api/resource/Contact",
            json!([["Contact Email", "email_id", "=", "a@b.test"]]),
            "email_id asc",
            "email_id",
        ),
    ] {
        let path = list_path(base, filters, json!(["name"]), Some(order_by));
        let body = fx
            .refused("GET", &path, None, 500, "OperationalError")
            .await;
        assert_eq!(body["exception"], json!(ambiguous(column)), "{order_by}");
    }
    // A name of the select list is resolved there first; an alias hides the column's name.
    let path = list_path(
        ADDRESSES,
        linked_to("Capture Address Co"),
        json!(["name"]),
        Some("name desc"),
    );
    let data = fx.ok("GET", &path, Value::Null).await;
    assert_eq!(data, json!([{"name": "Capture Address Co-Billing"}]));
    let path = list_path(
        ADDRESSES,
        linked_to("Capture Address Co"),
        json!(["name", "creation"]),
        Some("creation asc"),
    );
    fx.ok("GET", &path, Value::Null).await;
    let path = list_path(
        ADDRESSES,
        linked_to("Capture Address Co"),
        json!(["name as address"]),
        Some("name asc"),
    );
    let body = fx
        .refused("GET", &path, None, 500, "OperationalError")
        .await;
    assert_eq!(body["exception"], json!(ambiguous("name")));
    // A column only one table has, a qualified column, or no join at all: no ambiguity.
    for (filters, order_by) in [
        (linked_to("Capture Address Co"), "address_type asc"),
        (
            linked_to("Capture Address Co"),
            "`tabDynamic Link`.link_name asc",
        ),
        (
            linked_to("Capture Address Co"),
            "`tabAddress`.`modified` desc",
        ),
        (
            json!([["address_type", "=", "Billing"]]),
            "creation asc, name asc",
        ),
    ] {
        let path = list_path(ADDRESSES, filters, json!(["name"]), Some(order_by));
        let data = fx.ok("GET", &path, Value::Null).await;
        assert_eq!(data.as_array().map(Vec::len), Some(1), "{order_by}");
    }
    // Sorting by a table the query does not have is Frappe's own refusal.
    let path = list_path(
        ADDRESSES,
        linked_to("Capture Address Co"),
        json!(["name"]),
        Some("`tabContact`.creation asc"),
    );
    let body = fx.refused("GET", &path, None, 417, "ValidationError").await;
    assert_eq!(
        messages(&body),
        vec!["Please select atleast 1 column from Contact to sort/group"]
    );

    // Fields: Frappe qualifies plain ones itself, so they are never ambiguous; a field of the
    // child table joins it and reads the joined row.
    let path = list_path(
        ADDRESSES,
        json!([["address_type", "=", "Billing"]]),
        json!(["name", "creation", "`tabDynamic Link`.link_name"]),
        None,
    );
    let data = fx.ok("GET", &path, Value::Null).await;
    assert_eq!(data[0]["link_name"], json!("Capture Address Co"));
    assert!(data[0]["creation"].is_string());
    // The join lists an address once per matching link, as MariaDB does.
    fx.ok(
        "POST",
        "/api/resource/Customer",
        json!({"customer_name": "Second Co", "customer_group": "Commercial"}),
    )
    .await;
    fx.ok(
        "PUT",
        "/api/resource/Address/Capture%20Address%20Co-Billing",
        json!({"links": [
            {"link_doctype": "Customer", "link_name": "Capture Address Co"},
            {"link_doctype": "Customer", "link_name": "Second Co"}
        ]}),
    )
    .await;
    let path = list_path(
        ADDRESSES,
        json!([["Dynamic Link", "link_doctype", "=", "Customer"]]),
        json!(["name"]),
        Some("`tabAddress`.creation asc"),
    );
    let data = fx.ok("GET", &path, Value::Null).await;
    assert_eq!(
        data,
        json!([{"name": "Capture Address Co-Billing"}, {"name": "Capture Address Co-Billing"}])
    );
    fx.sim.shutdown().await;
}

const ACCOUNTS_SETTINGS: &str = "/api/resource/Accounts%20Settings/Accounts%20Settings";
const SALES_ORDERS: &str = "/api/resource/Sales%20Order";
const SALES_INVOICES: &str = "/api/resource/Sales%20Invoice";
const MAKE_INVOICE: &str =
    "/api/method/erpnext.selling.doctype.sales_order.sales_order.make_sales_invoice";

/// Finding 2: over REST a template without `taxes` rows gives no tax rows, unless Accounts
/// Settings says so; `make_sales_invoice` applies the template.
#[tokio::test]
async fn tax_template_without_rows_adds_no_taxes_unless_accounts_settings_say_so() {
    let fx = Fx::live().await;
    let settings = fx
        .replay_live("accounts_settings_taxes_from_template_flag.json")
        .await;
    let want = &live("accounts_settings_taxes_from_template_flag.json")["response"]["body"];
    let diffs = value_diff(
        "data",
        &want["data"],
        &settings["data"],
        &[
            "name",
            "docstatus",
            "idx",
            "add_taxes_from_item_tax_template",
            "add_taxes_from_taxes_and_charges_template",
            "allow_multi_currency_invoices_against_single_party_account",
            "doctype",
        ],
    );
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let rows = fx.replay_live("taxes_from_template_method.json").await;
    assert_eq!(
        rows,
        live("taxes_from_template_method.json")["response"]["body"]
    );

    fx.sim.set_series("SAL-ORD-2026-", 46);
    let file = "sales_order_create_tax_template_without_rows.json";
    let order = fx.replay_live(file).await;
    assert_same_amounts(
        file,
        &live(file)["response"]["body"]["data"],
        &order["data"],
    );
    assert_eq!(order["data"]["name"], json!("SAL-ORD-2026-00047"));
    assert_eq!(order["data"]["taxes"], json!([]));
    assert_eq!(order["data"]["grand_total"], order["data"]["net_total"]);

    // The invoice made from that order gets the template's rows: 100 ordered, 108 invoiced.
    fx.submit("Sales Order", "SAL-ORD-2026-00047").await;
    let made = fx
        .ok(
            "POST",
            MAKE_INVOICE,
            json!({"source_name": "SAL-ORD-2026-00047"}),
        )
        .await;
    assert_eq!(made["taxes"].as_array().map(Vec::len), Some(1), "{made}");
    assert_eq!(made["taxes"][0]["rate"], json!(8.0));
    assert_eq!(made["taxes"][0]["tax_amount"], json!(8.0));
    assert_eq!(
        made["taxes"][0]["item_wise_tax_detail"],
        json!("{\"SKU-WIDGET\":[8.0,8.0]}")
    );
    assert_eq!(
        (
            made["grand_total"].clone(),
            made["outstanding_amount"].clone()
        ),
        (json!(108.0), json!(108.0))
    );
    let invoice = fx.ok("POST", SALES_INVOICES, made).await;
    assert_eq!(invoice["grand_total"], json!(108.0));

    // Both automatic settings at once are refused; the template flag alone adds the rows.
    let body = fx
        .refused(
            "PUT",
            ACCOUNTS_SETTINGS,
            Some(json!({"add_taxes_from_taxes_and_charges_template": 1})),
            417,
            "ValidationError",
        )
        .await;
    assert!(
        messages(&body)[0].starts_with("You cannot enable both the settings"),
        "{body}"
    );
    fx.ok(
        "PUT",
        ACCOUNTS_SETTINGS,
        json!({"add_taxes_from_item_tax_template": 0, "add_taxes_from_taxes_and_charges_template": 1}),
    )
    .await;
    let order = fx
        .ok("POST", SALES_ORDERS, live(file)["request"]["body"].clone())
        .await;
    assert_eq!(order["taxes"][0]["account_head"], json!("Sales Tax - ATL"));
    assert_eq!(
        (
            order["total_taxes_and_charges"].clone(),
            order["grand_total"].clone()
        ),
        (json!(8.0), json!(108.0))
    );
    // Rows the client sends are kept as sent (and computed), whatever the settings.
    let mut body = live(file)["request"]["body"].clone();
    body["taxes"] = json!([{"charge_type": "On Net Total", "account_head": "Sales Tax - ATL", "description": "Tax", "rate": 5}]);
    let order = fx.ok("POST", SALES_ORDERS, body).await;
    assert_eq!(order["grand_total"], json!(105.0));
    fx.sim.shutdown().await;
}

/// Finding 5: a EUR order for a customer whose receivable account is in USD is accepted at the
/// exchange rate, its invoice is refused; a EUR receivable account on the customer (with EUR as
/// its billing currency) makes it invoiceable and payable.
#[tokio::test]
async fn eur_invoice_needs_a_eur_receivable_account_on_the_customer() {
    let fx = Fx::live().await;
    fx.sim.set_series("SAL-ORD-2026-", 47);
    let file = "sales_order_create_eur_customer_without_eur_account.json";
    let order = fx.replay_live(file).await;
    assert_same_amounts(
        file,
        &live(file)["response"]["body"]["data"],
        &order["data"],
    );
    assert_eq!(order["data"]["name"], json!("SAL-ORD-2026-00048"));
    fx.submit("Sales Order", "SAL-ORD-2026-00048").await;

    let file = "sales_invoice_make_from_eur_sales_order.json";
    let made = fx.replay_live(file).await;
    let want = &live(file)["response"]["body"]["message"];
    assert_same_amounts(file, want, &made["message"]);
    let diffs = value_diff(
        "message",
        want,
        &made["message"],
        &[
            "debit_to",
            "party_account_currency",
            "outstanding_amount",
            "due_date",
            "posting_date",
        ],
    );
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));

    let body = fx
        .replay_live("sales_invoice_insert_eur_party_account_currency.json")
        .await;
    assert!(body.get("data").is_none());
    assert!(fx.sim.list("Sales Invoice").is_empty());

    // The way out: a EUR receivable account on the customer, with EUR as billing currency.
    let customer = "/api/resource/Customer/Capture%20Address%20Co";
    let eur_account = json!([{"company": "Acme Test Ltd", "account": "Debtors EUR - ATL"}]);
    let body = fx
        .refused(
            "PUT",
            customer,
            Some(json!({"accounts": eur_account})),
            417,
            "ValidationError",
        )
        .await;
    assert_eq!(
        messages(&body),
        vec![
            "Receivable Account: <strong>Debtors EUR - ATL</strong> (<strong>EUR</strong>) must be in either customer billing currency: <strong>None</strong> or Company default currency: <strong>USD</strong>"
        ]
    );
    fx.refused(
        "PUT",
        customer,
        Some(json!({"default_currency": "EUR", "accounts": [{"company": "Acme Test Ltd", "account": "Debtors CHF - ATL"}]})),
        417,
        "LinkValidationError",
    )
    .await;
    let saved = fx
        .ok(
            "PUT",
            customer,
            json!({"default_currency": "EUR", "accounts": eur_account}),
        )
        .await;
    assert_eq!(saved["accounts"][0]["account"], json!("Debtors EUR - ATL"));
    let account = fx
        .ok(
            "GET",
            "/api/resource/Account/Debtors%20EUR%20-%20ATL",
            Value::Null,
        )
        .await;
    assert_eq!(
        (
            account["account_currency"].clone(),
            account["account_type"].clone()
        ),
        (json!("EUR"), json!("Receivable"))
    );

    let made = fx
        .ok(
            "POST",
            MAKE_INVOICE,
            json!({"source_name": "SAL-ORD-2026-00048"}),
        )
        .await;
    assert_eq!(
        (
            made["debit_to"].clone(),
            made["party_account_currency"].clone(),
            made["outstanding_amount"].clone()
        ),
        (json!("Debtors EUR - ATL"), json!("EUR"), json!(50.0))
    );
    let invoice = fx.ok("POST", SALES_INVOICES, made).await;
    let name = invoice["name"].as_str().expect("name").to_string();
    let submitted = fx.submit("Sales Invoice", &name).await;
    assert_eq!(submitted["status"], json!("Unpaid"));
    fx.sim.pay_invoice(&name, None).expect("pay");
    let paid = fx.sim.get("Sales Invoice", &name).expect("invoice");
    assert_eq!(
        (paid["status"].clone(), paid["outstanding_amount"].clone()),
        (json!("Paid"), json!(0.0))
    );

    // Such a customer trades in EUR only; a currency without a rate is refused everywhere.
    let mut usd =
        live("sales_order_create_eur_customer_without_eur_account.json")["request"]["body"].clone();
    usd["currency"] = json!("USD");
    let body = fx
        .refused(
            "POST",
            SALES_ORDERS,
            Some(usd.clone()),
            417,
            "InvalidCurrency",
        )
        .await;
    assert_eq!(
        messages(&body),
        vec!["Accounting Entry for Customer: Capture Address Co can only be made in currency: EUR"]
    );
    let mut cad = usd;
    cad["customer"] = json!("Second Co");
    cad["currency"] = json!("CAD");
    fx.ok(
        "POST",
        "/api/resource/Customer",
        json!({"customer_name": "Second Co", "customer_group": "Commercial"}),
    )
    .await;
    let body = fx
        .refused("POST", SALES_ORDERS, Some(cad), 417, "ValidationError")
        .await;
    assert_eq!(
        messages(&body),
        vec![
            "Exchange Rate is mandatory. Maybe Currency Exchange record is not created for CAD to USD."
        ]
    );
    fx.sim.shutdown().await;
}

/// A customer's ledger fixes its receivable currency: once it has a USD invoice, a EUR account
/// is refused (`validate_party_gle_currency`), and later EUR invoices book on the USD account.
#[tokio::test]
async fn a_customer_with_usd_ledger_entries_cannot_switch_to_a_eur_account() {
    let fx = Fx::live().await;
    let mut body =
        live("sales_order_create_eur_customer_without_eur_account.json")["request"]["body"].clone();
    body["currency"] = json!("USD");
    let order = fx.ok("POST", SALES_ORDERS, body.clone()).await;
    let so = order["name"].as_str().expect("name").to_string();
    fx.submit("Sales Order", &so).await;
    let invoice = fx.sim.invoice_sales_order(&so).expect("invoice");
    assert_eq!(
        fx.sim.get("Sales Invoice", &invoice).expect("invoice")["status"],
        json!("Unpaid")
    );
    let body_eur = fx
        .refused(
            "PUT",
            "/api/resource/Customer/Capture%20Address%20Co",
            Some(json!({"default_currency": "EUR", "accounts": [{"company": "Acme Test Ltd", "account": "Debtors EUR - ATL"}]})),
            417,
            "InvalidAccountCurrency",
        )
        .await;
    assert_eq!(
        messages(&body_eur),
        vec![
            "<strong>Customer</strong> <strong>Capture Address Co</strong> has accounting entries in currency <strong>USD</strong> for company <strong>Acme Test Ltd</strong>. Please select a receivable or payable account with currency <strong>USD</strong>."
        ]
    );
    // With USD ledger entries the party-account check no longer applies.
    body["currency"] = json!("EUR");
    let order = fx.ok("POST", SALES_ORDERS, body).await;
    let so = order["name"].as_str().expect("name").to_string();
    fx.submit("Sales Order", &so).await;
    let made = fx
        .ok("POST", MAKE_INVOICE, json!({"source_name": so}))
        .await;
    let invoice = fx.ok("POST", SALES_INVOICES, made).await;
    assert_eq!(
        (
            invoice["debit_to"].clone(),
            invoice["outstanding_amount"].clone()
        ),
        (json!("Debtors - ATL"), json!(54.0))
    );
    fx.sim.shutdown().await;
}

/// Finding 4: the amendment of a cancelled order copies the unique `hubspot_deal_id`, which the
/// unique index refuses whatever the other order's docstatus; amendments are named `<from>-1`.
#[tokio::test]
async fn amending_a_cancelled_order_with_a_unique_deal_id_is_refused() {
    let fx = Fx::live().await;
    fx.sim.set_series("SAL-ORD-2026-", 48);
    let cap = live("sales_order_amend_cancelled_with_unique_hubspot_deal_id.json");
    let original = json!({
        "customer": "Capture Address Co", "company": "Acme Test Ltd",
        "transaction_date": "2026-12-07", "delivery_date": "2026-12-21", "currency": "USD",
        "selling_price_list": "Standard Selling", "set_warehouse": "Stores - ATL",
        "hubspot_deal_id": "990000000001",
        "items": [{"item_code": "SKU-WIDGET", "qty": 1, "rate": 25}]
    });
    let order = fx.ok("POST", SALES_ORDERS, original).await;
    assert_eq!(order["name"], cap["request"]["body"]["amended_from"]);
    fx.submit("Sales Order", "SAL-ORD-2026-00049").await;
    let cancelled = fx
        .ok(
            "POST",
            "/api/method/frappe.client.cancel",
            json!({"doctype": "Sales Order", "name": "SAL-ORD-2026-00049"}),
        )
        .await;
    assert_eq!(
        (cancelled["docstatus"].clone(), cancelled["status"].clone()),
        (json!(2), json!("Cancelled"))
    );

    fx.replay_live("sales_order_amend_cancelled_with_unique_hubspot_deal_id.json")
        .await;
    assert!(fx.sim.get("Sales Order", "SAL-ORD-2026-00049-1").is_none());

    // Without the deal ID the amendment goes in, named after what it amends, outside the series.
    let mut amendment = cap["request"]["body"].clone();
    amendment
        .as_object_mut()
        .expect("body")
        .remove("hubspot_deal_id");
    let amended = fx.ok("POST", SALES_ORDERS, amendment.clone()).await;
    assert_eq!(
        (
            amended["name"].clone(),
            amended["amended_from"].clone(),
            amended["docstatus"].clone(),
            amended["status"].clone()
        ),
        (
            json!("SAL-ORD-2026-00049-1"),
            json!("SAL-ORD-2026-00049"),
            json!(0),
            json!("Draft")
        )
    );
    let next = fx
        .ok(
            "POST",
            SALES_ORDERS,
            order_body(json!([{"item_code": "SKU-WIDGET", "qty": 1, "rate": 25}])),
        )
        .await;
    assert_eq!(next["name"], json!("SAL-ORD-2026-00050"));
    // Only a cancelled document can be amended; an amendment of an amendment counts on.
    amendment["amended_from"] = json!("SAL-ORD-2026-00049-1");
    let body = fx
        .refused(
            "POST",
            SALES_ORDERS,
            Some(amendment.clone()),
            417,
            "ValidationError",
        )
        .await;
    assert!(
        messages(&body)[0].ends_with("cannot be amended because it is not cancelled. Please cancel the document before creating an amendment."),
        "{body}"
    );
    fx.submit("Sales Order", "SAL-ORD-2026-00049-1").await;
    fx.ok(
        "POST",
        "/api/method/frappe.client.cancel",
        json!({"doctype": "Sales Order", "name": "SAL-ORD-2026-00049-1"}),
    )
    .await;
    let again = fx.ok("POST", SALES_ORDERS, amendment).await;
    assert_eq!(again["name"], json!("SAL-ORD-2026-00049-2"));
    fx.sim.shutdown().await;
}

/// A Sales Order of "Capture Address Co" with these rows (`{item_code, qty, rate}`).
fn order_body(items: Value) -> Value {
    json!({"customer": "Capture Address Co", "delivery_date": "2026-12-21", "items": items})
}

/// The Webhook naming rule: `autoname: prompt`, so a Webhook without a `name` is refused; its
/// doctype and event are `set_only_once`.
#[tokio::test]
async fn webhook_needs_a_name_and_keeps_its_event() {
    let fx = Fx::live().await;
    fx.replay_live("webhook_create_without_name.json").await;
    assert!(fx.sim.list("Webhook").is_empty());
    let mut body = live("webhook_create_without_name.json")["request"]["body"].clone();
    body["name"] = json!("l2l-sales-order-on-cancel");
    let hook = fx.ok("POST", "/api/resource/Webhook", body).await;
    assert_eq!(hook["name"], json!("l2l-sales-order-on-cancel"));
    let path = "/api/resource/Webhook/l2l-sales-order-on-cancel";
    let body = fx
        .refused(
            "PUT",
            path,
            Some(json!({"webhook_docevent": "on_submit"})),
            417,
            "CannotChangeConstantError",
        )
        .await;
    assert_eq!(
        messages(&body),
        vec!["Value cannot be changed for <strong>Doc Event</strong>"]
    );
    let updated = fx
        .ok(
            "PUT",
            path,
            json!({"enabled": 1, "request_url": "http://127.0.0.1:9/other"}),
        )
        .await;
    assert_eq!(updated["request_url"], json!("http://127.0.0.1:9/other"));
    fx.sim.shutdown().await;
}

/// The smaller finding: ERPNext rounds a USD or EUR total to the cent, not to the unit, so a
/// fresh invoice with cents is Unpaid (outstanding = total); Partly Paid needs a payment.
#[tokio::test]
async fn a_fresh_invoice_with_cents_is_unpaid() {
    let fx = Fx::live().await;
    let order = fx
        .ok(
            "POST",
            SALES_ORDERS,
            order_body(json!([{"item_code": "SKU-WIDGET", "qty": 3, "rate": 12.345}])),
        )
        .await;
    assert_eq!(
        (
            order["grand_total"].clone(),
            order["rounded_total"].clone(),
            order["rounding_adjustment"].clone()
        ),
        (json!(37.02), json!(37.02), json!(0.0)),
        "the rate 12.345 is 12.34 (banker's rounding), 3 of them 37.02, rounded to the cent"
    );
    let so = order["name"].as_str().expect("name").to_string();
    fx.submit("Sales Order", &so).await;
    let invoice = fx.sim.invoice_sales_order(&so).expect("invoice");
    let si = fx.sim.get("Sales Invoice", &invoice).expect("invoice");
    assert_eq!(
        (
            si["status"].clone(),
            si["outstanding_amount"].clone(),
            si["in_words"].clone()
        ),
        (
            json!("Unpaid"),
            json!(37.02),
            json!("USD Thirty Seven and Two Cent only.")
        )
    );
    fx.sim.pay_invoice(&invoice, Some(10.0)).expect("pay");
    let si = fx.sim.get("Sales Invoice", &invoice).expect("invoice");
    assert_eq!(
        (si["status"].clone(), si["outstanding_amount"].clone()),
        (json!("Partly Paid"), json!(27.02))
    );

    // GBP has no smallest fraction on a new site: its totals round to the pound.
    fx.ok(
        "POST",
        "/api/resource/Customer",
        json!({"customer_name": "Pound Co", "customer_group": "Commercial", "default_currency": "GBP",
               "accounts": [{"company": "Acme Test Ltd", "account": "Debtors GBP - ATL"}]}),
    )
    .await;
    let mut body = order_body(json!([{"item_code": "SKU-WIDGET", "qty": 1, "rate": 12.34}]));
    body["customer"] = json!("Pound Co");
    body["currency"] = json!("GBP");
    let order = fx.ok("POST", SALES_ORDERS, body).await;
    assert_eq!(
        (
            order["conversion_rate"].clone(),
            order["rounded_total"].clone(),
            order["rounding_adjustment"].clone()
        ),
        (json!(1.27), json!(12.0), json!(-0.34))
    );
    let so = order["name"].as_str().expect("name").to_string();
    fx.submit("Sales Order", &so).await;
    let invoice = fx.sim.invoice_sales_order(&so).expect("invoice");
    let si = fx.sim.get("Sales Invoice", &invoice).expect("invoice");
    assert_eq!(
        (
            si["status"].clone(),
            si["outstanding_amount"].clone(),
            si["debit_to"].clone()
        ),
        (json!("Unpaid"), json!(12.0), json!("Debtors GBP - ATL"))
    );
    fx.sim.shutdown().await;
}

/// The smaller finding on `price_list_rate`: ERPNext fills it from the Item Price when the
/// client sends only a rate (the captured orders), books the difference as margin or discount,
/// and, with no Item Price, adds one at the rate (Stock Settings as the setup wizard leaves
/// them) while the row keeps 0.
#[tokio::test]
async fn rows_get_the_price_list_rate_and_a_missing_item_price_is_added() {
    let fx = Fx::start().await;
    for step in ["customer_create_ok.json", "address_create_ok.json"] {
        fx.step(step).await;
    }
    let file = "sales_order_create_ok.json";
    let order = fx.step(file).await;
    let want = &capture(file)["response"]["body"]["data"];
    for i in 0..2 {
        let diffs = value_diff(
            &format!("items[{i}]"),
            &want["items"][i],
            &order["data"]["items"][i],
            ROW_PRICES,
        );
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    }
    let mut body = capture(file)["request"]["body"].clone();
    body["hubspot_deal_id"] = json!("hs-deal-below-list");
    body["items"] = json!([{"item_code": "SKU-WIDGET", "qty": 2, "rate": 20}]);
    let order = fx.ok("POST", SALES_ORDERS, body.clone()).await;
    let row = &order["items"][0];
    assert_eq!(
        (
            row["price_list_rate"].clone(),
            row["discount_amount"].clone(),
            row["margin_type"].clone(),
            row["rate"].clone()
        ),
        (json!(25.0), json!(5.0), json!(""), json!(20.0))
    );

    let item = json!({"item_code": "SKU-NEW", "item_name": "New", "item_group": "Products", "stock_uom": "Nos"});
    fx.ok("POST", "/api/resource/Item", item).await;
    body["hubspot_deal_id"] = json!("hs-deal-new-item-1");
    body["items"] = json!([{"item_code": "SKU-NEW", "qty": 1, "rate": 99}]);
    let (status, resp) = fx.call("POST", SALES_ORDERS, Some(body.clone())).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["data"]["items"][0]["price_list_rate"], json!(0.0));
    assert_eq!(
        messages(&resp),
        vec!["Item Price added for SKU-NEW in Price List HubSpot USD"]
    );
    let prices = fx
        .ok(
            "GET",
            &list_path(
                "/api/resource/Item%20Price",
                json!([["item_code", "=", "SKU-NEW"]]),
                json!(["price_list", "price_list_rate", "currency"]),
                None,
            ),
            Value::Null,
        )
        .await;
    assert_eq!(
        prices,
        json!([{"price_list": "HubSpot USD", "price_list_rate": 99.0, "currency": "USD"}])
    );
    body["hubspot_deal_id"] = json!("hs-deal-new-item-2");
    body["items"] = json!([{"item_code": "SKU-NEW", "qty": 1, "rate": 120}]);
    let (status, resp) = fx.call("POST", SALES_ORDERS, Some(body.clone())).await;
    assert_eq!(status, 200, "{resp}");
    let row = &resp["data"]["items"][0];
    assert_eq!(
        (
            row["price_list_rate"].clone(),
            row["margin_type"].clone(),
            row["margin_rate_or_amount"].clone()
        ),
        (json!(99.0), json!("Amount"), json!(21.0))
    );
    assert!(messages(&resp).is_empty(), "{resp}");
    // A failed order adds no Item Price (the request's transaction is rolled back).
    let item = json!({"item_code": "SKU-NEW2", "item_name": "New 2", "item_group": "Products", "stock_uom": "Nos"});
    fx.ok("POST", "/api/resource/Item", item).await;
    body["hubspot_deal_id"] = json!("hs-deal-new-item-3");
    body["items"] = json!([{"item_code": "SKU-NEW2", "qty": 1, "rate": 1}, {"item_code": "SKU-OTHER", "qty": 1, "rate": 1}]);
    fx.refused("POST", SALES_ORDERS, Some(body), 404, "DoesNotExistError")
        .await;
    assert!(
        !fx.sim
            .list("Item Price")
            .iter()
            .any(|p| p["item_code"] == json!("SKU-NEW2")),
        "the Item Price of a failed order is rolled back"
    );
    fx.sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Unique keys on Contacts and Addresses, batch inserts, submit on insert: what erp-writer relies
// on to sync a deal in few calls, captured on the real site (2026-12-07) with the custom fields
// as `erp-writer setup` makes them.
// ---------------------------------------------------------------------------------------------

const CUSTOM_FIELDS: &str = "/api/resource/Custom%20Field";
const CONTACTS: &str = "/api/resource/Contact";

impl Fx {
    /// A simulator set up as `erp-writer setup` leaves a site, clock at the captures' time.
    async fn keyed() -> Self {
        Self::with(ErpNextSimConfig {
            clock_start: Some("2026-12-07 17:02:00".into()),
            custom_fields: CustomFields::AsSetUp,
            ..config()
        })
        .await
    }

    /// Customer "Capture Keys Co", then its Address and two Contacts in one batch, as captured.
    async fn keyed_customer(&self) -> Value {
        self.ok(
            "POST",
            "/api/resource/Customer",
            json!({"customer_name": "Capture Keys Co", "customer_type": "Company",
                   "customer_group": "Commercial", "territory": "United States",
                   "hubspot_company_id": "capture-keys-co"}),
        )
        .await;
        self.replay_live("insert_many_address_and_contacts.json")
            .await
    }
}

/// A custom field cannot be made unique while two documents share a value
/// (`NonUniqueError`, nothing changed); once they do not, it can, and then a second document
/// with the value is refused. Blank values are NULL and do not count.
#[tokio::test]
async fn a_key_is_made_unique_only_when_no_two_documents_share_it() {
    let fx = Fx::keyed().await;
    // As an earlier setup left the Contact key: not unique.
    fx.ok(
        "PUT",
        &format!("{CUSTOM_FIELDS}/Contact-hubspot_contact_id"),
        json!({"unique": 0, "search_index": 1}),
    )
    .await;
    for last in ["Twin A", "Twin B"] {
        fx.ok(
            "POST",
            CONTACTS,
            json!({"first_name": "Capture", "last_name": last, "hubspot_contact_id": "capture-twin"}),
        )
        .await;
    }
    fx.replay_live("custom_field_unique_refused_with_duplicate_values.json")
        .await;
    let field = fx
        .sim
        .get("Custom Field", "Contact-hubspot_contact_id")
        .expect("field");
    assert_eq!(field["unique"], 0, "refused: unchanged");
    fx.ok(
        "POST",
        CONTACTS,
        json!({"first_name": "Capture", "last_name": "Twin C", "hubspot_contact_id": "capture-twin"}),
    )
    .await;
    fx.sim.reset();

    // Without the twin it goes through, and the key is enforced from then on.
    let fx2 = Fx::keyed().await;
    fx2.ok(
        "PUT",
        &format!("{CUSTOM_FIELDS}/Contact-hubspot_contact_id"),
        json!({"unique": 0, "search_index": 1}),
    )
    .await;
    fx2.ok(
        "POST",
        CONTACTS,
        json!({"first_name": "Capture", "last_name": "Twin A", "hubspot_contact_id": "capture-twin"}),
    )
    .await;
    let made = fx2
        .ok(
            "PUT",
            &format!("{CUSTOM_FIELDS}/Contact-hubspot_contact_id"),
            json!({"unique": 1, "search_index": 0}),
        )
        .await;
    assert_eq!(made["unique"], 1);
    fx2.replay_live("contact_insert_duplicate_hubspot_contact_id.json")
        .await;
    // Contacts without the key: stored NULL, as many as there are.
    for (last, key) in [("Blank 1", json!("")), ("Blank 2", json!(""))] {
        fx2.ok(
            "POST",
            CONTACTS,
            json!({"first_name": "Capture", "last_name": last, "hubspot_contact_id": key}),
        )
        .await;
    }
    fx2.ok(
        "POST",
        CONTACTS,
        json!({"first_name": "Capture", "last_name": "Blank 3"}),
    )
    .await;
    let blank = fx2.sim.get("Contact", "Capture Blank 1").expect("contact");
    assert_eq!(
        blank["hubspot_contact_id"],
        Value::Null,
        "a blank key is NULL"
    );
    fx.sim.shutdown().await;
    fx2.sim.shutdown().await;
}

/// `frappe.client.insert_many` answers the new names in the documents' order; a unique conflict
/// in any document rolls the whole batch back (the first Contact of the refused batch is not
/// there, as the list in the same state shows). The Address key is unique too.
#[tokio::test]
async fn insert_many_is_ordered_and_all_or_nothing() {
    let fx = Fx::keyed().await;
    let inserted = fx.keyed_customer().await;
    assert_eq!(
        inserted,
        live("insert_many_address_and_contacts.json")["response"]["body"]
    );
    fx.replay_live("insert_many_unique_conflict_rolls_back.json")
        .await;
    assert!(
        fx.sim
            .get("Contact", "Newt Capture-Capture Keys Co")
            .is_none()
    );
    let listed = fx
        .replay_live("contact_list_in_hubspot_ids_with_links.json")
        .await;
    assert_eq!(
        listed,
        live("contact_list_in_hubspot_ids_with_links.json")["response"]["body"],
        "the `in` filter, the links joined in, and nothing of the refused batch"
    );
    fx.replay_live("address_insert_duplicate_hubspot_address_key.json")
        .await;
    assert_eq!(fx.sim.list("Address").len(), 1);

    // A batch of one is a batch; more than 200 are refused before anything is inserted.
    let one = json!({"docs": [{"doctype": "Contact", "first_name": "Solo", "hubspot_contact_id": "capture-solo"}]});
    let names = fx
        .ok("POST", "/api/method/frappe.client.insert_many", one)
        .await;
    assert_eq!(names, json!(["Solo"]));
    let many: Vec<Value> = (0..201)
        .map(|i| json!({"doctype": "Contact", "first_name": format!("Bulk {i}")}))
        .collect();
    fx.refused(
        "POST",
        "/api/method/frappe.client.insert_many",
        Some(json!({ "docs": many })),
        417,
        "ValidationError",
    )
    .await;
    fx.sim.shutdown().await;
}

/// Frappe submits a document inserted with `docstatus: 1` (validate, before_submit, on_submit in
/// one transaction) with the totals and tax rows of the two-step way; but ERPNext's status
/// updater skips a new document, so a Sales Order keeps the status it was sent with: "Draft"
/// unless the insert says otherwise.
#[tokio::test]
async fn a_sales_order_submitted_on_insert_keeps_the_status_it_was_sent_with() {
    let fx = Fx::keyed().await;
    fx.keyed_customer().await;
    fx.sim.set_series("SAL-ORD-2026-", 70);
    for (file, name, status) in [
        (
            "sales_order_insert_submitted_status_stays_draft.json",
            "SAL-ORD-2026-00071",
            "Draft",
        ),
        (
            "sales_order_insert_submitted_with_status.json",
            "SAL-ORD-2026-00072",
            "To Deliver and Bill",
        ),
    ] {
        let order = fx.replay_live(file).await;
        // Tax rows compared without what differs per run (row name, timestamps).
        let unstamped = |doc: &Value| {
            let mut doc = doc.clone();
            for row in doc["taxes"].as_array_mut().into_iter().flatten() {
                if let Some(row) = row.as_object_mut() {
                    for k in ["name", "creation", "modified"] {
                        row.remove(k);
                    }
                }
            }
            doc
        };
        assert_same_amounts(
            file,
            &unstamped(&live(file)["response"]["body"]["data"]),
            &unstamped(&order["data"]),
        );
        assert_eq!(
            (
                order["data"]["name"].clone(),
                order["data"]["docstatus"].clone(),
                order["data"]["status"].clone()
            ),
            (json!(name), json!(1), json!(status)),
            "{file}"
        );
        assert_eq!(
            order["data"]["other_charges_calculation"],
            live(file)["response"]["body"]["data"]["other_charges_calculation"],
            "{file}: the tax break-up"
        );
        for field in ["contact_display", "contact_email", "address_display"] {
            assert_eq!(
                order["data"][field],
                live(file)["response"]["body"]["data"][field],
                "{file}: {field}"
            );
        }
        let stored = fx.sim.get("Sales Order", name).expect("stored");
        assert_eq!(stored["status"], json!(status), "{file}: as stored");
        assert_eq!(stored["taxes"][0]["tax_amount"], json!(72.0), "{file}");
    }
    fx.sim.shutdown().await;
}

/// A late commit: the held insert outlives its client's timeout, and is applied when released
/// although nobody waits for the answer any more (the fault the reliability of unique keys is
/// tested with; unlike a hang, the write itself comes late).
#[tokio::test]
async fn a_held_insert_commits_after_its_client_gave_up() {
    let fx = Fx::keyed().await;
    fx.sim.hold_inserts("Contact", 1);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let sent = impatient
        .post(format!("{}{CONTACTS}", fx.sim.base_url()))
        .header("Authorization", format!("token {KEY}:{SECRET}"))
        .json(&json!({"first_name": "Late", "hubspot_contact_id": "ct-late"}))
        .send()
        .await;
    assert!(sent.is_err_and(|e| e.is_timeout()), "the client gave up");
    assert_eq!(fx.sim.held_inserts(), 1);
    assert!(fx.sim.list("Contact").is_empty(), "not applied yet");
    // Only the armed count is held: the next insert goes through at once.
    fx.ok(
        "POST",
        CONTACTS,
        json!({"first_name": "Early", "hubspot_contact_id": "ct-early"}),
    )
    .await;
    fx.sim.release_late_commits();
    let answers = eventually(Duration::from_secs(5), "the late commit", || {
        let done = fx.sim.late_commits();
        async move { (!done.is_empty()).then_some(done) }
    })
    .await;
    assert_eq!(answers, vec![200]);
    assert_eq!(fx.sim.held_inserts(), 0);
    assert!(fx.sim.get("Contact", "Late").is_some(), "committed late");
    fx.sim.shutdown().await;
}

/// ERPNext keeps a row's `rate` at the currency's precision, rounding ties to even (Frappe's
/// "Banker's Rounding"): 19.995 → 20.0, 0.125 → 0.12, 0.135 → 0.14; numbers sent as strings are
/// cast. A fractional quantity of a whole-number UOM ("Nos") is refused with the fix.
#[tokio::test]
async fn row_rates_are_kept_at_currency_precision_and_whole_number_uoms_refuse_fractions() {
    let fx = Fx::live().await;
    fx.sim.set_series("SAL-ORD-2026-", 39);
    let file = "sales_order_insert_rates_rounded_to_currency_precision.json";
    let order = fx.replay_live(file).await;
    let rows = |doc: &Value| -> Vec<(Value, Value, Value)> {
        doc["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (r["qty"].clone(), r["rate"].clone(), r["amount"].clone()))
            .collect()
    };
    assert_eq!(
        rows(&order["data"]),
        rows(&live(file)["response"]["body"]["data"]),
        "{file}"
    );
    assert_eq!(
        rows(&order["data"]),
        vec![
            (json!(3.0), json!(20.0), json!(60.0)),
            (json!(1.0), json!(0.12), json!(0.12)),
            (json!(2.0), json!(0.14), json!(0.28)),
        ]
    );
    fx.replay_live("sales_order_insert_fractional_qty_of_whole_number_uom.json")
        .await;
    fx.sim.shutdown().await;
}

/// Every live finding is replayed by a test above: a new capture must get one.
#[test]
fn every_live_finding_is_pinned_by_a_test() {
    let pinned = [
        "accounts_settings_taxes_from_template_flag.json",
        "address_insert_duplicate_hubspot_address_key.json",
        "address_list_by_linked_customer_order_by_creation_ambiguous.json",
        "address_list_by_linked_customer_order_by_qualified.json",
        "contact_insert_duplicate_hubspot_contact_id.json",
        "contact_list_in_hubspot_ids_with_links.json",
        "custom_field_unique_refused_with_duplicate_values.json",
        "insert_many_address_and_contacts.json",
        "insert_many_unique_conflict_rolls_back.json",
        "sales_invoice_insert_eur_party_account_currency.json",
        "sales_invoice_make_from_eur_sales_order.json",
        "sales_order_amend_cancelled_with_unique_hubspot_deal_id.json",
        "sales_order_create_eur_customer_without_eur_account.json",
        "sales_order_create_tax_template_without_rows.json",
        "sales_order_insert_fractional_qty_of_whole_number_uom.json",
        "sales_order_insert_rates_rounded_to_currency_precision.json",
        "sales_order_insert_submitted_status_stays_draft.json",
        "sales_order_insert_submitted_with_status.json",
        "taxes_from_template_method.json",
        "webhook_create_without_name.json",
    ];
    let mut found: Vec<String> = std::fs::read_dir(contracts().join("live-findings"))
        .expect("live-findings")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    found.sort();
    assert_eq!(found, pinned);
}
