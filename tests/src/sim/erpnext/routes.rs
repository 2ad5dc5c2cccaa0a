//! The Frappe REST surface: `/api/resource/<DocType>[/<name>]` and `/api/method/<dotted.path>`,
//! with Frappe's request handling order (body parsed first, so a malformed body is a 500 even
//! without credentials; then token auth; then the doctype permission), and the fault-injection
//! layer on `/api/*`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use super::Shared;
use super::controllers;
use super::doctypes::{DocView, ListRow, Nulls, str_of};
use super::documents::{self, Outcome};
use super::errors::{FrappeError, injected_error, json_response, server_messages};
use super::filters;
use super::state::Site;
use super::taxes;
use crate::sim::faults::Fault;

pub fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/resource/{doctype}", get(list).post(create))
        .route(
            "/api/resource/{doctype}/{*name}",
            get(read).put(update).delete(remove),
        )
        .route("/api/method/{*method}", get(method).post(method))
        .layer(middleware::from_fn_with_state(shared, faults_layer))
}

/// `METHOD /api/resource/<DocType>[/{name}]` or `METHOD /api/method/<name>`: what call counters
/// are keyed by.
pub fn endpoint_key(method: &Method, path: &str) -> String {
    let decoded = percent_decode(path);
    let key = match decoded.strip_prefix("/api/resource/") {
        Some(rest) => match rest.split_once('/') {
            Some((dt, _)) => format!("/api/resource/{dt}/{{name}}"),
            None => format!("/api/resource/{rest}"),
        },
        None => decoded,
    };
    format!("{method} {key}")
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// Count the call, then inject latency, a 5xx (no effect), a 429, or a hang. A hang runs the
/// request first and delays the answer past the client's timeout: the write happened but the
/// client does not know, the case idempotent writers must survive.
async fn faults_layer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    shared.faults.count(&endpoint_key(req.method(), &path));
    let (fault, latency) = shared.faults.decide(&path);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Fault::None => next.run(req).await,
        Fault::Error(code) => injected_error(code),
        Fault::TooManyRequests => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"exception": "frappe.exceptions.RateLimitExceededError", "exc_type": "RateLimitExceededError",
                    "_server_messages": "[\"{\\\"message\\\": \\\"You hit the rate limit because of too many requests. Please try after sometime.\\\"}\"]"}),
        ),
        Fault::Hang(d) => {
            let resp = next.run(req).await;
            tokio::time::sleep(d).await;
            resp
        }
    }
}

/// Frappe's API-key auth. `None` is Guest.
pub fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Option<String>, FrappeError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| FrappeError::Authentication)?
        .trim();
    let (scheme, cred) = value.split_once(' ').ok_or(FrappeError::Authentication)?;
    let cred = match scheme.to_ascii_lowercase().as_str() {
        "token" => cred.trim().to_string(),
        "basic" => base64::engine::general_purpose::STANDARD
            .decode(cred.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(FrappeError::Authentication)?,
        _ => return Err(FrappeError::Authentication),
    };
    let (key, secret) = cred.split_once(':').ok_or(FrappeError::Authentication)?;
    let site = shared.site();
    if key == site.config.api_key && secret == site.config.api_secret {
        Ok(Some(site.config.user.clone()))
    } else {
        Err(FrappeError::Authentication)
    }
}

/// Auth plus the role check on `doctype`.
fn permit(shared: &Shared, headers: &HeaderMap, doctype: &str) -> Result<String, FrappeError> {
    let user = authenticate(shared, headers)?.ok_or_else(|| FrappeError::Permission {
        user: "Guest".into(),
        doctype: doctype.to_string(),
    })?;
    if shared
        .site()
        .config
        .denied_doctypes
        .iter()
        .any(|d| d == doctype)
    {
        return Err(FrappeError::Permission {
            user,
            doctype: doctype.to_string(),
        });
    }
    Ok(user)
}

