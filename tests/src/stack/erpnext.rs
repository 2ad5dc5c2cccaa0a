//! The ERPNext side of a stack: which ERPNext it talks to, a REST view of it that reads the same
//! way whichever it is, and what a real, persistent, shared site needs on top.
//!
//! - [`ErpTarget`]: the simulator (default) or a real Frappe/ERPNext site. The real one is named by
//!   the environment, read here and nowhere else ([`ErpTarget::from_env`]): `L2L_TEST_ERPNEXT_URL`,
//!   `_API_KEY`, `_API_SECRET`, `_TIME_ZONE` (`deploy/erpnext.sh` writes them to its
//!   `credentials.env`).
//! - [`ErpNext`]: reads and desk-like actions (invoice an order, pay an invoice) over Frappe's REST
//!   API through [`shared::erpnext::ErpNextClient`], so a test asserts the same way on both targets.
//!   The simulator's own handle stays available for what only it can do (fault injection).
//! - [`RealSiteLock`]: one stack at a time on a real site. Its Webhooks are named documents (one
//!   per doctype and event), and `erp-writer setup` points them at the stack's own ingest, so two
//!   stacks at once would steal each other's invoice events.
//! - Clean-up ([`ErpNext::clean_up`]): the site outlives the test, so drafts, Contacts, Addresses
//!   and Customers a run made are deleted where ERPNext allows it. Submitted documents (and the
//!   Customers they link to) stay; that is fine on a test site, and every run keys its documents
//!   by HubSpot IDs no earlier run used.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use shared::erpnext::{Doc, ErpNextClient, ListQuery};
use url::Url;

/// Base URL of a real ERPNext site, e.g. `http://127.0.0.1:8000`.
pub const ENV_URL: &str = "L2L_TEST_ERPNEXT_URL";
pub const ENV_API_KEY: &str = "L2L_TEST_ERPNEXT_API_KEY";
pub const ENV_API_SECRET: &str = "L2L_TEST_ERPNEXT_API_SECRET";
/// The site's time zone (System Settings); `UTC` when unset. `erp-writer setup` refuses a mismatch.
pub const ENV_TIME_ZONE: &str = "L2L_TEST_ERPNEXT_TIME_ZONE";
/// `1` (CI): a test that needs the real site fails when none is configured instead of skipping.
pub const ENV_REQUIRE: &str = "L2L_REQUIRE_REAL_ERPNEXT";

/// Which ERPNext a stack talks to.
#[derive(Debug, Clone, Default)]
pub enum ErpTarget {
    /// A fresh in-process ERPNext simulator per stack.
    #[default]
    Simulator,
    /// A real site; it persists between runs and may be shared with other developers.
    Real(RealErpNext),
}

/// Where a real ERPNext site is and how to log in.
#[derive(Clone)]
pub struct RealErpNext {
    pub url: Url,
    pub api_key: String,
    pub api_secret: String,
    /// IANA zone of the site's naive `modified` timestamps.
    pub time_zone: String,
}

impl std::fmt::Debug for RealErpNext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealErpNext")
            .field("url", &self.url.as_str())
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("time_zone", &self.time_zone)
            .finish()
    }
}

