//! A counting reverse proxy in front of ERPNext, so "ERPNext calls per synced deal" can be measured
//! against a real site as well as the simulator (whose own counters cannot see a real site).
//!
//! The services are pointed at the proxy; the test's own REST reads ([`super::ErpNext`]) go
//! straight to the site and are not counted. Each request is forwarded as it came (method, path,
//! query, headers but `Host`, body) and answered as the site answered; only the count is added.
//! Frappe serves the site whatever the `Host` header says (`deploy/erpnext/l2l_wsgi.py`), and the
//! simulator ignores it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Calls by operation (`GET Sales Order (list)`, `POST method erpnext.…`), as counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErpCalls(pub BTreeMap<String, u64>);

impl ErpCalls {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The calls made after `earlier` was taken.
    pub fn since(&self, earlier: &ErpCalls) -> ErpCalls {
        ErpCalls(
            self.0
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v - earlier.0.get(k).copied().unwrap_or(0).min(*v),
                    )
                })
                .filter(|(_, v)| *v > 0)
                .collect(),
        )
    }

    /// Calls per doctype they were made for: `Customer`, `Sales Order`, `Address+Contact` (one
    /// batch insert of both), `Sales Taxes and Charges Template` (the tax rows method).
    pub fn by_doctype(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (op, n) in &self.0 {
            *out.entry(doctype_of(op)).or_default() += n;
        }
        out
    }
}

/// The doctype an operation key is about (see [`operation`]).
fn doctype_of(op: &str) -> String {
    let rest = op.split_once(' ').map_or(op, |(_, r)| r);
    if let Some(method) = rest.strip_prefix("method ") {
        return match method.split_once(" [") {
            // `frappe.client.insert_many [Address, Contact×2]`
            Some((_, docs)) => docs
                .trim_end_matches(']')
                .split(", ")
                .map(|d| d.split('×').next().unwrap_or(d))
                .collect::<Vec<_>>()
                .join("+"),
            None => match method.rsplit('.').next().unwrap_or(method) {
                "get_taxes_and_charges" => "Sales Taxes and Charges Template".into(),
                "make_sales_invoice" => "Sales Invoice".into(),
                "get_payment_entry" => "Payment Entry".into(),
                other => format!("method {other}"),
            },
        };
    }
    rest.split(" (").next().unwrap_or(rest).to_string()
}

impl std::fmt::Display for ErpCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} calls", self.total())?;
        let by_doctype: Vec<String> = self
            .by_doctype()
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        if !by_doctype.is_empty() {
            write!(f, "; by doctype: {}", by_doctype.join(", "))?;
        }
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        if !parts.is_empty() {
            write!(f, "; by call: {}", parts.join(", "))?;
        }
        Ok(())
    }
}

struct ProxyState {
    upstream: Url,
    http: reqwest::Client,
    counts: Mutex<BTreeMap<String, u64>>,
}

/// A running proxy; stops when dropped or shut down.
pub struct ErpCallCounter {
    url: Url,
    state: Arc<ProxyState>,
    cancel: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ErpCallCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErpCallCounter")
            .field("url", &self.url.as_str())
            .field("upstream", &self.state.upstream.as_str())
            .finish()
    }
}

