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
    DeliveryState, ErpNextSim, ErpNextSimConfig, ErpNextSimHandle, render_json,
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
        ..ErpNextSimConfig::default()
    }
}

struct Fx {
    sim: ErpNextSimHandle,
    http: reqwest::Client,
}

impl Fx {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let sim = ErpNextSim::start(config(), listener).await.expect("start");
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = ErpNextSim::start(
        ErpNextSimConfig {
            seed_custom_fields: false,
            ..config()
        },
        listener,
    )
    .await
    .expect("start");
    let fx = Fx {
        sim,
        http: reqwest::Client::new(),
    };
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
