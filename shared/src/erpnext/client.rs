//! A small Frappe REST client: list, get, insert, update, submit, call a whitelisted method.
//!
//! Decisions:
//! - **Token auth** `Authorization: token <key>:<secret>`; the header value is marked sensitive
//!   and the client's `Debug` never prints it.
//! - **A concurrency cap per process** (`erpnext.max_concurrency`): every request holds a
//!   semaphore permit from send to the end of the body, so a burst of commands cannot occupy
//!   every gunicorn worker of the ERPNext site (DESIGN §6).
//! - **No retries here.** A retry decision needs to know whether the call was idempotent and what
//!   the step will do next (look up by the unique field before a second insert); the caller
//!   owns it. The client only classifies ([`super::error::classify`]).
//! - **Configuration problems are remembered**: a 401/403 sets [`ErpNextClient::configuration_problem`]
//!   (for `/readyz`), the next successful call clears it.
//! - Every call counts `l2l_external_requests_total{system="erpnext",operation,status}` and
//!   observes `l2l_external_request_duration_seconds{system,operation}`.
//!
//! What this client does not know: lead2ledger's documents. The steps that map commands onto
//! Customers and Sales Orders live in erp-writer; the mapper's reconcile reads through the same
//! client.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use url::Url;

use super::error::{ErpNextError, ErrorClass, parse_error_body};
use crate::config::ErpNextConfig;

/// Counter `{system, operation, status}`; status is the HTTP code, `timeout` or `connect_error`.
pub const METRIC_REQUESTS: &str = "l2l_external_requests_total";
/// Histogram `{system, operation}` in seconds, permit wait excluded.
pub const METRIC_DURATION: &str = "l2l_external_request_duration_seconds";
/// Gauge: requests waiting for a concurrency permit.
pub const METRIC_WAITING: &str = "l2l_erpnext_requests_waiting";

const SYSTEM: &str = "erpnext";

/// One Frappe document as ERPNext returns it (`data` of a GET/POST/PUT, or a row of a list).
#[derive(Debug, Clone, PartialEq)]
pub struct Doc(pub Map<String, Value>);

impl Doc {
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }

    /// A string field; `None` when missing, null or not a string.
    pub fn str(&self, field: &str) -> Option<&str> {
        self.0.get(field).and_then(Value::as_str)
    }

    /// A numeric field as f64 (Frappe sends `10` or `10.0`).
    pub fn f64(&self, field: &str) -> Option<f64> {
        self.0.get(field).and_then(Value::as_f64)
    }

    pub fn i64(&self, field: &str) -> Option<i64> {
        self.0
            .get(field)
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
    }

    /// `name`, the document's primary key (`SAL-ORD-2026-00001`, `Globex Corporation - 1`).
    pub fn name(&self) -> &str {
        self.str("name").unwrap_or_default()
    }

    /// `modified`: naive site-local time, e.g. `2026-11-24 12:17:35.284407`.
    pub fn modified(&self) -> Option<&str> {
        self.str("modified")
    }

    /// 0 draft, 1 submitted, 2 cancelled.
    pub fn docstatus(&self) -> i64 {
        self.i64("docstatus").unwrap_or(0)
    }

    /// Rows of a child table (`items`, `links`, `email_ids`), as documents.
    pub fn table(&self, field: &str) -> Vec<Doc> {
        self.0
            .get(field)
            .and_then(Value::as_array)
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r.as_object().cloned().map(Doc))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

/// A list's sort order.
#[derive(Debug, Clone)]
enum Order {
    /// Sent as given.
    Raw(String),
    /// `creation asc, name asc`, each qualified with the doctype's table: a child-table filter
    /// joins the child table, which has its own `creation` and `name`, and MariaDB refuses the
    /// bare column (HTTP 500, `OperationalError 1052 … is ambiguous`).
    OldestFirst,
}

impl Order {
    fn render(&self, doctype: &str) -> String {
        match self {
            Order::Raw(s) => s.clone(),
            Order::OldestFirst => format!("`tab{doctype}`.creation asc, `tab{doctype}`.name asc"),
        }
    }
}

/// `GET /api/resource/<DocType>` parameters. Filters are Frappe's list form: `[field, op, value]`
/// or, on a child table, `[ChildDocType, field, op, value]`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    filters: Vec<Value>,
    /// Frappe's `or_filters`: at least one holds (and every `filters` entry holds).
    or_filters: Vec<Value>,
    fields: Vec<String>,
    order_by: Option<Order>,
    limit: Option<u32>,
    start: Option<u32>,
    parent: Option<String>,
}

