//! The simulated site's database: documents by doctype and name, naming series counters, the
//! site clock, and the master data seeded at start.
//!
//! Everything lives behind one mutex (see `mod.rs`); an operation takes it, works on clones and
//! writes back only when every validation passed, which gives Frappe's per-request transaction
//! semantics (a failed insert consumes no series number).

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate, NaiveDateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use super::config::{CustomFields, ErpNextSimConfig};

/// The date seeded exchange rates and Item Prices are valid from.
const SEEDED_SINCE: &str = "2020-01-01";
use super::doctypes::Registry;

pub type Doc = Map<String, Value>;

/// The site clock: naive local time in the site's time zone, strictly increasing so that two
/// saves never share a `modified` (Frappe's optimistic locking compares it).
#[derive(Debug)]
pub struct Clock {
    tz: chrono_tz::Tz,
    /// Added to the real time when `clock_start` pins the clock.
    shift: Duration,
    last: NaiveDateTime,
}

impl Clock {
    pub fn new(timezone: &str, start: Option<&str>) -> Result<Self, String> {
        let tz: chrono_tz::Tz = timezone
            .parse()
            .map_err(|_| format!("unknown time zone {timezone:?}"))?;
        let real = Utc::now().with_timezone(&tz).naive_local();
        let shift = match start {
            Some(s) => {
                let start = parse_datetime(s)
                    .ok_or_else(|| format!("clock_start {s:?} is not YYYY-MM-DD HH:MM:SS"))?;
                start - real
            }
            None => Duration::zero(),
        };
        Ok(Self {
            tz,
            shift,
            last: real + shift - Duration::microseconds(1),
        })
    }

    fn real(&self) -> NaiveDateTime {
        Utc::now().with_timezone(&self.tz).naive_local() + self.shift
    }

    /// A new timestamp, later than every one handed out before.
    pub fn tick(&mut self) -> NaiveDateTime {
        let now = self.real().max(self.last + Duration::microseconds(1));
        self.last = now;
        now
    }

    pub fn today(&self) -> NaiveDate {
        self.real().max(self.last).date()
    }
}

pub fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .ok()
}

pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim().get(..10)?, "%Y-%m-%d").ok()
}

