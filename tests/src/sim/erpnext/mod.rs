//! A stateful, in-memory ERPNext (Frappe 15.92 / ERPNext 15.92) for tests, faithful to the
//! captures in `tests/contracts/erpnext` (status codes, error bodies, naming, statuses, webhooks).
//!
//! Layout:
//! * `config`: credentials, company defaults, seeded master data, faults;
//! * `state`: the store, naming series and the site clock; `doctypes`: field metadata (from
//!   `schema.json`, distilled from the captures) and Frappe's JSON views of a document;
//! * `documents`: the document life cycle (insert, save, submit, cancel, delete, amend);
//!   `controllers`: what each doctype adds (Sales Order totals, invoice/payment effects...),
//!   with `pricing` (row prices), `taxes` (template rows, tax computation), `accounts`
//!   (receivable accounts, currencies, exchange rates) and `money` (Frappe's rounding);
//!   `validation`: mandatory/link/unique/update-after-submit checks; `filters`: list queries
//!   (joins, MariaDB's column resolution);
//! * `routes`: `/api/resource` and `/api/method`; `admin`: `/_sim/*`; `errors`: Frappe's error
//!   bodies; `webhooks` + `pyjson`: Frappe's webhook dispatcher and its exact body bytes;
//!   `words`: amounts in words.
//!
//! Not simulated: stock ledger, GL entries, delivery notes, user permissions beyond a per-doctype
//! deny list, Frappe's background jobs other than webhook delivery.

mod accounts;
mod admin;
mod config;
mod controllers;
mod doctypes;
mod documents;
mod errors;
mod filters;
mod money;
mod pricing;
pub mod pyjson;
mod routes;
mod state;
mod taxes;
mod validation;
pub mod webhooks;
mod words;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{
    ConfigFileError, CustomFields, ErpNextSimConfig, SeedAccount, SeedItem, SeedPriceList,
    SeedTaxTemplate,
};
pub use errors::FrappeError;
pub use webhooks::{DeliveryAttempt, DeliveryState, WebhookDelivery, render_json};

use crate::sim::faults::{FaultConfig, Faults};
use documents::Txn;
use state::Site;
use webhooks::Dispatcher;

/// Why the simulator did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid simulator config: {0}")]
    Config(String),
    #[error("listener has no local address: {0}")]
    Listener(#[from] std::io::Error),
}

/// State shared by the HTTP handlers and the in-process handle.
#[derive(Debug)]
pub struct Shared {
    site: Mutex<Site>,
    faults: Faults,
    dispatcher: Arc<Dispatcher>,
    late: LateCommits,
}

/// Late commits: inserts held back until the test releases them, then applied whether or not
/// the client still waits — a request that outlives the client's timeout and commits on the
/// server later (gunicorn keeps working after the client has gone). Unlike the `Hang` fault,
/// which applies first and answers late, the write itself happens late, so a client's retry
/// can get in first.
#[derive(Debug)]
struct LateCommits {
    state: Mutex<LateState>,
    /// Bumped by each release; a held request waits for the next bump.
    release: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct LateState {
    /// Doctype → how many more requests inserting it to hold.
    armed: BTreeMap<String, u32>,
    /// Requests held now.
    waiting: usize,
    /// The HTTP status each released request was answered with, in the order they finished.
    finished: Vec<u16>,
}

impl LateCommits {
    fn new() -> Self {
        Self {
            state: Mutex::new(LateState::default()),
            release: tokio::sync::watch::channel(0).0,
        }
    }