impl ListQuery {
    pub fn new() -> Self {
        Self::default()
    }

    /// `[field, op, value]`, e.g. `filter("hubspot_company_id", "=", "123")`.
    pub fn filter(mut self, field: &str, op: &str, value: impl Into<Value>) -> Self {
        self.filters.push(json!([field, op, value.into()]));
        self
    }

    /// `[field, op, value]` in `or_filters`: the query keeps the rows where every filter holds
    /// and at least one of these does (keyset paging: `modified > m` or `name > n`).
    pub fn or_filter(mut self, field: &str, op: &str, value: impl Into<Value>) -> Self {
        self.or_filters.push(json!([field, op, value.into()]));
        self
    }

    /// `[child_doctype, field, op, value]`, e.g. `("Dynamic Link", "link_name", "=", customer)`.
    pub fn child_filter(
        mut self,
        child_doctype: &str,
        field: &str,
        op: &str,
        value: impl Into<Value>,
    ) -> Self {
        self.filters
            .push(json!([child_doctype, field, op, value.into()]));
        self
    }

    /// Fields to return; Frappe returns only `name` when none are asked for.
    pub fn fields(mut self, fields: &[&str]) -> Self {
        self.fields = fields.iter().map(|f| f.to_string()).collect();
        self
    }

    /// E.g. ``"`tabSales Invoice`.modified asc"``. Qualify every column with its table when
    /// the query filters on a child table; [`ListQuery::oldest_first`] does that for you.
    pub fn order_by(mut self, order_by: &str) -> Self {
        self.order_by = Some(Order::Raw(order_by.to_string()));
        self
    }

    /// Oldest first, ties broken by name, so every reader picks the same one of several
    /// matches; qualified with the doctype's table, so child-table filters may be combined.
    pub fn oldest_first(mut self) -> Self {
        self.order_by = Some(Order::OldestFirst);
        self
    }

    /// `limit_page_length` (Frappe's default is 20; 0 means all).
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }

    /// `parent`: the parent doctype, which Frappe requires to list a child doctype (e.g.
    /// `DocField` of `DocType`).
    pub fn parent(mut self, doctype: &str) -> Self {
        self.parent = Some(doctype.to_string());
        self
    }

    /// `limit_start`.
    pub fn start(mut self, n: u32) -> Self {
        self.start = Some(n);
        self
    }

    fn apply(&self, doctype: &str, url: &mut Url) {
        let mut q = url.query_pairs_mut();
        if !self.filters.is_empty() {
            q.append_pair("filters", &Value::Array(self.filters.clone()).to_string());
        }
        if !self.or_filters.is_empty() {
            q.append_pair(
                "or_filters",
                &Value::Array(self.or_filters.clone()).to_string(),
            );
        }
        if !self.fields.is_empty() {
            q.append_pair("fields", &json!(self.fields).to_string());
        }
        if let Some(o) = &self.order_by {
            q.append_pair("order_by", &o.render(doctype));
        }
        if let Some(p) = &self.parent {
            q.append_pair("parent", p);
        }
        if let Some(s) = self.start {
            q.append_pair("limit_start", &s.to_string());
        }
        if let Some(l) = self.limit {
            q.append_pair("limit_page_length", &l.to_string());
        }
    }
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    timeout: Duration,
    /// Bounds requests in flight from this process (see the module doc).
    permits: Semaphore,
    /// Last 401/403 seen, cleared by the next success; `/readyz` reports it.
    config_problem: Mutex<Option<String>>,
}