impl ErpCallCounter {
    /// Listen on a free loopback port and forward to `upstream`.
    pub async fn start(upstream: Url) -> anyhow::Result<ErpCallCounter> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url: Url = format!("http://{}", listener.local_addr()?).parse()?;
        // No timeout of its own: the services' client decides when a call took too long, and
        // dropping its connection drops the forwarded request with it.
        let http = reqwest::Client::builder()
            .build()
            .context("building the proxy's HTTP client")?;
        let state = Arc::new(ProxyState {
            upstream,
            http,
            counts: Mutex::new(BTreeMap::new()),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(ErpCallCounter {
            url,
            state,
            cancel,
            server: Some(server),
        })
    }

    /// The URL to give the services as `erpnext.base_url`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn snapshot(&self) -> ErpCalls {
        ErpCalls(
            self.state
                .counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    pub fn reset(&self) {
        self.state
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for ErpCallCounter {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// `GET Sales Order (list)`, `PUT Sales Order (update)`, `POST method frappe.client.get_password`;
/// a batch insert names what it inserts: `POST method frappe.client.insert_many [Address,
/// Contact×2]`.
fn operation(method: &str, path: &str, body: &[u8]) -> String {
    let op = plain_operation(method, path);
    if !op.ends_with("frappe.client.insert_many") {
        return op;
    }
    let docs: Vec<String> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|b| {
            let docs = match &b["docs"] {
                serde_json::Value::String(s) => serde_json::from_str(s).ok()?,
                other => other.clone(),
            };
            docs.as_array().map(|d| {
                d.iter()
                    .map(|doc| doc["doctype"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
        })
        .unwrap_or_default();
    let mut counted: Vec<(String, usize)> = Vec::new();
    for d in docs {
        match counted.iter_mut().find(|(n, _)| *n == d) {
            Some((_, c)) => *c += 1,
            None => counted.push((d, 1)),
        }
    }
    counted.sort();
    let parts: Vec<String> = counted
        .into_iter()
        .map(|(d, c)| if c == 1 { d } else { format!("{d}×{c}") })
        .collect();
    format!("{op} [{}]", parts.join(", "))
}

fn plain_operation(method: &str, path: &str) -> String {
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| s.to_string())
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "resource", doctype] => {
            let op = if method == "POST" { "insert" } else { "list" };
            format!("{method} {} ({op})", decode(doctype))
        }
        ["api", "resource", doctype, _name] => {
            let op = match method {
                "GET" => "get",
                "DELETE" => "delete",
                _ => "update",
            };
            format!("{method} {} ({op})", decode(doctype))
        }
        ["api", "method", m] => format!("{method} method {m}"),
        _ => format!("{method} {path}"),
    }
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let body = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("proxy: {e}")).into_response(),
    };
    *state
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(operation(parts.method.as_str(), parts.uri.path(), &body))
        .or_default() += 1;
    let Ok(url) = state.upstream.join(&path_and_query) else {
        return (StatusCode::BAD_GATEWAY, "proxy: bad path").into_response();
    };
    let skip = |name: &HeaderName| {
        name == header::HOST || name == header::CONTENT_LENGTH || name == header::CONNECTION
    };
    let mut upstream = state.http.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        if !skip(name) {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(a) => a,
        Err(e) => {
            return (StatusCode::BAD_GATEWAY, format!("proxy: upstream: {e}")).into_response();
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("proxy: upstream body: {e}"),
            )
                .into_response();
        }
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !skip(name) && name != header::TRANSFER_ENCODING {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_name_the_doctype_and_what_was_done() {
        assert_eq!(
            operation("GET", "/api/resource/Sales%20Order", b""),
            "GET Sales Order (list)"
        );
        assert_eq!(
            operation("PUT", "/api/resource/Sales%20Order/SAL-ORD-2026-00001", b""),
            "PUT Sales Order (update)"
        );
        assert_eq!(
            operation("POST", "/api/method/frappe.client.get_password", b"{}"),
            "POST method frappe.client.get_password"
        );
        let batch = br#"{"docs": [{"doctype": "Contact"}, {"doctype": "Address"}, {"doctype": "Contact"}]}"#;
        let op = operation("POST", "/api/method/frappe.client.insert_many", batch);
        assert_eq!(
            op,
            "POST method frappe.client.insert_many [Address, Contact×2]"
        );
        let calls = ErpCalls(
            [
                (op, 1),
                ("GET Contact (list)".to_string(), 1),
                ("POST Customer (insert)".to_string(), 1),
                ("GET Customer (list)".to_string(), 1),
                (
                    "POST method erpnext.controllers.accounts_controller.get_taxes_and_charges"
                        .to_string(),
                    1,
                ),
            ]
            .into(),
        );
        assert_eq!(
            calls.by_doctype(),
            [
                ("Address+Contact".to_string(), 1),
                ("Contact".to_string(), 1),
                ("Customer".to_string(), 2),
                ("Sales Taxes and Charges Template".to_string(), 1),
            ]
            .into()
        );
    }

    #[test]
    fn since_subtracts_per_operation() {
        let a = ErpCalls([("x".to_string(), 2), ("y".to_string(), 1)].into());
        let b = ErpCalls([("x".to_string(), 5), ("y".to_string(), 1)].into());
        assert_eq!(b.since(&a), ErpCalls([("x".to_string(), 3)].into()));
        assert_eq!(b.since(&a).total(), 3);
    }
}