    fn state(&self) -> MutexGuard<'_, LateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request inserting `doctypes` is held (counted against what is armed): the
    /// receiver to wait on for its release, subscribed before the hold is counted, so a release
    /// right after is not missed.
    fn hold(&self, doctypes: &[&str]) -> Option<tokio::sync::watch::Receiver<u64>> {
        let release = self.release.subscribe();
        let mut st = self.state();
        let dt = doctypes
            .iter()
            .find(|dt| st.armed.get(**dt).is_some_and(|n| *n > 0))?;
        if let Some(n) = st.armed.get_mut(*dt) {
            *n -= 1;
        }
        st.waiting += 1;
        Some(release)
    }
}

impl Shared {
    /// Run `work` as a late commit (see [`LateCommits`]): in its own task, so it completes
    /// even when the client has hung up and its request future is dropped.
    async fn late_write(
        self: &Arc<Self>,
        mut release: tokio::sync::watch::Receiver<u64>,
        work: impl FnOnce(&Shared) -> Result<axum::response::Response, FrappeError> + Send + 'static,
    ) -> Result<axum::response::Response, FrappeError> {
        let shared = Arc::clone(self);
        let task = tokio::spawn(async move {
            // Any bump after the hold releases it; a closed channel (simulator gone) too.
            let _ = release.changed().await;
            let result = work(&shared);
            let status = match &result {
                Ok(r) => r.status().as_u16(),
                Err(e) => e.status().as_u16(),
            };
            let mut st = shared.late.state();
            st.waiting = st.waiting.saturating_sub(1);
            st.finished.push(status);
            result
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(FrappeError::Type {
                message: format!("late commit task failed: {e}"),
            }),
        }
    }
}

impl Shared {
    fn site(&self) -> MutexGuard<'_, Site> {
        // A panicking handler leaves at worst one half-applied request; keep serving.
        self.site.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run one request's worth of work as a transaction: if it failed, undo what it wrote;
    /// if it succeeded, dispatch the webhooks its document events trigger (against the state
    /// it committed).
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Site, &mut Txn) -> Result<T, FrappeError>,
    ) -> Result<T, FrappeError> {
        let mut site = self.site();
        let mut txn = Txn::default();
        site.begin_request();
        match f(&mut site, &mut txn) {
            Ok(result) => {
                site.commit_pending();
                self.dispatcher.dispatch(&site, txn.events);
                Ok(result)
            }
            Err(e) => {
                site.rollback();
                Err(e)
            }
        }
    }
}

/// Entry point: `ErpNextSim::start(config, listener)`.
#[derive(Debug)]
pub struct ErpNextSim;

impl ErpNextSim {
    /// Serve the simulator on `listener` (bind `127.0.0.1:0` in tests) until the handle is shut
    /// down or dropped.
    pub async fn start(
        config: ErpNextSimConfig,
        listener: TcpListener,
    ) -> Result<ErpNextSimHandle, StartError> {
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let faults = Faults::new(config.faults.clone());
        let dispatcher = Arc::new(Dispatcher::new(
            &config.webhook_retry_delays_ms,
            cancel.child_token(),
        ));
        let site = Site::new(config).map_err(StartError::Config)?;
        let shared = Arc::new(Shared {
            site: Mutex::new(site),
            faults,
            dispatcher,
            late: LateCommits::new(),
        });
        let app = routes::router(Arc::clone(&shared))
            .merge(admin::router())
            .with_state(Arc::clone(&shared));
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "erpnext simulator stopped");
            }
        });
        tracing::info!(%addr, "erpnext simulator listening");
        Ok(ErpNextSimHandle {
            addr,
            shared,
            cancel,
            server: Some(server),
        })
    }
}

