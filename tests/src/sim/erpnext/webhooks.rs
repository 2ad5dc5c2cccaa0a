//! Frappe 15's webhook dispatcher and its delivery job.
//!
//! After a request commits, every doc event it raised is matched against the enabled Webhook
//! documents (`webhook_doctype` + `webhook_docevent`, optional `condition`). As in
//! `frappe.integrations.doctype.webhook.__init__.run_webhooks`, the events that can fire are
//! `after_insert`, `on_update`, `on_submit`, `on_cancel`, `on_trash`, and, outside an insert,
//! `on_change`; `on_update_after_submit` is raised but never matches (the dispatcher only lists
//! `before_update_after_submit`). One webhook fires at most once per document per request.
//!
//! The body is the `webhook_json` Jinja template rendered with `doc` (minijinja), parsed and
//! re-serialised exactly like Python's `json.dumps` (see `pyjson`), signed with
//! `X-Frappe-Webhook-Signature` when `enable_security` is set. Configured headers are added
//! as given: Frappe sends no Content-Type of its own. Delivery is asynchronous with three
//! attempts; a timed-out attempt is retried at once, another failure after a pause.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::doctypes::{DocView, Nulls, str_of, truthy};
use super::pyjson::PyValue;
use super::state::{Doc, Site};
use shared::signature::frappe_sign;

/// A document event raised by a request.
#[derive(Debug, Clone)]
pub struct DocEvent {
    pub doctype: String,
    pub name: String,
    pub event: &'static str,
    /// Raised while inserting: `on_change` does not fire then.
    pub in_insert: bool,
    /// The document as it was, for `on_trash`.
    pub snapshot: Option<Doc>,
}