/// Handle to one ERPNext site. Cheap to clone; clones share the concurrency cap.
#[derive(Clone)]
pub struct ErpNextClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ErpNextClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErpNextClient")
            .field("base", &self.inner.base.as_str())
            .field("timeout", &self.inner.timeout)
            .field("available_permits", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl ErpNextClient {
    /// Build from `[erpnext]`: `base_url`, `api_key`, `api_secret`, `timeout`, `max_concurrency`.
    pub fn new(cfg: &ErpNextConfig) -> Result<Self, ErpNextError> {
        let key = cfg
            .api_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ErpNextError::Setup("erpnext.api_key is not set (L2L_ERPNEXT__API_KEY)".into())
            })?;
        let secret = cfg
            .api_secret
            .as_ref()
            .map(|s| s.expose_secret())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ErpNextError::Setup(
                    "erpnext.api_secret is not set (L2L_ERPNEXT__API_SECRET or _FILE)".into(),
                )
            })?;
        Self::with_token(&cfg.base_url, key, secret, cfg.timeout, cfg.max_concurrency)
    }

    /// Build from explicit parts (tests, tools).
    pub fn with_token(
        base_url: &Url,
        api_key: &str,
        api_secret: &str,
        timeout: Duration,
        max_concurrency: usize,
    ) -> Result<Self, ErpNextError> {
        if base_url.cannot_be_a_base() {
            return Err(ErpNextError::Setup(format!(
                "erpnext.base_url {base_url} cannot be a base URL"
            )));
        }
        let mut auth =
            HeaderValue::from_str(&format!("token {api_key}:{api_secret}")).map_err(|_| {
                ErpNextError::Setup(
                    "API key or secret contains characters not allowed in a header".into(),
                )
            })?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(max_concurrency.max(1))
            .build()
            .map_err(|e| ErpNextError::Setup(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: base_url.clone(),
                auth,
                timeout,
                permits: Semaphore::new(max_concurrency.max(1)),
                config_problem: Mutex::new(None),
            }),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The last authentication/permission failure, until a call succeeds again.
    pub fn configuration_problem(&self) -> Option<String> {
        self.inner
            .config_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `GET /api/resource/<DocType>?filters=…&fields=…`.
    pub async fn list(&self, doctype: &str, query: &ListQuery) -> Result<Vec<Doc>, ErpNextError> {
        let mut url = self.resource_url(doctype, None);
        query.apply(doctype, &mut url);
        let body = self.send("list", doctype, Method::GET, url, None).await?;
        match body.get("data") {
            Some(Value::Array(rows)) => Ok(rows
                .iter()
                .filter_map(|r| r.as_object().cloned().map(Doc))
                .collect()),
            _ => Err(decode_error(
                "list",
                doctype,
                "no `data` list in the response",
            )),
        }
    }

    /// `GET /api/resource/<DocType>/<name>`; `None` on 404 `DoesNotExistError`.
    pub async fn get(&self, doctype: &str, name: &str) -> Result<Option<Doc>, ErpNextError> {
        let url = self.resource_url(doctype, Some(name));
        match self.send("get", doctype, Method::GET, url, None).await {
            Ok(body) => data_doc("get", doctype, body).map(Some),
            Err(ErpNextError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The first document whose `field` equals `value` (oldest first, so concurrent duplicates
    /// of a non-unique key always resolve to the same one), with `fields` (always incl. `name`).
    pub async fn find_by_field(
        &self,
        doctype: &str,
        field: &str,
        value: &str,
        fields: &[&str],
    ) -> Result<Option<Doc>, ErpNextError> {
        let mut all: Vec<&str> = vec!["name"];
        all.extend(fields.iter().copied().filter(|f| *f != "name"));
        let query = ListQuery::new()
            .filter(field, "=", value)
            .fields(&all)
            .oldest_first()
            .limit(1);
        Ok(self.list(doctype, &query).await?.into_iter().next())
    }

    /// Like [`ErpNextClient::find_by_field`], then the full document (child tables included).
    pub async fn get_by_field(
        &self,
        doctype: &str,
        field: &str,
        value: &str,
    ) -> Result<Option<Doc>, ErpNextError> {
        match self.find_by_field(doctype, field, value, &[]).await? {
            Some(row) => self.get(doctype, row.name()).await,
            None => Ok(None),
        }
    }

    /// `POST /api/resource/<DocType>`; the created document.
    pub async fn insert(&self, doctype: &str, doc: &Value) -> Result<Doc, ErpNextError> {
        let url = self.resource_url(doctype, None);
        let body = self
            .send("insert", doctype, Method::POST, url, Some(doc))
            .await?;
        data_doc("insert", doctype, body)
    }

    /// `PUT /api/resource/<DocType>/<name>` with the fields to change; the updated document.
    pub async fn update(
        &self,
        doctype: &str,
        name: &str,
        changes: &Value,
    ) -> Result<Doc, ErpNextError> {
        let url = self.resource_url(doctype, Some(name));
        let body = self
            .send("update", doctype, Method::PUT, url, Some(changes))
            .await?;
        data_doc("update", doctype, body)
    }

    /// Submit a draft: `PUT {"docstatus": 1}` (the captured way, no stale-`modified` check).
    pub async fn submit(&self, doctype: &str, name: &str) -> Result<Doc, ErpNextError> {
        let url = self.resource_url(doctype, Some(name));
        let body = self
            .send(
                "submit",
                doctype,
                Method::PUT,
                url,
                Some(&json!({"docstatus": 1})),
            )
            .await?;
        data_doc("submit", doctype, body)
    }

    /// `DELETE /api/resource/<DocType>/<name>`; `Ok(false)` when it was already gone (404).
    pub async fn delete(&self, doctype: &str, name: &str) -> Result<bool, ErpNextError> {
        let url = self.resource_url(doctype, Some(name));
        match self
            .send("delete", doctype, Method::DELETE, url, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(ErpNextError::Api { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /api/method/<dotted.path>`; the `message` of the answer.
    pub async fn call(&self, method: &str, args: &Value) -> Result<Value, ErpNextError> {
        let mut url = self.inner.base.clone();
        if let Ok(mut seg) = url.path_segments_mut() {
            seg.pop_if_empty().extend(["api", "method", method]);
        }
        let body = self
            .send("method", method, Method::POST, url, Some(args))
            .await?;
        Ok(body.get("message").cloned().unwrap_or(Value::Null))
    }

    fn resource_url(&self, doctype: &str, name: Option<&str>) -> Url {
        let mut url = self.inner.base.clone();
        // `cannot_be_a_base` was rejected at construction, so segments are always available.
        if let Ok(mut seg) = url.path_segments_mut() {
            seg.pop_if_empty().extend(["api", "resource", doctype]);
            if let Some(name) = name {
                seg.push(name);
            }
        }
        url
    }

    async fn send(
        &self,
        operation: &'static str,
        doctype: &str,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Value, ErpNextError> {
        metrics::gauge!(METRIC_WAITING).increment(1.0);
        let permit = self.inner.permits.acquire().await;
        metrics::gauge!(METRIC_WAITING).decrement(1.0);
        // The semaphore is never closed; a closed one would only mean "no cap".
        let _permit = permit.ok();
        let started = Instant::now();
        let mut req = self
            .inner
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.inner.auth.clone())
            .header(ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let result = self.exchange(operation, doctype, req).await;
        let status_label = match &result {
            Ok((status, _)) => status.to_string(),
            Err(ErpNextError::Api { status, .. }) => status.to_string(),
            Err(ErpNextError::Timeout { .. }) => "timeout".into(),
            Err(ErpNextError::Connect { .. }) => "connect_error".into(),
            Err(ErpNextError::Decode { .. }) => "decode_error".into(),
            Err(ErpNextError::Setup(_)) => "setup_error".into(),
        };
        metrics::counter!(METRIC_REQUESTS, "system" => SYSTEM, "operation" => operation, "status" => status_label)
            .increment(1);
        metrics::histogram!(METRIC_DURATION, "system" => SYSTEM, "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        let mut problem = self
            .inner
            .config_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => *problem = None,
            Err(e) if e.class() == ErrorClass::Configuration => *problem = Some(e.to_string()),
            Err(_) => {}
        }
        result.map(|(_, body)| body)
    }

    async fn exchange(
        &self,
        operation: &'static str,
        doctype: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Value), ErpNextError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ErpNextError::Timeout {
                    operation,
                    doctype: doctype.to_string(),
                    timeout: self.inner.timeout,
                }
            } else {
                ErpNextError::Connect {
                    operation,
                    doctype: doctype.to_string(),
                    reason: error_chain(&e),
                }
            }
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice::<Value>(&bytes)
                .map(|v| (status.as_u16(), v))
                .map_err(|e| {
                    decode_error(
                        operation,
                        doctype,
                        &format!("{status}: body is not JSON ({e})"),
                    )
                });
        }
        let parsed = parse_error_body(&bytes);
        let message = parsed.message.unwrap_or_else(|| {
            status
                .canonical_reason()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {}", status.as_u16()))
        });
        Err(ErpNextError::Api {
            operation,
            doctype: doctype.to_string(),
            status: status.as_u16(),
            exc_type: parsed.exc_type,
            message,
            retry_after: retry_after.filter(|_| {
                status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            }),
        })
    }
}

fn data_doc(operation: &'static str, doctype: &str, mut body: Value) -> Result<Doc, ErpNextError> {
    match body.get_mut("data").map(Value::take) {
        Some(Value::Object(map)) => Ok(Doc(map)),
        _ => Err(decode_error(
            operation,
            doctype,
            "no `data` document in the response",
        )),
    }
}

fn decode_error(operation: &'static str, doctype: &str, reason: &str) -> ErpNextError {
    ErpNextError::Decode {
        operation,
        doctype: doctype.to_string(),
        reason: reason.to_string(),
    }
}

/// `reqwest`'s top-level message is "error sending request"; the cause says why.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> ErpNextClient {
        ErpNextClient::with_token(
            &Url::parse(base).expect("url"),
            "key",
            "s3cret",
            Duration::from_millis(300),
            2,
        )
        .expect("client")
    }

    #[test]
    fn resource_urls_encode_doctype_and_name() {
        let c = client("http://erp.test:8000");
        assert_eq!(
            c.resource_url("Sales Order", Some("SAL-ORD-2026-00001"))
                .as_str(),
            "http://erp.test:8000/api/resource/Sales%20Order/SAL-ORD-2026-00001"
        );
        assert_eq!(
            c.resource_url("Customer", Some("A/B & C")).as_str(),
            "http://erp.test:8000/api/resource/Customer/A%2FB%20&%20C"
        );
        let c = client("http://erp.test/prefix/");
        assert_eq!(
            c.resource_url("Customer", None).as_str(),
            "http://erp.test/prefix/api/resource/Customer"
        );
    }

    #[test]
    fn list_query_uses_frappe_json_parameters() {
        let c = client("http://erp.test");
        let mut url = c.resource_url("Contact", None);
        ListQuery::new()
            .filter("hubspot_contact_id", "=", "hs-ct-2001")
            .child_filter("Dynamic Link", "link_name", "=", "Globex")
            .fields(&["name", "email_id"])
            .oldest_first()
            .limit(1)
            .apply("Contact", &mut url);
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            vec![
                (
                    "filters".into(),
                    r#"[["hubspot_contact_id","=","hs-ct-2001"],["Dynamic Link","link_name","=","Globex"]]"#.into()
                ),
                ("fields".into(), r#"["name","email_id"]"#.into()),
                // Qualified: the child-table filter joins `tabDynamic Link`, which has its own
                // `creation` (live-findings/address_list_by_linked_customer_order_by_*.json).
                (
                    "order_by".into(),
                    "`tabContact`.creation asc, `tabContact`.name asc".into()
                ),
                ("limit_page_length".into(), "1".into()),
            ]
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = client("http://erp.test");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(c.inner.auth.is_sensitive());
    }

    #[test]
    fn missing_credentials_are_a_setup_error() {
        let cfg = ErpNextConfig::default();
        let err = ErpNextClient::new(&cfg).expect_err("no key");
        assert_eq!(err.class(), ErrorClass::Configuration);
        assert!(err.to_string().contains("api_key"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_server_is_transient() {
        // Port 1 on loopback refuses connections.
        let c = client("http://127.0.0.1:1");
        let err = c
            .list("Customer", &ListQuery::new())
            .await
            .expect_err("refused");
        assert_eq!(err.class(), ErrorClass::Transient, "{err}");
        assert!(matches!(err, ErpNextError::Connect { .. }), "{err:?}");
    }

    /// A server that answers every request after 100 ms and records the most requests it ever
    /// had in flight at once.
    async fn counting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let now = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let max_out = max.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (now, max) = (now.clone(), max.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        // One request per read is enough for these bodiless GETs.
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        let body = r#"{"data": []}"#;
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), max_out)
    }

    #[tokio::test]
    async fn requests_in_flight_never_exceed_the_cap() {
        let (base, max) = counting_server().await;
        let c = ErpNextClient::with_token(
            &Url::parse(&base).expect("url"),
            "k",
            "s",
            Duration::from_secs(5),
            2,
        )
        .expect("client");
        let calls = (0..6).map(|_| {
            let c = c.clone();
            async move { c.list("Customer", &ListQuery::new()).await }
        });
        for r in futures_util::future::join_all(calls).await {
            assert!(r.expect("ok").is_empty());
        }
        assert_eq!(max.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn slow_server_times_out_as_transient() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accept and never answer.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let c = client(&format!("http://{addr}"));
        let err = c.get("Customer", "x").await.expect_err("timeout");
        assert!(matches!(err, ErpNextError::Timeout { .. }), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Transient);
        hold.abort();
    }
}