/// Python's JSONDecodeError text for a body serde_json rejected.
fn json_decode_error(text: &str, e: &serde_json::Error) -> FrappeError {
    let (pos, what) = if e.is_eof() {
        let last = text.trim_end().chars().last();
        let what = if matches!(last, Some(',') | Some('{')) {
            "Expecting property name enclosed in double quotes"
        } else {
            "Expecting value"
        };
        (text.chars().count(), what)
    } else {
        let line_start: usize = text
            .split_inclusive('\n')
            .take(e.line().saturating_sub(1))
            .map(|l| l.chars().count())
            .sum();
        (line_start + e.column().saturating_sub(1), "Expecting value")
    };
    let before: String = text.chars().take(pos).collect();
    let line = before.matches('\n').count() + 1;
    let column = pos
        - before
            .rfind('\n')
            .map(|i| before[..=i].chars().count())
            .unwrap_or(0)
        + 1;
    FrappeError::JsonDecode {
        message: format!("{what}: line {line} column {column} (char {pos})"),
    }
}

/// `make_form_dict`: a JSON body, or form fields whose values may themselves be JSON.
pub fn parse_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Map<String, Value>, FrappeError> {
    let text = String::from_utf8_lossy(bytes);
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.contains("x-www-form-urlencoded") {
        let mut out = Map::new();
        for (k, v) in url::form_urlencoded::parse(bytes) {
            out.insert(k.into_owned(), maybe_json(&v));
        }
        return Ok(out);
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(FrappeError::validation(
            "The request body must be a JSON object",
        )),
        Err(e) => Err(json_decode_error(&text, &e)),
    }
}

fn maybe_json(v: &str) -> Value {
    let t = v.trim();
    if t.starts_with('{') || t.starts_with('[') {
        serde_json::from_str(t).unwrap_or_else(|_| Value::String(v.to_string()))
    } else {
        Value::String(v.to_string())
    }
}

/// An argument that may arrive as a JSON string (form posts) or as JSON.
fn json_arg(args: &Map<String, Value>, key: &str) -> Option<Value> {
    match args.get(key)? {
        Value::String(s) => Some(maybe_json(s)),
        v => Some(v.clone()),
    }
}

/// `{"data"|"message": <doc>, "_server_messages"?: ...}` with the document in Frappe's order.
struct DocBody<'a> {
    key: &'static str,
    view: DocView<'a>,
    note: Option<String>,
}

impl Serialize for DocBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(self.key, &self.view)?;
        if let Some(note) = &self.note {
            map.serialize_entry("_server_messages", note)?;
        }
        map.end()
    }
}

pub fn doc_response(
    site: &Site,
    key: &'static str,
    out: &Outcome,
    nulls: Nulls,
    unsaved: bool,
) -> Response {
    let mut doc = out.doc.clone();
    if let Some(onload) = &out.onload {
        doc.insert("__onload".into(), onload.clone());
    }
    let marks: &[(String, usize)] = if unsaved { &out.unsaved } else { &[] };
    let body = DocBody {
        key,
        view: DocView::new(&site.reg, &out.doctype, &doc, nulls).with_unsaved(marks),
        note: (!out.messages.is_empty()).then(|| server_messages(&out.messages)),
    };
    json_response(StatusCode::OK, &body)
}

fn unknown_doctype(site: &Site, doctype: &str) -> Result<(), FrappeError> {
    match site.reg.get(doctype) {
        Some(_) => Ok(()),
        None => Err(FrappeError::not_found("DocType", doctype)),
    }
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Path(doctype): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, FrappeError> {
    permit(&shared, &headers, &doctype)?;
    let site = shared.site();
    unknown_doctype(&site, &doctype)?;
    let meta = site
        .reg
        .get(&doctype)
        .cloned()
        .ok_or_else(|| FrappeError::not_found("DocType", &doctype))?;
    let q = filters::parse(&site, &meta, &params)?;
    let rows = filters::run(&site, &meta, &q);
    Ok(json_response(StatusCode::OK, &Keyed("data", &rows)))
}

/// `{key: value}` without going through a (key-sorting) `Value`.
struct Keyed<'a, T: ?Sized>(&'static str, &'a T);

impl<T: Serialize + ?Sized> Serialize for Keyed<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, self.1)?;
        map.end()
    }
}

