//! The simulator's own control surface under `/_sim/` (no auth, never fault-injected): reset and
//! seed state, set a naming series' counter, read documents and call counters, set faults, and
//! play the ERPNext user who invoices an order, records a payment or lets an invoice go overdue —
//! each of which fires the same webhooks the real site does.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Shared;
use super::controllers::{self, s};
use super::doctypes::{DocView, Nulls};
use super::documents;
use super::errors::{FrappeError, json_response};
use crate::sim::faults::FaultConfig;

impl Shared {
    /// Insert a document through the normal path (validation, naming, webhooks); a body with
    /// `docstatus: 1` is submitted. Returns the stored document (full view).
    pub fn seed_doc(&self, doctype: &str, body: &Map<String, Value>) -> Result<Value, FrappeError> {
        self.write(|site, txn| {
            let out = documents::insert(site, txn, doctype, body)?;
            Ok(DocView::new(&site.reg, doctype, &out.doc, Nulls::Keep).to_value())
        })
    }

    pub fn doc(&self, doctype: &str, name: &str) -> Option<Value> {
        let site = self.site();
        let doc = site.get(doctype, name)?;
        Some(DocView::new(&site.reg, doctype, doc, Nulls::Keep).to_value())
    }

    pub fn docs(&self, doctype: &str) -> Vec<Value> {
        let site = self.site();
        let mut docs: Vec<&super::state::Doc> = site.all(doctype).collect();
        docs.sort_by_key(|d| s(d, "creation"));
        docs.iter()
            .map(|d| DocView::new(&site.reg, doctype, d, Nulls::Keep).to_value())
            .collect()
    }

    /// A person saving `changes` to a document in the desk as `user` (not the API user), so
    /// its `modified_by` names them. Returns the stored document.
    pub fn edit_as(
        &self,
        doctype: &str,
        name: &str,
        user: &str,
        changes: &Map<String, Value>,
    ) -> Result<Value, FrappeError> {
        self.write(|site, txn| documents::save(site, txn, doctype, name, changes))?;
        self.write(|site, _| {
            let mut doc = site
                .get(doctype, name)
                .cloned()
                .ok_or_else(|| FrappeError::not_found(doctype, name))?;
            doc.insert("modified_by".into(), json!(user));
            site.put(doctype, doc);
            Ok(())
        })?;
        self.doc(doctype, name)
            .ok_or_else(|| FrappeError::not_found(doctype, name))
    }

    /// What a user does in the desk: make the invoice from the order, save it, submit it
    /// (three requests, so `on_update` fires for the draft and again on submit).
    pub fn invoice_sales_order(&self, sales_order: &str) -> Result<String, FrappeError> {
        let draft = self.write(|site, _| controllers::make_sales_invoice(site, sales_order))?;
        let name = self.write(|site, txn| {
            documents::insert(site, txn, "Sales Invoice", &draft).map(|o| s(&o.doc, "name"))
        })?;
        let submit: Map<String, Value> =
            [("docstatus".to_string(), json!(1))].into_iter().collect();
        self.write(|site, txn| documents::save(site, txn, "Sales Invoice", &name, &submit))?;
        Ok(name)
    }

    /// Record a payment against the invoice (`amount` defaults to the outstanding amount) and
    /// submit it; the invoice turns Paid (or Partly Paid) and fires `on_change`.
    pub fn pay_invoice(&self, invoice: &str, amount: Option<f64>) -> Result<String, FrappeError> {
        let mut pe =
            self.write(|site, _| controllers::get_payment_entry(site, "Sales Invoice", invoice))?;
        let count = self.site().all("Payment Entry").count() + 1;
        pe.insert("mode_of_payment".into(), json!("Wire Transfer"));
        pe.insert("reference_no".into(), json!(format!("SIM-PAY-{count:04}")));
        if let Some(amount) = amount {
            for k in ["paid_amount", "received_amount"] {
                pe.insert(k.into(), json!(amount));
            }
            if let Some(Value::Array(refs)) = pe.get_mut("references")
                && let Some(Value::Object(r)) = refs.first_mut()
            {
                r.insert("allocated_amount".into(), json!(amount));
            }
        }
        let name = self.write(|site, txn| {
            documents::insert(site, txn, "Payment Entry", &pe).map(|o| s(&o.doc, "name"))
        })?;
        let submit: Map<String, Value> =
            [("docstatus".to_string(), json!(1))].into_iter().collect();
        self.write(|site, txn| documents::save(site, txn, "Payment Entry", &name, &submit))?;
        Ok(name)
    }

    /// The scheduler marking an unpaid invoice Overdue (`true`), or undoing it. Returns the status.
    pub fn set_invoice_overdue(&self, invoice: &str, overdue: bool) -> Result<String, FrappeError> {
        self.write(|site, txn| controllers::set_overdue(site, txn, invoice, overdue))
    }

    pub fn reset(&self) {
        self.site().reset();
        self.faults.reset_counters();
        self.dispatcher.clear();
    }
}

pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/reset", post(reset))
        .route("/_sim/seed", post(seed))
        .route("/_sim/docs/{doctype}", get(docs))
        .route("/_sim/docs/{doctype}/{*name}", get(doc))
        .route("/_sim/calls", get(calls).delete(reset_calls))
        .route("/_sim/calls/reset", post(reset_calls))
        .route("/_sim/faults", get(faults).put(set_faults))
        .route("/_sim/denied-doctypes", put(set_denied))
        .route("/_sim/series", put(set_series))
        .route("/_sim/sales-orders/{name}/invoice", post(invoice))
        .route("/_sim/invoices/{name}/pay", post(pay))
        .route(
            "/_sim/invoices/{name}/overdue",
            post(overdue).delete(not_overdue),
        )
        .route(
            "/_sim/webhooks/deliveries",
            get(deliveries).delete(clear_deliveries),
        )
}

fn ok(v: Value) -> Response {
    json_response(StatusCode::OK, &v)
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.reset();
    ok(json!({"ok": true}))
}

/// `{"doctype": ..., fields...}` or a list of them; inserted in order.
async fn seed(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Response, FrappeError> {
    let value: Value = serde_json::from_slice(&body).map_err(|e| FrappeError::JsonDecode {
        message: e.to_string(),
    })?;
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut names = Vec::new();
    for item in items {
        let Value::Object(doc) = item else {
            return Err(FrappeError::validation(
                "each seed item must be an object with a doctype",
            ));
        };
        let doctype = s(&doc, "doctype");
        let stored = shared.seed_doc(&doctype, &doc)?;
        names.push(
            json!({"doctype": doctype, "name": stored.get("name").cloned().unwrap_or(Value::Null)}),
        );
    }
    Ok(ok(json!({"seeded": names})))
}

async fn docs(State(shared): State<Arc<Shared>>, Path(doctype): Path<String>) -> Response {
    ok(Value::Array(shared.docs(&doctype)))
}

async fn doc(
    State(shared): State<Arc<Shared>>,
    Path((doctype, name)): Path<(String, String)>,
) -> Result<Response, FrappeError> {
    shared
        .doc(&doctype, &name)
        .map(ok)
        .ok_or_else(|| FrappeError::not_found(&doctype, &name))
}

async fn calls(State(shared): State<Arc<Shared>>) -> Response {
    ok(json!({"calls": shared.faults.calls(), "injected": shared.faults.injected()}))
}

async fn reset_calls(State(shared): State<Arc<Shared>>) -> Response {
    shared.faults.reset_counters();
    ok(json!({"ok": true}))
}

async fn faults(State(shared): State<Arc<Shared>>) -> Response {
    ok(serde_json::to_value(shared.faults.config()).unwrap_or_default())
}

async fn set_faults(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, FrappeError> {
    let cfg: FaultConfig = serde_json::from_slice(&body)
        .map_err(|e| FrappeError::validation(format!("invalid fault config: {e}")))?;
    shared.faults.set(cfg.clone());
    Ok(ok(serde_json::to_value(cfg).unwrap_or_default()))
}

async fn set_denied(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, FrappeError> {
    let list: Vec<String> = serde_json::from_slice(&body)
        .map_err(|e| FrappeError::validation(format!("expected a list of doctypes: {e}")))?;
    shared.site().config.denied_doctypes = list.clone();
    Ok(ok(json!({"denied_doctypes": list})))
}

#[derive(Deserialize)]
struct SeriesBody {
    prefix: String,
    current: u64,
}

/// `{"prefix": "SAL-ORD-2026-", "current": 47}`: the next name of the series is `...-00048`.
async fn set_series(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, FrappeError> {
    let b: SeriesBody = serde_json::from_slice(&body)
        .map_err(|e| FrappeError::validation(format!("expected {{prefix, current}}: {e}")))?;
    shared.site().set_series(&b.prefix, b.current);
    Ok(ok(json!({"prefix": b.prefix, "current": b.current})))
}

async fn invoice(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Response, FrappeError> {
    let invoice = shared.invoice_sales_order(&name)?;
    Ok(ok(json!({"name": invoice})))
}

#[derive(Deserialize, Default)]
struct PayBody {
    amount: Option<f64>,
}

async fn pay(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, FrappeError> {
    let body: PayBody = if body.is_empty() {
        PayBody::default()
    } else {
        serde_json::from_slice(&body).unwrap_or_default()
    };
    let payment = shared.pay_invoice(&name, body.amount)?;
    let status = shared
        .doc("Sales Invoice", &name)
        .and_then(|d| d.get("status").cloned());
    Ok(ok(json!({"name": payment, "invoice_status": status})))
}

async fn overdue(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Response, FrappeError> {
    let status = shared.set_invoice_overdue(&name, true)?;
    Ok(ok(json!({"name": name, "status": status})))
}

async fn not_overdue(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Response, FrappeError> {
    let status = shared.set_invoice_overdue(&name, false)?;
    Ok(ok(json!({"name": name, "status": status})))
}

async fn deliveries(State(shared): State<Arc<Shared>>) -> Response {
    ok(serde_json::to_value(shared.dispatcher.deliveries()).unwrap_or_default())
}

async fn clear_deliveries(State(shared): State<Arc<Shared>>) -> Response {
    shared.dispatcher.clear();
    ok(json!({"ok": true}))
}