impl ErpTarget {
    /// The real site the environment names; `Ok(None)` when `L2L_TEST_ERPNEXT_URL` is unset or
    /// empty, an error when it is set but the rest is missing or malformed.
    pub fn from_env() -> anyhow::Result<Option<RealErpNext>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`ErpTarget::from_env`] over another source of the same variables (e.g. the lines of
    /// `credentials.env`): `var` returns a variable's value, `None` when unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<RealErpNext>> {
        let var = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(url) = var(ENV_URL) else {
            return Ok(None);
        };
        let url = Url::parse(&url).with_context(|| format!("{ENV_URL}={url} is not a URL"))?;
        let api_key = var(ENV_API_KEY)
            .with_context(|| format!("{ENV_URL} is set but {ENV_API_KEY} is not"))?;
        let api_secret = var(ENV_API_SECRET)
            .with_context(|| format!("{ENV_URL} is set but {ENV_API_SECRET} is not"))?;
        let time_zone = var(ENV_TIME_ZONE).unwrap_or_else(|| "UTC".into());
        time_zone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| anyhow::anyhow!("{ENV_TIME_ZONE}={time_zone} is not an IANA time zone"))?;
        Ok(Some(RealErpNext {
            url,
            api_key,
            api_secret,
            time_zone,
        }))
    }

    /// Whether a missing real site is a failure (`L2L_REQUIRE_REAL_ERPNEXT=1`, set by CI).
    pub fn real_required() -> bool {
        std::env::var(ENV_REQUIRE)
            .map(|v| matches!(v.trim(), "1" | "true" | "yes"))
            .unwrap_or(false)
    }

    /// For a test that runs against the real site: the target, or `None` after one loud line on
    /// stderr. Panics (fails the test) when the real site is required but not configured, or
    /// configured wrongly: neither may pass as a skip.
    pub fn real_or_skip(test: &str) -> Option<ErpTarget> {
        match Self::from_env() {
            Ok(Some(real)) => Some(ErpTarget::Real(real)),
            Ok(None) if Self::real_required() => panic!(
                "{test}: {ENV_REQUIRE}=1 but no real ERPNext is configured (set {ENV_URL}, \
                 {ENV_API_KEY}, {ENV_API_SECRET}, {ENV_TIME_ZONE}; deploy/erpnext.sh sets one up \
                 and writes them to its credentials.env)"
            ),
            Ok(None) => {
                eprintln!(
                    "SKIPPED: no real ERPNext (set {ENV_URL}, {ENV_API_KEY}, {ENV_API_SECRET}, \
                     {ENV_TIME_ZONE}; deploy/erpnext.sh sets one up): {test}"
                );
                None
            }
            Err(e) => panic!("{test}: the real ERPNext is misconfigured: {e:#}"),
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, ErpTarget::Real(_))
    }

    /// `simulator` or `real`, for messages.
    pub fn label(&self) -> &'static str {
        match self {
            ErpTarget::Simulator => "simulator",
            ErpTarget::Real(_) => "real",
        }
    }
}

/// Held while a stack uses a real site: a listening socket on a fixed loopback port, which the
/// kernel gives to one process at a time and takes back when the process dies, however it dies
/// (nextest kills a hung test). Threads of one process conflict too (each bind is its own socket).
#[derive(Debug)]
pub struct RealSiteLock {
    _socket: std::net::TcpListener,
}

/// Below Linux's ephemeral range (32768–60999), so no port-0 bind is ever handed this one.
pub const REAL_SITE_LOCK_PORT: u16 = 29_817;

impl RealSiteLock {
    /// Wait up to `timeout` for the lock.
    pub async fn acquire(timeout: Duration) -> anyhow::Result<RealSiteLock> {
        let deadline = Instant::now() + timeout;
        loop {
            match std::net::TcpListener::bind(("127.0.0.1", REAL_SITE_LOCK_PORT)) {
                Ok(socket) => return Ok(RealSiteLock { _socket: socket }),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "another stack has used the real ERPNext for more than {timeout:?} \
                         (it holds 127.0.0.1:{REAL_SITE_LOCK_PORT}); one stack at a time, because \
                         erp-writer setup points the site's Webhooks at one ingest"
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    return Err(e).context(format!(
                        "binding 127.0.0.1:{REAL_SITE_LOCK_PORT} (the real-ERPNext lock)"
                    ));
                }
            }
        }
    }
}

/// ERPNext over REST, the same on both targets. Cheap to share; the stack owns one.
pub struct ErpNext {
    client: ErpNextClient,
    target: &'static str,
    /// Documents the test made directly (not through lead2ledger), for [`ErpNext::clean_up`].
    made: Mutex<Vec<(String, String)>>,
}

impl std::fmt::Debug for ErpNext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErpNext")
            .field("target", &self.target)
            .field("url", &self.client.base_url().as_str())
            .finish_non_exhaustive()
    }
}

/// Frappe's whitelisted methods the desk calls to bill an order and record a payment.
pub const MAKE_SALES_INVOICE: &str =
    "erpnext.selling.doctype.sales_order.sales_order.make_sales_invoice";
pub const GET_PAYMENT_ENTRY: &str =
    "erpnext.accounts.doctype.payment_entry.payment_entry.get_payment_entry";

impl ErpNext {
    /// A client of its own (not the services'), straight to the site: what the test reads is not
    /// counted as lead2ledger's calls.
    pub fn new(
        base_url: &Url,
        api_key: &str,
        api_secret: &str,
        target: &'static str,
    ) -> anyhow::Result<ErpNext> {
        let client =
            ErpNextClient::with_token(base_url, api_key, api_secret, Duration::from_secs(60), 4)
                .context("building the test's ERPNext client")?;
        Ok(ErpNext {
            client,
            target,
            made: Mutex::new(Vec::new()),
        })
    }