async fn read(
    State(shared): State<Arc<Shared>>,
    Path((doctype, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, FrappeError> {
    permit(&shared, &headers, &doctype)?;
    let site = shared.site();
    unknown_doctype(&site, &doctype)?;
    let doc = site
        .get(&doctype, &name)
        .cloned()
        .ok_or_else(|| FrappeError::not_found(&doctype, &name))?;
    let out = Outcome {
        doctype: doctype.clone(),
        doc,
        unsaved: Vec::new(),
        messages: Vec::new(),
        onload: None,
    };
    Ok(doc_response(&site, "data", &out, Nulls::Drop, false))
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FrappeError> {
    let args = parse_body(&headers, &body)?;
    permit(&shared, &headers, &doctype)?;
    let data = match json_arg(&args, "data") {
        Some(Value::Object(m)) => m,
        _ => args,
    };
    let held = shared.late.hold(&[doctype.as_str()]);
    let insert = move |shared: &Shared| {
        shared.write(|site, txn| {
            let out = documents::insert(site, txn, &doctype, &data)?;
            Ok(doc_response(site, "data", &out, Nulls::Drop, true))
        })
    };
    match held {
        Some(release) => shared.late_write(release, insert).await,
        None => insert(&shared),
    }
}

/// `frappe.client.insert_many(docs)`: each document inserted as `frappe.get_doc(doc).insert()`
/// would, all in the request's one transaction (a failure rolls every one back); the answer is
/// the names in the order of the documents (`live-findings/insert_many_address_and_contacts.json`,
/// `insert_many_unique_conflict_rolls_back.json`).
async fn insert_many(
    shared: Arc<Shared>,
    headers: &HeaderMap,
    args: &Map<String, Value>,
) -> Result<Response, FrappeError> {
    let docs: Vec<Map<String, Value>> = match json_arg(args, "docs") {
        Some(Value::Array(docs)) => docs
            .into_iter()
            .filter_map(|d| match d {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .collect(),
        // `len(docs)` of the default `None`.
        _ => {
            return Err(FrappeError::Type {
                message: "object of type 'NoneType' has no len()".into(),
            });
        }
    };
    if docs.len() > 200 {
        return Err(FrappeError::validation(
            "Only 200 inserts allowed in one request",
        ));
    }
    let doctypes: Vec<String> = docs
        .iter()
        .map(|d| str_of(d, "doctype").unwrap_or_default())
        .collect();
    for doctype in &doctypes {
        permit(&shared, headers, doctype)?;
    }
    let held = shared
        .late
        .hold(&doctypes.iter().map(String::as_str).collect::<Vec<_>>());
    let insert = move |shared: &Shared| {
        shared.write(|site, txn| {
            let mut names = Vec::with_capacity(docs.len());
            for (doctype, doc) in doctypes.iter().zip(&docs) {
                let out = documents::insert(site, txn, doctype, doc)?;
                names.push(out.doc.get("name").cloned().unwrap_or(Value::Null));
            }
            Ok(json_response(StatusCode::OK, &json!({ "message": names })))
        })
    };
    match held {
        Some(release) => shared.late_write(release, insert).await,
        None => insert(&shared),
    }
}

async fn update(
    State(shared): State<Arc<Shared>>,
    Path((doctype, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FrappeError> {
    let args = parse_body(&headers, &body)?;
    permit(&shared, &headers, &doctype)?;
    let data = match json_arg(&args, "data") {
        Some(Value::Object(m)) => m,
        _ => args,
    };
    shared.write(|site, txn| {
        let out = documents::save(site, txn, &doctype, &name, &data)?;
        Ok(doc_response(site, "data", &out, Nulls::Drop, false))
    })
}

async fn remove(
    State(shared): State<Arc<Shared>>,
    Path((doctype, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, FrappeError> {
    permit(&shared, &headers, &doctype)?;
    shared.write(|site, txn| documents::delete(site, txn, &doctype, &name))?;
    Ok(json_response(StatusCode::ACCEPTED, &json!({"data": "ok"})))
}

fn arg(args: &Map<String, Value>, key: &str) -> Result<String, FrappeError> {
    str_of(args, key).ok_or_else(|| FrappeError::validation(format!("Missing argument: {key}")))
}

async fn method(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FrappeError> {
    let mut args = parse_body(&headers, &body)?;
    for (k, v) in query {
        args.entry(k).or_insert_with(|| maybe_json(&v));
    }
    let user = authenticate(&shared, &headers)?;
    if method == "frappe.ping" {
        return Ok(json_response(StatusCode::OK, &json!({"message": "pong"})));
    }
    let Some(user) = user else {
        return Err(FrappeError::MethodNotPermitted);
    };
    match method.as_str() {
        "frappe.auth.get_logged_user" => {
            Ok(json_response(StatusCode::OK, &json!({"message": user})))
        }
        "frappe.client.submit" => {
            let Some(Value::Object(doc)) = json_arg(&args, "doc") else {
                return Err(FrappeError::validation("Missing argument: doc"));
            };
            permit(
                &shared,
                &headers,
                &str_of(&doc, "doctype").unwrap_or_default(),
            )?;
            shared.write(|site, txn| {
                let out = documents::client_submit(site, txn, &doc)?;
                Ok(doc_response(site, "message", &out, Nulls::Keep, true))
            })
        }
        "frappe.client.insert_many" => insert_many(Arc::clone(&shared), &headers, &args).await,
        "frappe.client.cancel" => {
            let (doctype, name) = (arg(&args, "doctype")?, arg(&args, "name")?);
            permit(&shared, &headers, &doctype)?;
            shared.write(|site, txn| {
                let out = documents::cancel(site, txn, &doctype, &name)?;
                Ok(doc_response(site, "message", &out, Nulls::Keep, false))
            })
        }
        "frappe.client.get" => {
            let doctype = arg(&args, "doctype")?;
            permit(&shared, &headers, &doctype)?;
            let site = shared.site();
            unknown_doctype(&site, &doctype)?;
            let name = match str_of(&args, "name") {
                Some(n) => n,
                None => first_match(&site, &doctype, &args)?,
            };
            let doc = site
                .get(&doctype, &name)
                .cloned()
                .ok_or_else(|| FrappeError::not_found(&doctype, &name))?;
            let out = Outcome {
                doctype,
                doc,
                unsaved: Vec::new(),
                messages: Vec::new(),
                onload: None,
            };
            Ok(doc_response(&site, "message", &out, Nulls::Keep, false))
        }
        "frappe.client.get_value" => {
            let doctype = arg(&args, "doctype")?;
            permit(&shared, &headers, &doctype)?;
            let site = shared.site();
            unknown_doctype(&site, &doctype)?;
            let fields: Vec<String> = match json_arg(&args, "fieldname") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                Some(Value::String(s)) => vec![s],
                _ => vec!["name".into()],
            };
            let name = match json_arg(&args, "filters") {
                Some(Value::String(n)) => Some(n),
                _ => first_match(&site, &doctype, &args).ok(),
            };
            let doc = name.and_then(|n| site.get(&doctype, &n).cloned());
            let message = doc.map(|d| {
                fields
                    .iter()
                    .map(|f| (f.clone(), d.get(f).cloned().unwrap_or(Value::Null)))
                    .collect::<Map<_, _>>()
            });
            Ok(json_response(StatusCode::OK, &json!({"message": message})))
        }
        // A Password field in clear, System Manager only (Frappe's own check); `erp-writer
        // setup` compares the Webhook secret with it.
        "frappe.client.get_password" => {
            let doctype = arg(&args, "doctype")?;
            let (name, fieldname) = (arg(&args, "name")?, arg(&args, "fieldname")?);
            permit(&shared, &headers, &doctype)?;
            let site = shared.site();
            let doc = site
                .get(&doctype, &name)
                .ok_or_else(|| FrappeError::not_found(&doctype, &name))?;
            match str_of(doc, &fieldname).filter(|p| !p.is_empty()) {
                Some(p) => Ok(json_response(StatusCode::OK, &json!({"message": p}))),
                None => Err(FrappeError::validation(format!(
                    "Password not found for {doctype} {name} {fieldname}"
                ))),
            }
        }
        "frappe.client.get_list" => {
            let doctype = arg(&args, "doctype")?;
            permit(&shared, &headers, &doctype)?;
            let site = shared.site();
            unknown_doctype(&site, &doctype)?;
            let meta = site
                .reg
                .get(&doctype)
                .cloned()
                .ok_or_else(|| FrappeError::not_found("DocType", &doctype))?;
            let params: HashMap<String, String> = args
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect();
            let q = filters::parse(&site, &meta, &params)?;
            let rows = filters::run(&site, &meta, &q);
            Ok(json_response(StatusCode::OK, &Keyed("message", &rows)))
        }
        "erpnext.selling.doctype.sales_order.sales_order.make_sales_invoice" => {
            let source = arg(&args, "source_name")?;
            permit(&shared, &headers, "Sales Invoice")?;
            shared.write(|site, _| {
                let doc = controllers::make_sales_invoice(site, &source)?;
                let out = Outcome {
                    doctype: "Sales Invoice".into(),
                    doc,
                    unsaved: Vec::new(),
                    messages: Vec::new(),
                    onload: None,
                };
                Ok(doc_response(site, "message", &out, Nulls::Drop, false))
            })
        }
        "erpnext.controllers.accounts_controller.get_taxes_and_charges" => {
            let doctype = arg(&args, "master_doctype")?;
            permit(&shared, &headers, &doctype)?;
            let Some(name) = str_of(&args, "master_name") else {
                // The method returns None: Frappe answers without a `message`.
                return Ok(json_response(StatusCode::OK, &json!({})));
            };
            let site = shared.site();
            unknown_doctype(&site, &doctype)?;
            let rows: Vec<ListRow> = taxes::template_rows(&site, &name)?
                .into_iter()
                .map(|r| ListRow(r.into_iter().collect()))
                .collect();
            Ok(json_response(StatusCode::OK, &Keyed("message", &rows)))
        }
        "erpnext.accounts.doctype.payment_entry.payment_entry.get_payment_entry" => {
            let (dt, dn) = (arg(&args, "dt")?, arg(&args, "dn")?);
            permit(&shared, &headers, "Payment Entry")?;
            shared.write(|site, _| {
                let doc = controllers::get_payment_entry(site, &dt, &dn)?;
                let out = Outcome {
                    doctype: "Payment Entry".into(),
                    doc,
                    unsaved: Vec::new(),
                    messages: Vec::new(),
                    onload: None,
                };
                Ok(doc_response(site, "message", &out, Nulls::Drop, false))
            })
        }
        other => {
            let module = other.rsplit_once('.').map(|(m, _)| m).unwrap_or(other);
            Err(FrappeError::validation(format!(
                "Failed to get method for command {other} with No module named '{module}'"
            )))
        }
    }
}

/// The first document matching the `filters` argument of a `frappe.client` call.
fn first_match(
    site: &Site,
    doctype: &str,
    args: &Map<String, Value>,
) -> Result<String, FrappeError> {
    let meta = site
        .reg
        .get(doctype)
        .cloned()
        .ok_or_else(|| FrappeError::not_found("DocType", doctype))?;
    let mut params = HashMap::new();
    if let Some(f) = json_arg(args, "filters") {
        params.insert("filters".to_string(), f.to_string());
    }
    params.insert("limit_page_length".to_string(), "1".to_string());
    let q = filters::parse(site, &meta, &params)?;
    filters::run(site, &meta, &q)
        .into_iter()
        .next()
        .and_then(|row| {
            row.0
                .into_iter()
                .find(|(k, _)| k == "name")
                .and_then(|(_, v)| v.as_str().map(str::to_string))
        })
        .ok_or_else(|| FrappeError::not_found(doctype, "(filters)"))
}