/// A running simulator: its address and in-process access to its state.
#[derive(Debug)]
pub struct ErpNextSimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl ErpNextSimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, what an ERPNext client takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> ErpNextSimConfig {
        self.shared.site().config.clone()
    }

    /// `Authorization` header value for the configured key.
    pub fn auth_header(&self) -> String {
        let cfg = self.config();
        format!("token {}:{}", cfg.api_key, cfg.api_secret)
    }

    /// Insert a document through the API's insert path (validations, naming, webhooks);
    /// `doc` is a JSON object with the fields, `docstatus: 1` submits it. Returns the full doc.
    pub fn seed(&self, doctype: &str, doc: Value) -> Result<Value, FrappeError> {
        let body: Map<String, Value> = match doc {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.shared.seed_doc(doctype, &body)
    }

    /// Every document of `doctype` (full view, creation order).
    pub fn list(&self, doctype: &str) -> Vec<Value> {
        self.shared.docs(doctype)
    }

    pub fn get(&self, doctype: &str, name: &str) -> Option<Value> {
        self.shared.doc(doctype, name)
    }

    /// Calls per endpoint (`POST /api/resource/Sales Order`, `PUT /api/resource/Sales Order/{name}`,
    /// `POST /api/method/frappe.client.submit`, ...).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.shared.faults.calls()
    }

    /// Faults injected so far by kind (`error`, `timeout`, `429`).
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.shared.faults.injected()
    }

    pub fn reset_calls(&self) {
        self.shared.faults.reset_counters();
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    pub fn set_faults(&self, config: FaultConfig) {
        self.shared.faults.set(config);
    }

    /// Hold the next `count` requests that insert a `doctype` (`POST /api/resource/<doctype>`,
    /// or a `frappe.client.insert_many` with one among its documents) until
    /// [`ErpNextSimHandle::release_late_commits`]; then they are applied, however long ago their
    /// client gave up (a late commit, see [`LateCommits`]).
    pub fn hold_inserts(&self, doctype: &str, count: u32) {
        *self
            .shared
            .late
            .state()
            .armed
            .entry(doctype.to_string())
            .or_default() += count;
    }

    /// Requests held by [`ErpNextSimHandle::hold_inserts`] right now.
    pub fn held_inserts(&self) -> usize {
        self.shared.late.state().waiting
    }

    /// Hold no more inserts (what [`ErpNextSimHandle::hold_inserts`] armed and no insert used).
    pub fn stop_holding_inserts(&self) {
        self.shared.late.state().armed.clear();
    }

    /// Let every held request go on and commit (or fail, as the site now is).
    pub fn release_late_commits(&self) {
        self.shared.late.release.send_modify(|g| *g += 1);
    }

    /// The HTTP status each released request was answered with, in the order they finished.
    pub fn late_commits(&self) -> Vec<u16> {
        self.shared.late.state().finished.clone()
    }

    /// Frappe's "Update Series Counter" (Document Naming Settings): the next document of the
    /// series prefix (`SAL-ORD-2026-`) is numbered `current + 1`. Replays of captures use it to
    /// get the captured names.
    pub fn set_series(&self, prefix: &str, current: u64) {
        self.shared.site().set_series(prefix, current);
    }

    /// A person (`user`, not the API user) saving `changes` in the desk.
    pub fn edit_as(
        &self,
        doctype: &str,
        name: &str,
        user: &str,
        changes: Value,
    ) -> Result<Value, FrappeError> {
        let changes = changes.as_object().cloned().unwrap_or_default();
        self.shared.edit_as(doctype, name, user, &changes)
    }

    /// Make, save and submit the invoice of a submitted Sales Order; returns its name.
    pub fn invoice_sales_order(&self, sales_order: &str) -> Result<String, FrappeError> {
        self.shared.invoice_sales_order(sales_order)
    }

    /// Pay an invoice (all of it by default); returns the Payment Entry name.
    pub fn pay_invoice(&self, invoice: &str, amount: Option<f64>) -> Result<String, FrappeError> {
        self.shared.pay_invoice(invoice, amount)
    }

    /// Mark an unpaid invoice Overdue (or back); returns the resulting status.
    pub fn set_invoice_overdue(&self, invoice: &str, overdue: bool) -> Result<String, FrappeError> {
        self.shared.set_invoice_overdue(invoice, overdue)
    }

    /// Webhook deliveries so far, attempts included.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.shared.dispatcher.deliveries()
    }

    pub fn clear_webhook_deliveries(&self) {
        self.shared.dispatcher.clear();
    }

    /// Pauses between webhook attempts (Frappe: 1 s, 4 s).
    pub fn set_webhook_retry_delays_ms(&self, delays: &[u64]) {
        self.shared.dispatcher.set_retry_delays(delays);
    }

    /// Doctypes the API user may not read or write (403 PermissionError).
    pub fn set_denied_doctypes(&self, doctypes: Vec<String>) {
        self.shared.site().config.denied_doctypes = doctypes;
    }

    /// Back to the seeded state; counters and the delivery log are cleared.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stop serving, abort pending webhook deliveries and wait for the server task (held
    /// inserts are released first: the server waits for the requests in flight).
    pub async fn shutdown(mut self) {
        self.release_late_commits();
        self.cancel.cancel();
        self.shared.dispatcher.drain().await;
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for ErpNextSimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