    pub fn client(&self) -> &ErpNextClient {
        &self.client
    }

    /// `simulator` or `real`.
    pub fn target(&self) -> &'static str {
        self.target
    }

    /// Full documents (child tables included) of every `doctype` matching `query`, oldest first.
    pub async fn docs(&self, doctype: &str, query: ListQuery) -> anyhow::Result<Vec<Doc>> {
        let rows = self
            .client
            .list(doctype, &query.fields(&["name"]).oldest_first().limit(0))
            .await
            .with_context(|| format!("listing {doctype}"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(doc) = self.get(doctype, row.name()).await? {
                out.push(doc);
            }
        }
        Ok(out)
    }

    /// One document, `None` when it does not exist.
    pub async fn get(&self, doctype: &str, name: &str) -> anyhow::Result<Option<Doc>> {
        self.client
            .get(doctype, name)
            .await
            .with_context(|| format!("reading {doctype} {name}"))
    }

    /// Every Sales Order keyed by the deal (there must be at most one).
    pub async fn sales_orders_for_deal(&self, deal_id: &str) -> anyhow::Result<Vec<Doc>> {
        self.docs(
            "Sales Order",
            ListQuery::new().filter("hubspot_deal_id", "=", deal_id),
        )
        .await
    }

    /// Every Sales Invoice carrying the deal's ID.
    pub async fn sales_invoices_for_deal(&self, deal_id: &str) -> anyhow::Result<Vec<Doc>> {
        self.docs(
            "Sales Invoice",
            ListQuery::new().filter("hubspot_deal_id", "=", deal_id),
        )
        .await
    }

    /// Every Customer keyed by the HubSpot company (there must be at most one).
    pub async fn customers_for_company(&self, company_id: &str) -> anyhow::Result<Vec<Doc>> {
        self.docs(
            "Customer",
            ListQuery::new().filter("hubspot_company_id", "=", company_id),
        )
        .await
    }

    /// Every Customer whose `customer_name` is `name`.
    pub async fn customers_named(&self, name: &str) -> anyhow::Result<Vec<Doc>> {
        self.docs(
            "Customer",
            ListQuery::new().filter("customer_name", "=", name),
        )
        .await
    }

    /// Every Contact keyed by the HubSpot contact.
    pub async fn contacts_for(&self, contact_id: &str) -> anyhow::Result<Vec<Doc>> {
        self.docs(
            "Contact",
            ListQuery::new().filter("hubspot_contact_id", "=", contact_id),
        )
        .await
    }

    /// Every `doctype` (Address, Contact) linked to the Customer through its `links` table.
    pub async fn linked_to_customer(
        &self,
        doctype: &str,
        customer: &str,
    ) -> anyhow::Result<Vec<Doc>> {
        self.docs(
            doctype,
            ListQuery::new()
                .child_filter("Dynamic Link", "link_doctype", "=", "Customer")
                .child_filter("Dynamic Link", "link_name", "=", customer),
        )
        .await
    }

    /// A Customer made as a user would in the desk (no HubSpot ID); cleaned up with the run.
    pub async fn insert_customer(&self, customer_name: &str) -> anyhow::Result<Doc> {
        let doc = self
            .client
            .insert(
                "Customer",
                &json!({
                    "customer_name": customer_name,
                    "customer_type": "Company",
                    "customer_group": "Commercial",
                    "territory": "All Territories",
                }),
            )
            .await
            .with_context(|| format!("inserting Customer {customer_name}"))?;
        self.made("Customer", doc.name());
        Ok(doc)
    }

    /// What the desk's "Create → Sales Invoice" does on a submitted order: `make_sales_invoice`,
    /// save, submit. The submitted invoice.
    pub async fn invoice_sales_order(&self, sales_order: &str) -> anyhow::Result<Doc> {
        let draft = self
            .client
            .call(MAKE_SALES_INVOICE, &json!({"source_name": sales_order}))
            .await
            .with_context(|| format!("{MAKE_SALES_INVOICE} for {sales_order}"))?;
        let inserted = self
            .client
            .insert("Sales Invoice", &draft)
            .await
            .with_context(|| format!("inserting the Sales Invoice made from {sales_order}"))?;
        self.made("Sales Invoice", inserted.name());
        self.client
            .submit("Sales Invoice", inserted.name())
            .await
            .with_context(|| format!("submitting Sales Invoice {}", inserted.name()))
    }

    /// What the desk's "Create → Payment" does on a submitted invoice: `get_payment_entry` (the
    /// full outstanding amount), a mode of payment and a reference, save, submit. The submitted
    /// Payment Entry.
    pub async fn pay_invoice(&self, invoice: &str) -> anyhow::Result<Doc> {
        let mut draft = self
            .client
            .call(
                GET_PAYMENT_ENTRY,
                &json!({"dt": "Sales Invoice", "dn": invoice}),
            )
            .await
            .with_context(|| format!("{GET_PAYMENT_ENTRY} for {invoice}"))?;
        if let Some(pe) = draft.as_object_mut() {
            pe.insert("mode_of_payment".into(), json!("Wire Transfer"));
            pe.insert(
                "reference_no".into(),
                json!(format!("L2L-TEST-{}", uuid::Uuid::now_v7().simple())),
            );
        }
        let inserted = self
            .client
            .insert("Payment Entry", &draft)
            .await
            .with_context(|| format!("inserting the Payment Entry for {invoice}"))?;
        self.made("Payment Entry", inserted.name());
        self.client
            .submit("Payment Entry", inserted.name())
            .await
            .with_context(|| format!("submitting Payment Entry {}", inserted.name()))
    }

    /// What the desk's "Cancel" does on a submitted document.
    pub async fn cancel(&self, doctype: &str, name: &str) -> anyhow::Result<()> {
        self.client
            .call(
                "frappe.client.cancel",
                &json!({"doctype": doctype, "name": name}),
            )
            .await
            .with_context(|| format!("cancelling {doctype} {name}"))?;
        Ok(())
    }

    /// What the desk's "Amend" does on a cancelled document: `frappe.model.copy_doc` (every
    /// field but the `no_copy` ones and the row identities), `amended_from` set, saved as a
    /// draft. The `no_copy` fields are the doctype's (DocField) and its Custom Fields'; the dates
    /// a person re-enters in the form are kept.
    pub async fn amend(&self, doctype: &str, name: &str) -> anyhow::Result<Doc> {
        let cancelled = self
            .get(doctype, name)
            .await?
            .with_context(|| format!("{doctype} {name} to amend"))?;
        let mut no_copy = std::collections::BTreeSet::new();
        let standard = ListQuery::new()
            .filter("parent", "=", doctype)
            .filter("no_copy", "=", 1)
            .fields(&["fieldname"])
            .limit(0);
        // The simulator has no DocField list; its documents have no standard no_copy fields
        // that an insert would keep.
        if let Ok(rows) = self
            .client
            .list("DocField", &standard.parent("DocType"))
            .await
        {
            no_copy.extend(
                rows.iter()
                    .filter_map(|r| r.str("fieldname").map(str::to_string)),
            );
        }
        let custom = ListQuery::new()
            .filter("dt", "=", doctype)
            .filter("no_copy", "=", 1)
            .fields(&["fieldname"])
            .limit(0);
        no_copy.extend(
            self.docs("Custom Field", custom)
                .await?
                .iter()
                .filter_map(|r| r.str("fieldname").map(str::to_string)),
        );
        for kept in ["transaction_date", "delivery_date"] {
            no_copy.remove(kept);
        }
        let Value::Object(mut copy) = cancelled.into_value() else {
            anyhow::bail!("{doctype} {name} is not an object");
        };
        for f in [
            "name",
            "owner",
            "creation",
            "modified",
            "modified_by",
            "docstatus",
            "idx",
        ] {
            copy.remove(f);
        }
        copy.retain(|k, _| !no_copy.contains(k));
        for rows in copy.values_mut().filter_map(Value::as_array_mut) {
            for row in rows.iter_mut().filter_map(Value::as_object_mut) {
                for f in ["name", "parent", "creation", "modified", "docstatus"] {
                    row.remove(f);
                }
            }
        }
        copy.insert("amended_from".into(), json!(name));
        copy.insert("docstatus".into(), json!(0));
        let inserted = self
            .client
            .insert(doctype, &Value::Object(copy))
            .await
            .with_context(|| format!("inserting the amendment of {doctype} {name}"))?;
        self.made(doctype, inserted.name());
        Ok(inserted)
    }

    fn made(&self, doctype: &str, name: &str) {
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((doctype.to_string(), name.to_string()));
    }

    /// Delete what ERPNext lets us delete of one run: draft Sales Invoices and Sales Orders of its
    /// deals, the Contacts of its contacts, the Addresses and then the Customers of its companies,
    /// and what the test made directly. A submitted document (and whatever it links to) stays;
    /// every failure is ignored, and the whole is bounded by `budget`. Returns how many documents
    /// were deleted.
    pub async fn clean_up(
        &self,
        deal_ids: &[String],
        company_ids: &[String],
        contact_ids: &[String],
        budget: Duration,
    ) -> usize {
        let deadline = Instant::now() + budget;
        let mut deleted = 0;
        let made: Vec<(String, String)> =
            self.made.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut customers = BTreeSet::new();
        for (doctype, name) in &made {
            if doctype == "Customer" {
                customers.insert(name.clone());
            }
        }
        let mut drafts: Vec<(String, String)> = made
            .iter()
            .filter(|(doctype, _)| doctype != "Customer")
            .cloned()
            .collect();
        for deal in deal_ids {
            if Instant::now() > deadline {
                return deleted;
            }
            for doctype in ["Sales Invoice", "Sales Order"] {
                let query = ListQuery::new()
                    .filter("hubspot_deal_id", "=", deal.as_str())
                    .fields(&["name", "docstatus"])
                    .limit(0);
                if let Ok(rows) = self.client.list(doctype, &query).await {
                    drafts.extend(
                        rows.iter()
                            .filter(|r| r.docstatus() == 0)
                            .map(|r| (doctype.to_string(), r.name().to_string())),
                    );
                }
            }
        }
        // Invoices before orders: an invoice links to its order.
        drafts.sort_by_key(|(doctype, _)| doctype != "Sales Invoice");
        for (doctype, name) in drafts {
            if Instant::now() > deadline {
                return deleted;
            }
            if self.client.delete(&doctype, &name).await.unwrap_or(false) {
                deleted += 1;
            }
        }
        for contact in contact_ids {
            if Instant::now() > deadline {
                return deleted;
            }
            let query = ListQuery::new()
                .filter("hubspot_contact_id", "=", contact.as_str())
                .limit(0);
            for row in self
                .client
                .list("Contact", &query)
                .await
                .unwrap_or_default()
            {
                if self
                    .client
                    .delete("Contact", row.name())
                    .await
                    .unwrap_or(false)
                {
                    deleted += 1;
                }
            }
        }
        for company in company_ids {
            let query = ListQuery::new()
                .filter("hubspot_company_id", "=", company.as_str())
                .limit(0);
            for row in self
                .client
                .list("Customer", &query)
                .await
                .unwrap_or_default()
            {
                customers.insert(row.name().to_string());
            }
        }
        for customer in customers {
            if Instant::now() > deadline {
                return deleted;
            }
            let query = ListQuery::new()
                .child_filter("Dynamic Link", "link_doctype", "=", "Customer")
                .child_filter("Dynamic Link", "link_name", "=", customer.as_str())
                .oldest_first()
                .limit(0);
            for row in self
                .client
                .list("Address", &query)
                .await
                .unwrap_or_default()
            {
                if self
                    .client
                    .delete("Address", row.name())
                    .await
                    .unwrap_or(false)
                {
                    deleted += 1;
                }
            }
            // Refused (LinkExistsError) while a submitted order or invoice names the Customer.
            if self
                .client
                .delete("Customer", &customer)
                .await
                .unwrap_or(false)
            {
                deleted += 1;
            }
        }
        deleted
    }
}

/// Frappe's money fields: compare to the cent.
pub fn money_eq(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.005
}

/// A Sales Taxes and Charges row as the comparison sees it: charge type, account, rate.
pub fn tax_rows(doc: &Doc) -> Vec<(String, String, f64)> {
    let mut rows: Vec<(String, String, f64)> = doc
        .table("taxes")
        .iter()
        .map(|r| {
            (
                r.str("charge_type").unwrap_or_default().to_string(),
                r.str("account_head").unwrap_or_default().to_string(),
                r.f64("rate").unwrap_or_default(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    rows
}

/// Strip a document's volatile fields, for messages.
pub fn brief(doc: &Doc) -> Value {
    let keep = [
        "name",
        "docstatus",
        "status",
        "customer",
        "currency",
        "net_total",
        "total_taxes_and_charges",
        "grand_total",
        "taxes_and_charges",
        "debit_to",
        "outstanding_amount",
    ];
    Value::Object(
        doc.0
            .iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}