/// Frappe's timestamp format: `2026-11-24 12:17:35.284407`.
pub fn fmt_ts(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

pub fn fmt_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// The whole simulated site.
#[derive(Debug)]
pub struct Site {
    pub config: ErpNextSimConfig,
    pub reg: Registry,
    pub clock: Clock,
    docs: BTreeMap<String, BTreeMap<String, Doc>>,
    series: BTreeMap<String, u64>,
    rng: StdRng,
    /// Frappe's `message_log` of the current request: `msgprint`s (JSON-dumped dicts) a
    /// successful write answers in `_server_messages`.
    pub message_log: Vec<String>,
    /// Documents a controller created on the side (an Item Price ERPNext adds while pricing an
    /// order), stored only if the request's write succeeds, like Frappe's transaction.
    pub pending: Vec<(String, Doc)>,
    /// What the current request changed, to undo if it fails: Frappe runs a request in one
    /// database transaction, so a request that fails after a first write (the second document
    /// of a `frappe.client.insert_many`) leaves nothing behind
    /// (`live-findings/insert_many_unique_conflict_rolls_back.json`). `None` outside a request.
    /// The doctype registry (Custom Fields) is not journaled.
    journal: Option<Vec<Undo>>,
}

/// One change of a request, as it was before.
#[derive(Debug)]
enum Undo {
    Doc {
        doctype: String,
        name: String,
        before: Option<Doc>,
    },
    Series {
        prefix: String,
        before: Option<u64>,
    },
}

impl Site {
    pub fn new(config: ErpNextSimConfig) -> Result<Self, String> {
        let clock = Clock::new(&config.timezone, config.clock_start.as_deref())?;
        let rng = StdRng::seed_from_u64(config.faults.seed ^ 0x05ee_de4f);
        let mut site = Self {
            reg: Registry::new(),
            clock,
            docs: BTreeMap::new(),
            series: BTreeMap::new(),
            rng,
            message_log: Vec::new(),
            pending: Vec::new(),
            journal: None,
            config,
        };
        site.seed_masters();
        Ok(site)
    }

    /// Back to the seeded state (documents, series, custom fields); the clock keeps running.
    pub fn reset(&mut self) {
        self.reg = Registry::new();
        self.docs.clear();
        self.series.clear();
        self.seed_masters();
    }

    /// Start a request: an empty message log, no side documents, an empty journal.
    pub fn begin_request(&mut self) {
        self.message_log.clear();
        self.pending.clear();
        self.journal = Some(Vec::new());
    }

    /// The request succeeded: store the side documents it created; its changes stay.
    pub fn commit_pending(&mut self) {
        for (doctype, doc) in std::mem::take(&mut self.pending) {
            self.put(&doctype, doc);
        }
        self.journal = None;
    }

    /// The request failed: undo every document and series change it made, newest first.
    pub fn rollback(&mut self) {
        self.pending.clear();
        let Some(journal) = self.journal.take() else {
            return;
        };
        for undo in journal.into_iter().rev() {
            match undo {
                Undo::Doc {
                    doctype,
                    name,
                    before,
                } => {
                    let table = self.docs.entry(doctype).or_default();
                    match before {
                        Some(doc) => {
                            table.insert(name, doc);
                        }
                        None => {
                            table.remove(&name);
                        }
                    }
                }
                Undo::Series { prefix, before } => match before {
                    Some(n) => {
                        self.series.insert(prefix, n);
                    }
                    None => {
                        self.series.remove(&prefix);
                    }
                },
            }
        }
    }

    fn record_doc(&mut self, doctype: &str, name: &str) {
        if self.journal.is_some() {
            let before = self.docs.get(doctype).and_then(|t| t.get(name)).cloned();
            if let Some(journal) = &mut self.journal {
                journal.push(Undo::Doc {
                    doctype: doctype.to_string(),
                    name: name.to_string(),
                    before,
                });
            }
        }
    }

    /// Documents of `doctype`, those pending in this request included.
    pub fn all_with_pending<'a>(&'a self, doctype: &'a str) -> impl Iterator<Item = &'a Doc> {
        self.all(doctype).chain(
            self.pending
                .iter()
                .filter(move |(dt, _)| dt == doctype)
                .map(|(_, d)| d),
        )
    }

    /// Frappe's "Update Series Counter": the last number used by a series prefix
    /// (`SAL-ORD-2026-`), so the next document is `current + 1`.
    pub fn set_series(&mut self, prefix: &str, current: u64) {
        self.series.insert(prefix.to_string(), current);
    }

    pub fn now(&mut self) -> String {
        fmt_ts(self.clock.tick())
    }

    /// Now as a `posting_time` (`12:17:39.268300`).
    pub fn clock_time(&mut self) -> String {
        self.clock.tick().format("%H:%M:%S%.6f").to_string()
    }

    pub fn today(&self) -> String {
        fmt_date(self.clock.today())
    }

    /// A random child-row / hash name like Frappe's (`gna86rc7ev`).
    pub fn hash_name(&mut self) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        (0..10)
            .map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }

    /// The next name of a `PREFIX-.YYYY.-` series without consuming it.
    pub fn peek_series(&self, series: &str, date: Option<&str>) -> (String, u64) {
        let year = date
            .and_then(parse_date)
            .unwrap_or_else(|| self.clock.today())
            .format("%Y")
            .to_string();
        let prefix = series.replace(".YYYY.", &year).replace('.', "");
        let next = self.series.get(&prefix).copied().unwrap_or(0) + 1;
        (format!("{prefix}{next:05}"), next)
    }

    /// Consume the series number `peek_series` returned for `name`.
    pub fn commit_series(&mut self, name: &str, n: u64) {
        if let Some(prefix) = name.get(..name.len().saturating_sub(5)) {
            if let Some(journal) = &mut self.journal {
                journal.push(Undo::Series {
                    prefix: prefix.to_string(),
                    before: self.series.get(prefix).copied(),
                });
            }
            let slot = self.series.entry(prefix.to_string()).or_default();
            *slot = (*slot).max(n);
        }
    }

    pub fn get(&self, doctype: &str, name: &str) -> Option<&Doc> {
        let table = self.docs.get(doctype)?;
        table.get(name).or_else(|| {
            // MariaDB's default collation compares names case-insensitively.
            let lower = name.to_lowercase();
            table
                .iter()
                .find(|(k, _)| k.to_lowercase() == lower)
                .map(|(_, d)| d)
        })
    }

    /// The stored spelling of `name` (Links are case-insensitive and normalised to it).
    pub fn canonical_name(&self, doctype: &str, name: &str) -> Option<String> {
        self.get(doctype, name)
            .and_then(|d| d.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    pub fn exists(&self, doctype: &str, name: &str) -> bool {
        if doctype == "DocType" {
            return self.reg.get(name).is_some();
        }
        self.get(doctype, name).is_some()
    }

    pub fn all(&self, doctype: &str) -> impl Iterator<Item = &Doc> {
        self.docs.get(doctype).into_iter().flat_map(|t| t.values())
    }

    pub fn put(&mut self, doctype: &str, doc: Doc) {
        let Some(name) = doc.get("name").and_then(Value::as_str).map(str::to_string) else {
            return;
        };
        self.record_doc(doctype, &name);
        self.docs
            .entry(doctype.to_string())
            .or_default()
            .insert(name, doc);
    }

    pub fn remove(&mut self, doctype: &str, name: &str) -> Option<Doc> {
        let canonical = self.canonical_name(doctype, name)?;
        self.record_doc(doctype, &canonical);
        self.docs.get_mut(doctype)?.remove(&canonical)
    }

    /// A document with the doctype's defaults and standard fields, not yet stored.
    pub fn blank(&mut self, doctype: &str, name: &str) -> Doc {
        let mut doc = Doc::new();
        let now = self.now();
        doc.insert("name".into(), json!(name));
        doc.insert("owner".into(), json!(self.config.user));
        doc.insert("creation".into(), json!(now));
        doc.insert("modified".into(), json!(now));
        doc.insert("modified_by".into(), json!(self.config.user));
        doc.insert("docstatus".into(), json!(0));
        doc.insert("idx".into(), json!(0));
        if let Some(meta) = self.reg.get(doctype) {
            for f in meta
                .fields
                .iter()
                .filter(|f| !meta.unset.contains(&f.fieldname))
            {
                doc.insert(f.fieldname.clone(), f.default.clone());
            }
            for (table, _) in &meta.tables {
                doc.insert(table.clone(), json!([]));
            }
            if meta.single {
                // A single's record has no creation and a string idx (`tabSingles` rows).
                doc.remove("creation");
                doc.insert("name".into(), json!(doctype));
                doc.insert("idx".into(), json!("0"));
            }
        }
        doc.insert("doctype".into(), json!(doctype));
        doc
    }

    /// A child row with the child doctype's defaults.
    pub fn blank_row(&self, child: &str) -> Doc {
        let mut row = Doc::new();
        if let Some(meta) = self.reg.get(child) {
            for f in meta
                .fields
                .iter()
                .filter(|f| !meta.unset.contains(&f.fieldname))
            {
                row.insert(f.fieldname.clone(), f.default.clone());
            }
        }
        row
    }

    /// Store master data directly (no validation, no webhooks).
    fn seed_doc(&mut self, doctype: &str, name: &str, fields: Value) {
        let mut doc = self.blank(doctype, name);
        if let Value::Object(fields) = fields {
            for (k, v) in fields {
                doc.insert(k, v);
            }
        }
        self.put(doctype, doc);
    }

    fn seed_masters(&mut self) {
        let c = self.config.clone();
        let abbr = &c.company_abbr;
        let receivable = c
            .accounts
            .iter()
            .find(|a| {
                a.account_type == "Receivable"
                    && a.account_currency
                        .as_ref()
                        .is_none_or(|cur| *cur == c.currency)
            })
            .map(|a| format!("{} - {abbr}", a.account_name));
        self.seed_doc(
            "Company",
            &c.company,
            json!({"company_name": c.company, "abbr": abbr, "default_currency": c.currency,
                   "country": c.country, "default_receivable_account": receivable}),
        );
        for g in &c.customer_groups {
            self.seed_doc(
                "Customer Group",
                g,
                json!({"customer_group_name": g, "is_group": i32::from(g.starts_with("All "))}),
            );
        }
        for t in &c.territories {
            self.seed_doc(
                "Territory",
                t,
                json!({"territory_name": t, "is_group": i32::from(t.starts_with("All "))}),
            );
        }
        for g in &c.item_groups {
            self.seed_doc(
                "Item Group",
                g,
                json!({"item_group_name": g, "is_group": i32::from(g.starts_with("All "))}),
            );
        }
        for u in &c.uoms {
            // ERPNext's "Nos" counts whole things (`setup/setup_wizard/data/uom_data.json`).
            self.seed_doc(
                "UOM",
                u,
                json!({"uom_name": u, "must_be_whole_number": i32::from(u == "Nos")}),
            );
        }
        for country in &c.countries {
            self.seed_doc("Country", country, json!({"country_name": country}));
        }
        for cur in &c.currencies {
            self.seed_doc("Currency", cur, json!({"currency_name": cur}));
        }
        for m in &c.modes_of_payment {
            let kind = if m == "Cash" { "Cash" } else { "Bank" };
            self.seed_doc(
                "Mode of Payment",
                m,
                json!({"mode_of_payment": m, "type": kind}),
            );
        }
        for w in ["Stores", "Finished Goods", "Work In Progress"] {
            let name = format!("{w} - {abbr}");
            self.seed_doc(
                "Warehouse",
                &name,
                json!({"warehouse_name": w, "company": c.company}),
            );
        }
        let mut accounts = c.accounts.clone();
        for t in &c.tax_templates {
            let exists = accounts
                .iter()
                .any(|a| format!("{} - {abbr}", a.account_name) == t.account_head);
            if !exists {
                let name = t
                    .account_head
                    .strip_suffix(&format!(" - {abbr}"))
                    .unwrap_or(&t.account_head);
                accounts.push(super::config::SeedAccount {
                    account_name: name.to_string(),
                    account_type: "Tax".into(),
                    root_type: "Liability".into(),
                    account_currency: None,
                });
            }
        }
        for a in &accounts {
            let report_type = if ["Income", "Expense"].contains(&a.root_type.as_str()) {
                "Profit and Loss"
            } else {
                "Balance Sheet"
            };
            self.seed_doc(
                "Account",
                &format!("{} - {abbr}", a.account_name),
                json!({
                    "account_name": a.account_name,
                    "company": c.company,
                    "root_type": a.root_type,
                    "report_type": report_type,
                    "account_currency": a.account_currency.clone().unwrap_or_else(|| c.currency.clone()),
                    "account_type": a.account_type,
                }),
            );
        }
        // Seeded rates and prices hold from long before any test's dates (a deal's close date
        // may lie before the day the site started), as on the site deploy/erpnext.sh builds.
        let since = SEEDED_SINCE;
        for (from, rate) in &c.exchange_rates {
            self.seed_doc(
                "Currency Exchange",
                &format!("{since}-{from}-{}", c.currency),
                json!({"date": since, "from_currency": from, "to_currency": c.currency,
                       "exchange_rate": rate, "for_buying": 1, "for_selling": 1}),
            );
        }
        for single in ["Accounts Settings", "Stock Settings"] {
            let doc = self.blank(single, single);
            self.put(single, doc);
        }
        let mut system = self.blank("System Settings", "System Settings");
        system.insert("time_zone".into(), json!(c.timezone));
        self.put("System Settings", system);
        self.seed_doc("Price List", "Standard Buying", json!({"price_list_name": "Standard Buying", "currency": c.currency, "buying": 1, "selling": 0}));
        for item in &c.items {
            let description = item
                .description
                .clone()
                .unwrap_or_else(|| format!("Sandbox item {}", item.item_name));
            self.seed_doc(
                "Item",
                &item.item_code,
                json!({
                    "item_code": item.item_code,
                    "item_name": item.item_name,
                    "item_group": item.item_group,
                    "stock_uom": item.stock_uom,
                    "is_stock_item": i32::from(item.is_stock_item),
                    "description": description,
                    "valuation_rate": item.valuation_rate,
                    "opening_stock": item.actual_qty,
                }),
            );
        }
        for pl in &c.price_lists {
            self.seed_doc(
                "Price List",
                &pl.name,
                json!({"price_list_name": pl.name, "currency": pl.currency}),
            );
            for (item_code, rate) in &pl.prices {
                let name = self.hash_name();
                let item = c.items.iter().find(|i| &i.item_code == item_code);
                self.seed_doc(
                    "Item Price",
                    &name,
                    json!({
                        "item_code": item_code,
                        "uom": item.map(|i| i.stock_uom.clone()),
                        "item_name": item.map(|i| i.item_name.clone()),
                        "item_description": item.map(|i| i.description.clone().unwrap_or_else(|| format!("Sandbox item {}", i.item_name))),
                        "price_list": pl.name,
                        "selling": 1,
                        "currency": pl.currency,
                        "price_list_rate": rate,
                        "valid_from": SEEDED_SINCE,
                    }),
                );
            }
        }
        for t in &c.tax_templates {
            let row_name = self.hash_name();
            self.seed_doc(
                "Sales Taxes and Charges Template",
                &t.name,
                json!({
                    "title": t.name,
                    "company": c.company,
                    "taxes": [{
                        "name": row_name, "idx": 1, "docstatus": 0,
                        "charge_type": "On Net Total",
                        "account_head": t.account_head,
                        "description": t.description.clone().unwrap_or_else(|| t.account_head.clone()),
                        "included_in_print_rate": 0,
                        "included_in_paid_amount": 0,
                        "cost_center": format!("Main - {abbr}"),
                        "rate": t.rate,
                        "account_currency": c.currency,
                        "parent": t.name, "parentfield": "taxes",
                        "parenttype": "Sales Taxes and Charges Template",
                        "doctype": "Sales Taxes and Charges",
                    }],
                }),
            );
        }
        let deal_id_unique = i32::from(c.custom_fields == CustomFields::Captured);
        // Unique since setup makes it so; not on the site the contracts were captured from.
        let contact_key_unique = i32::from(c.custom_fields == CustomFields::AsSetUp);
        let fields: &[(&str, &str, &str, i32, i32, &str)] = match c.custom_fields {
            CustomFields::None => &[],
            _ => &[
                (
                    "Customer",
                    "hubspot_company_id",
                    "HubSpot Company ID",
                    1,
                    0,
                    "customer_name",
                ),
                (
                    "Contact",
                    "hubspot_contact_id",
                    "HubSpot Contact ID",
                    contact_key_unique,
                    contact_key_unique,
                    "last_name",
                ),
                (
                    "Address",
                    "hubspot_address_key",
                    "HubSpot Address Key",
                    1,
                    1,
                    "address_type",
                ),
                (
                    "Sales Order",
                    "hubspot_deal_id",
                    "HubSpot Deal ID",
                    deal_id_unique,
                    0,
                    "customer",
                ),
                (
                    "Sales Order",
                    "hubspot_deal_key",
                    "HubSpot Deal Key",
                    1,
                    1,
                    "hubspot_deal_id",
                ),
                (
                    "Customer",
                    "hubspot_modified_at",
                    "HubSpot Modified At",
                    0,
                    1,
                    "hubspot_company_id",
                ),
                (
                    "Contact",
                    "hubspot_modified_at",
                    "HubSpot Modified At",
                    0,
                    1,
                    "hubspot_contact_id",
                ),
                (
                    "Address",
                    "hubspot_modified_at",
                    "HubSpot Modified At",
                    0,
                    1,
                    "hubspot_address_key",
                ),
                (
                    "Sales Order",
                    "hubspot_modified_at",
                    "HubSpot Modified At",
                    0,
                    1,
                    "hubspot_deal_key",
                ),
            ],
        };
        {
            for &(dt, fieldname, label, unique, no_copy, after) in fields {
                if c.custom_fields == CustomFields::Captured
                    && [
                        "hubspot_deal_key",
                        "hubspot_address_key",
                        "hubspot_modified_at",
                    ]
                    .contains(&fieldname)
                {
                    continue;
                }
                let name = format!("{dt}-{fieldname}");
                self.seed_doc(
                    "Custom Field",
                    &name,
                    json!({"dt": dt, "label": label, "fieldname": fieldname, "insert_after": after,
                           "fieldtype": "Data", "unique": unique, "no_copy": no_copy}),
                );
                if let Some(cf) = self.get("Custom Field", &name).cloned() {
                    self.reg.apply_custom_field(&cf);
                }
            }
        }
    }

    /// Company account/warehouse names: `"Stores"` → `"Stores - ATL"`.
    pub fn company_name_of(&self, base: &str) -> String {
        format!("{base} - {}", self.config.company_abbr)
    }
}