/// One webhook delivery and what happened to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDelivery {
    pub id: usize,
    pub webhook: String,
    pub doctype: String,
    pub docname: String,
    pub event: String,
    pub method: String,
    pub url: String,
    /// Headers Frappe sets (signature, configured ones), in order.
    pub headers: Vec<(String, String)>,
    /// The exact bytes sent (and signed).
    pub body: String,
    pub attempts: Vec<DeliveryAttempt>,
    pub state: DeliveryState,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryAttempt {
    pub status: Option<u16>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Three attempts failed (Frappe logs it in Webhook Request Log).
    Failed,
    /// The template did not render to JSON; nothing was sent (Frappe logs an Error Log).
    NotRendered,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template error: {0}")]
    Template(#[from] minijinja::Error),
    #[error("rendered text is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // Frappe's Jinja environment does not auto-escape.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// Render a `webhook_json` template against `doc` and serialise the result as Frappe sends it.
pub fn render_json(template: &str, doc: &Value) -> Result<String, RenderError> {
    let env = environment();
    let ctx = minijinja::context! { doc => minijinja::Value::from_serialize(doc) };
    let text = env.render_str(template, ctx)?;
    Ok(PyValue::parse(&text)?.dumps())
}

fn condition_holds(condition: &str, doc: &Value) -> Result<bool, minijinja::Error> {
    let env = environment();
    let expr = env.compile_expression(condition)?;
    Ok(expr
        .eval(minijinja::context! { doc => minijinja::Value::from_serialize(doc) })?
        .is_true())
}

fn rows(doc: &Doc, table: &str) -> Vec<serde_json::Map<String, Value>> {
    doc.get(table)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_object().cloned())
        .collect()
}

/// The body of `webhook` for `doc` (full view).
pub fn render_body(webhook: &Doc, doc: &Value) -> Result<String, RenderError> {
    if str_of(webhook, "request_structure").as_deref() == Some("Form URL-Encoded") {
        let entries = rows(webhook, "webhook_data")
            .iter()
            .map(|r| {
                let key = str_of(r, "key").unwrap_or_default();
                let field = str_of(r, "fieldname").unwrap_or_default();
                (key, PyValue::from(doc.get(&field).unwrap_or(&Value::Null)))
            })
            .collect();
        return Ok(PyValue::Dict(entries).dumps());
    }
    render_json(
        &str_of(webhook, "webhook_json").unwrap_or_else(|| "{}".into()),
        doc,
    )
}

struct Planned {
    id: usize,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: String,
    timeout: Duration,
}

/// Turns doc events into deliveries and runs them in the background.
#[derive(Debug)]
pub struct Dispatcher {
    client: reqwest::Client,
    log: Mutex<Vec<WebhookDelivery>>,
    retry_delays: Mutex<Vec<Duration>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Dispatcher {
    pub fn new(retry_delays_ms: &[u64], cancel: CancellationToken) -> Self {
        Self {
            client: reqwest::Client::builder()
                .user_agent("python-requests/2.32.5")
                .build()
                .unwrap_or_default(),
            log: Mutex::new(Vec::new()),
            retry_delays: Mutex::new(
                retry_delays_ms
                    .iter()
                    .map(|ms| Duration::from_millis(*ms))
                    .collect(),
            ),
            tracker: TaskTracker::new(),
            cancel,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Vec<WebhookDelivery>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn deliveries(&self) -> Vec<WebhookDelivery> {
        self.log().clone()
    }

    pub fn clear(&self) {
        self.log().clear();
    }

    pub fn set_retry_delays(&self, ms: &[u64]) {
        *self.retry_delays.lock().unwrap_or_else(|e| e.into_inner()) =
            ms.iter().map(|m| Duration::from_millis(*m)).collect();
    }

    /// Wait for running deliveries (bounded by the caller).
    pub async fn drain(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Match `events` against the site's webhooks (under the site lock, so `doc` is the state
    /// the request committed) and start the deliveries.
    pub fn dispatch(self: &Arc<Self>, site: &Site, events: Vec<DocEvent>) {
        let mut fired: Vec<(String, String)> = Vec::new();
        let webhooks: Vec<Doc> = site
            .all("Webhook")
            .filter(|w| truthy(w.get("enabled")))
            .cloned()
            .collect();
        for ev in events {
            let allowed = [
                "on_update",
                "after_insert",
                "on_submit",
                "on_cancel",
                "on_trash",
            ]
            .contains(&ev.event)
                || (!ev.in_insert
                    && ["on_change", "before_update_after_submit"].contains(&ev.event));
            if !allowed {
                continue;
            }
            let Some(stored) = ev
                .snapshot
                .clone()
                .or_else(|| site.get(&ev.doctype, &ev.name).cloned())
            else {
                continue;
            };
            let doc = DocView::new(&site.reg, &ev.doctype, &stored, Nulls::Keep).to_value();
            for wh in &webhooks {
                let wh_name = str_of(wh, "name").unwrap_or_default();
                if str_of(wh, "webhook_doctype").as_deref() != Some(ev.doctype.as_str())
                    || str_of(wh, "webhook_docevent").as_deref() != Some(ev.event)
                {
                    continue;
                }
                if let Some(cond) = str_of(wh, "condition")
                    && !condition_holds(&cond, &doc).unwrap_or(false)
                {
                    continue;
                }
                let key = (ev.name.clone(), wh_name.clone());
                if fired.contains(&key) {
                    continue;
                }
                fired.push(key);
                self.start(wh, &ev, &doc);
            }
        }
    }

    fn start(self: &Arc<Self>, wh: &Doc, ev: &DocEvent, doc: &Value) {
        let mut url = str_of(wh, "request_url").unwrap_or_default();
        if truthy(wh.get("is_dynamic_url")) {
            let env = environment();
            if let Ok(u) = env.render_str(
                &url,
                minijinja::context! { doc => minijinja::Value::from_serialize(doc) },
            ) {
                url = u;
            }
        }
        let method = str_of(wh, "request_method").unwrap_or_else(|| "POST".into());
        let rendered = render_body(wh, doc);
        let body = rendered.as_ref().map(String::clone).unwrap_or_default();
        let mut headers = Vec::new();
        if truthy(wh.get("enable_security")) {
            let secret = str_of(wh, "webhook_secret").unwrap_or_default();
            headers.push((
                "X-Frappe-Webhook-Signature".to_string(),
                frappe_sign(&secret, body.as_bytes()),
            ));
        }
        for h in rows(wh, "webhook_headers") {
            if let (Some(k), Some(v)) = (str_of(&h, "key"), str_of(&h, "value")) {
                headers.retain(|(existing, _)| *existing != k);
                headers.push((k, v));
            }
        }
        let timeout = Duration::from_secs(
            wh.get("timeout")
                .and_then(Value::as_u64)
                .filter(|t| *t > 0)
                .unwrap_or(5),
        );
        let mut log = self.log();
        let id = log.len();
        log.push(WebhookDelivery {
            id,
            webhook: str_of(wh, "name").unwrap_or_default(),
            doctype: ev.doctype.clone(),
            docname: ev.name.clone(),
            event: ev.event.to_string(),
            method: method.clone(),
            url: url.clone(),
            headers: headers.clone(),
            body: body.clone(),
            attempts: Vec::new(),
            state: if rendered.is_ok() {
                DeliveryState::Pending
            } else {
                DeliveryState::NotRendered
            },
        });
        drop(log);
        if let Err(e) = rendered {
            tracing::warn!(webhook = %str_of(wh, "name").unwrap_or_default(), error = %e, "webhook template did not render");
            return;
        }
        let planned = Planned {
            id,
            method,
            url,
            headers,
            body,
            timeout,
        };
        let this = Arc::clone(self);
        self.tracker.spawn(async move { this.run(planned).await });
    }

    fn record(&self, id: usize, attempt: DeliveryAttempt, state: Option<DeliveryState>) {
        let mut log = self.log();
        if let Some(d) = log.get_mut(id) {
            d.attempts.push(attempt);
            if let Some(state) = state {
                d.state = state;
            }
        }
    }

    async fn run(self: Arc<Self>, p: Planned) {
        let delays = self
            .retry_delays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let method =
            reqwest::Method::from_bytes(p.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        for attempt in 0..3usize {
            let mut req = self
                .client
                .request(method.clone(), &p.url)
                .timeout(p.timeout);
            req = req
                .header("Accept", "*/*")
                .header("Accept-Encoding", "gzip, deflate, br");
            for (k, v) in &p.headers {
                req = req.header(k, v);
            }
            let sent = tokio::select! {
                r = req.body(p.body.clone()).send() => r,
                () = self.cancel.cancelled() => return,
            };
            let last = attempt == 2;
            let (outcome, pause) = match sent {
                Ok(resp) if resp.status().is_success() => {
                    let status = resp.status().as_u16();
                    self.record(
                        p.id,
                        DeliveryAttempt {
                            status: Some(status),
                            error: None,
                        },
                        Some(DeliveryState::Delivered),
                    );
                    return;
                }
                Ok(resp) => (
                    DeliveryAttempt {
                        status: Some(resp.status().as_u16()),
                        error: Some(format!("HTTP {}", resp.status())),
                    },
                    true,
                ),
                // requests' ReadTimeout: Frappe retries at once.
                Err(e) if e.is_timeout() => (
                    DeliveryAttempt {
                        status: None,
                        error: Some(format!("timeout: {e}")),
                    },
                    false,
                ),
                Err(e) => (
                    DeliveryAttempt {
                        status: None,
                        error: Some(e.to_string()),
                    },
                    true,
                ),
            };
            self.record(p.id, outcome, last.then_some(DeliveryState::Failed));
            if pause && !last {
                let delay = delays
                    .get(attempt)
                    .copied()
                    .unwrap_or(Duration::from_secs(1));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.cancel.cancelled() => return,
                }
            }
        }
    }
}
