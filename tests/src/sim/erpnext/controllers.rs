//! What each doctype does on top of Frappe's generic document life cycle, as far as the
//! integration can observe it: naming, `validate` (missing values, item details, totals,
//! taxes, payment schedule), statuses on submit/cancel, and the effects one document has on
//! another (an invoice bills its Sales Order, a payment pays its invoice).
//!
//! The order of checks inside `validate` follows ERPNext's, because it decides which error a
//! request with several problems gets (an unknown customer is a 404 before an empty item list is
//! a 500, which comes before a missing delivery date).

use serde_json::{Map, Value, json};

use super::accounts;
use super::doctypes::{str_of, truthy};
use super::documents::{Txn, db_set};
use super::errors::FrappeError;
use super::money;
pub use super::money::round2;
use super::pricing::{self, PriceContext};
use super::pyjson::float_repr;
use super::state::{Doc, Site, parse_date};
use super::taxes;
use super::words::money_in_words;

pub fn s(doc: &Map<String, Value>, k: &str) -> String {
    str_of(doc, k).unwrap_or_default()
}

pub fn fl(doc: &Map<String, Value>, k: &str) -> f64 {
    match doc.get(k) {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn set(doc: &mut Map<String, Value>, k: &str, v: impl Into<Value>) {
    doc.insert(k.to_string(), v.into());
}

fn set_if_empty(doc: &mut Map<String, Value>, k: &str, v: impl Into<Value>) {
    if str_of(doc, k).is_none() {
        set(doc, k, v);
    }
}

pub fn take_rows(doc: &mut Doc, table: &str) -> Vec<Map<String, Value>> {
    match doc.remove(table) {
        Some(Value::Array(rows)) => rows
            .into_iter()
            .filter_map(|r| match r {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub fn put_rows(doc: &mut Doc, table: &str, rows: Vec<Map<String, Value>>) {
    doc.insert(
        table.to_string(),
        Value::Array(rows.into_iter().map(Value::Object).collect()),
    );
}

/// Result of `autoname`.
#[derive(Debug, Clone, PartialEq)]
pub struct Naming {
    pub name: String,
    /// Series number to consume when the insert commits.
    pub series: Option<u64>,
    /// A `_server_messages` note (the Customer rename).
    pub note: Option<String>,
}

impl Naming {
    fn plain(name: String) -> Self {
        Self {
            name,
            series: None,
            note: None,
        }
    }
}

/// Frappe's `append_number_if_name_exists`: `X`, then `X-1`, `X-2`...
fn append_number_if_exists(site: &Site, doctype: &str, value: &str) -> String {
    if !site.exists(doctype, value) {
        return value.to_string();
    }
    let prefix = format!("{}-", value.to_lowercase());
    let last = site
        .all(doctype)
        .filter_map(|d| str_of(d, "name"))
        .filter_map(|n| {
            n.to_lowercase()
                .strip_prefix(&prefix)
                .and_then(|r| r.parse::<u64>().ok())
        })
        .max()
        .unwrap_or(0);
    format!("{value}-{}", last + 1)
}

/// `_set_amended_name` with the default "Amend Counter" rule: the first amendment of
/// `SAL-ORD-2026-00001` is `SAL-ORD-2026-00001-1`, an amendment of that one `...-2`.
fn amended_name(site: &Site, doctype: &str, from: &str) -> String {
    let from_is_amendment = site
        .get(doctype, from)
        .and_then(|d| str_of(d, "amended_from"))
        .is_some();
    if from_is_amendment && let Some((prefix, n)) = from.rsplit_once('-') {
        let n: u64 = n.trim().parse().unwrap_or(0);
        return format!("{prefix}-{}", n + 1);
    }
    format!("{from}-1")
}

pub fn autoname(site: &Site, doctype: &str, doc: &Doc) -> Result<Naming, FrappeError> {
    let submittable = site.reg.get(doctype).is_some_and(|m| m.submittable);
    if submittable && let Some(from) = str_of(doc, "amended_from") {
        return Ok(Naming::plain(amended_name(site, doctype, &from)));
    }
    if site.reg.get(doctype).is_some_and(|m| m.single) {
        return Ok(Naming::plain(doctype.to_string()));
    }
    let series = |field: &str| {
        let series = str_of(doc, "naming_series").unwrap_or_default();
        let date = str_of(doc, field);
        let (name, n) = site.peek_series(&series, date.as_deref());
        Naming {
            name,
            series: Some(n),
            note: None,
        }
    };
    Ok(match doctype {
        "Customer" => {
            let cn = s(doc, "customer_name").trim().to_string();
            if cn.is_empty() || !site.exists("Customer", &cn) {
                Naming::plain(cn)
            } else {
                // ERPNext: MAX(CAST(SUBSTRING_INDEX(name, ' ', -1) AS UNSIGNED)) over `<name> - %`.
                let pattern = format!("{} - ", cn.to_lowercase());
                let count = site
                    .all("Customer")
                    .filter_map(|d| str_of(d, "name"))
                    .filter(|n| n.to_lowercase().contains(&pattern))
                    .map(|n| {
                        n.rsplit(' ')
                            .next()
                            .and_then(|t| t.parse::<u64>().ok())
                            .unwrap_or(0)
                    })
                    .max()
                    .unwrap_or(0);
                let name = format!("{cn} - {}", count + 1);
                let note = format!("Changed customer name to '{name}' as '{cn}' already exists.");
                Naming {
                    name,
                    series: None,
                    note: Some(note),
                }
            }
        }
        "Contact" => {
            let mut name = ["first_name", "middle_name", "last_name"]
                .iter()
                .filter_map(|f| str_of(doc, f))
                .collect::<Vec<_>>()
                .join(" ");
            if name.is_empty() {
                name = s(doc, "company_name");
            }
            if let Some(link) = first_row(doc, "links").and_then(|r| str_of(r, "link_name")) {
                name = format!("{name}-{}", link.trim());
            }
            Naming::plain(append_number_if_exists(site, "Contact", &name))
        }
        "Address" => {
            let title = str_of(doc, "address_title")
                .or_else(|| first_row(doc, "links").and_then(|r| str_of(r, "link_name")))
                .unwrap_or_default();
            let name = format!("{}-{}", title.trim(), s(doc, "address_type").trim());
            Naming::plain(append_number_if_exists(site, "Address", &name))
        }
        "Sales Order" => series("transaction_date"),
        "Sales Invoice" | "Payment Entry" => series("posting_date"),
        "Item" => Naming::plain(s(doc, "item_code")),
        "Custom Field" => Naming::plain(format!("{}-{}", s(doc, "dt"), s(doc, "fieldname"))),
        // `autoname: prompt`: the name must come with the request
        // (`live-findings/webhook_create_without_name.json`).
        "Webhook" => match str_of(doc, "name") {
            Some(n) => Naming::plain(n),
            None => return Err(FrappeError::validation("Please set the document name")),
        },
        // `get_account_autoname`: `[<number> - ]<account_name> - <company abbr>`.
        "Account" => {
            let abbr = site
                .get("Company", &s(doc, "company"))
                .map(|c| s(c, "abbr"))
                .unwrap_or_else(|| site.config.company_abbr.clone());
            let name = match str_of(doc, "account_number") {
                Some(n) => format!("{n} - {}", s(doc, "account_name").trim()),
                None => s(doc, "account_name").trim().to_string(),
            };
            Naming::plain(format!("{name} - {abbr}"))
        }
        "Currency Exchange" => {
            let purpose = match (
                truthy(doc.get("for_buying")),
                truthy(doc.get("for_selling")),
            ) {
                (true, false) => "-Buying",
                (false, true) => "-Selling",
                _ => "",
            };
            Naming::plain(format!(
                "{}-{}-{}{purpose}",
                s(doc, "date"),
                s(doc, "from_currency"),
                s(doc, "to_currency")
            ))
        }
        "Company" => Naming::plain(s(doc, "company_name")),
        "Customer Group" => Naming::plain(s(doc, "customer_group_name")),
        "Territory" => Naming::plain(s(doc, "territory_name")),
        "Item Group" => Naming::plain(s(doc, "item_group_name")),
        "UOM" => Naming::plain(s(doc, "uom_name")),
        "Country" => Naming::plain(s(doc, "country_name")),
        "Price List" => Naming::plain(s(doc, "price_list_name")),
        "Mode of Payment" => Naming::plain(s(doc, "mode_of_payment")),
        "Sales Taxes and Charges Template" => {
            Naming::plain(str_of(doc, "name").unwrap_or_else(|| s(doc, "title")))
        }
        _ => Naming::plain(str_of(doc, "name").unwrap_or_default()),
    })
}

fn first_row<'a>(doc: &'a Doc, table: &str) -> Option<&'a Map<String, Value>> {
    doc.get(table)?.as_array()?.first()?.as_object()
}

/// The doctype's `validate` (and `before_validate`/`set_missing_values`).
pub fn validate(site: &mut Site, doctype: &str, doc: &mut Doc) -> Result<(), FrappeError> {
    match doctype {
        "Contact" => validate_contact(site, doc),
        "Address" => validate_address(site, doc),
        "Item" => {
            set_if_empty(doc, "item_name", s(doc, "item_code"));
            set_if_empty(doc, "description", s(doc, "item_name"));
            Ok(())
        }
        "Item Price" => validate_item_price(site, doc),
        "Customer" => accounts::validate_customer_accounts(site, doc),
        "Sales Order" => validate_selling(site, doc, false, Pass::Validate),
        "Sales Invoice" => validate_selling(site, doc, true, Pass::Validate),
        "Accounts Settings" => validate_accounts_settings(doc),
        "Payment Entry" => validate_payment_entry(site, doc),
        "Webhook" => validate_webhook(site, doc),
        "Custom Field" => validate_custom_field(site, doc),
        _ => Ok(()),
    }
}

fn set_link_titles(site: &Site, rows: &mut [Map<String, Value>]) {
    for row in rows {
        let (dt, name) = (s(row, "link_doctype"), s(row, "link_name"));
        let title = site
            .get(&dt, &name)
            .and_then(|d| match dt.as_str() {
                "Customer" => str_of(d, "customer_name"),
                _ => str_of(d, "name"),
            })
            .unwrap_or(name);
        set(row, "link_title", title);
    }
}

fn validate_contact(site: &mut Site, doc: &mut Doc) -> Result<(), FrappeError> {
    let full = ["first_name", "middle_name", "last_name"]
        .iter()
        .filter_map(|f| str_of(doc, f))
        .collect::<Vec<_>>()
        .join(" ");
    set(
        doc,
        "full_name",
        if full.is_empty() {
            s(doc, "company_name")
        } else {
            full
        },
    );
    // Frappe rewrites email_id/phone/mobile_no from the child tables: without rows they are "".
    let emails = take_rows(doc, "email_ids");
    let primary: Vec<&Map<String, Value>> = emails
        .iter()
        .filter(|e| truthy(e.get("is_primary")))
        .collect();
    if primary.len() > 1 {
        return Err(FrappeError::validation(
            "Only one <strong>Email ID</strong> can be set as primary.",
        ));
    }
    set(
        doc,
        "email_id",
        primary
            .first()
            .map(|e| s(e, "email_id").trim().to_string())
            .unwrap_or_default(),
    );
    put_rows(doc, "email_ids", emails);
    let phones = take_rows(doc, "phone_nos");
    for (field, flag) in [
        ("phone", "is_primary_phone"),
        ("mobile_no", "is_primary_mobile_no"),
    ] {
        let value = phones
            .iter()
            .find(|p| truthy(p.get(flag)))
            .map(|p| s(p, "phone"))
            .unwrap_or_default();
        set(doc, field, value);
    }
    put_rows(doc, "phone_nos", phones);
    let mut links = take_rows(doc, "links");
    set_link_titles(site, &mut links);
    put_rows(doc, "links", links);
    if doc.get("image").is_none_or(Value::is_null) {
        set(doc, "image", "");
    }
    Ok(())
}

fn validate_address(site: &mut Site, doc: &mut Doc) -> Result<(), FrappeError> {
    let mut links = take_rows(doc, "links");
    if str_of(doc, "address_title").is_none()
        && let Some(first) = links.first()
    {
        set(doc, "address_title", s(first, "link_name"));
    }
    set_link_titles(site, &mut links);
    put_rows(doc, "links", links);
    Ok(())
}

fn validate_item_price(site: &mut Site, doc: &mut Doc) -> Result<(), FrappeError> {
    if let Some(item) = site.get("Item", &s(doc, "item_code")).cloned() {
        set(doc, "item_name", s(&item, "item_name"));
        set(doc, "item_description", s(&item, "description"));
        set_if_empty(doc, "uom", s(&item, "stock_uom"));
    }
    if let Some(pl) = site.get("Price List", &s(doc, "price_list")).cloned() {
        set(doc, "currency", s(&pl, "currency"));
        set(doc, "selling", fl(&pl, "selling") as i64);
        set(doc, "buying", fl(&pl, "buying") as i64);
    }
    set_if_empty(doc, "valid_from", site.today());
    Ok(())
}

/// The default address of a party: its primary address, else the first one linked.
fn default_address(site: &Site, customer: &str) -> Option<Doc> {
    let linked = |a: &&Doc| {
        a.get("links")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|l| {
                l.get("link_doctype").and_then(Value::as_str) == Some("Customer")
                    && l.get("link_name").and_then(Value::as_str) == Some(customer)
            })
    };
    let mut addresses: Vec<&Doc> = site
        .all("Address")
        .filter(linked)
        .filter(|a| !truthy(a.get("disabled")))
        .collect();
    addresses.sort_by_key(|a| (!truthy(a.get("is_primary_address")), s(a, "creation")));
    addresses.first().map(|a| (*a).clone())
}

/// ERPNext's US address template.
fn address_display(a: &Doc) -> String {
    let mut out = format!("{}<br>\n", s(a, "address_line1"));
    if let Some(l2) = str_of(a, "address_line2") {
        out.push_str(&format!("{l2}<br>\n"));
    }
    out.push_str(&s(a, "city"));
    if let Some(state) = str_of(a, "state") {
        out.push_str(&format!(", {state}"));
    }
    if let Some(pin) = str_of(a, "pincode") {
        out.push_str(&format!(" {pin}"));
    }
    out.push_str("<br>\n");
    if let Some(country) = str_of(a, "country").filter(|c| c != "United States") {
        out.push_str(&format!("{country}<br>\n"));
    }
    out
}

/// How `validate_selling` was reached: `Validate` inside insert/save, `Mapping` from
/// `make_sales_invoice` (`set_missing_values(for_validate=False)`, which also fills taxes from
/// the template).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Validate,
    Mapping,
}

/// `set_price_list_currency`: the price list's currency and both exchange rates into the
/// company currency, fetched only when the document does not carry them.
fn set_currencies(
    site: &Site,
    doc: &mut Doc,
    date: &str,
    company_currency: &str,
) -> Result<PriceContext, FrappeError> {
    let price_list = s(doc, "selling_price_list");
    let pl_currency = site
        .get("Price List", &price_list)
        .and_then(|p| str_of(p, "currency"))
        .unwrap_or_else(|| company_currency.to_string());
    set(doc, "price_list_currency", pl_currency.clone());
    if pl_currency == company_currency {
        set(doc, "plc_conversion_rate", 1.0);
    } else if fl(doc, "plc_conversion_rate") == 0.0 {
        let rate = accounts::exchange_rate(site, &pl_currency, company_currency, date);
        set(doc, "plc_conversion_rate", rate);
    }
    if str_of(doc, "currency").is_none() {
        set(doc, "currency", pl_currency.clone());
        set(doc, "conversion_rate", fl(doc, "plc_conversion_rate"));
    } else if s(doc, "currency") == company_currency {
        set(doc, "conversion_rate", 1.0);
    } else if fl(doc, "conversion_rate") == 0.0 {
        let rate = accounts::exchange_rate(site, &s(doc, "currency"), company_currency, date);
        set(doc, "conversion_rate", rate);
    }
    let currency = s(doc, "currency");
    accounts::require_rate(
        fl(doc, "conversion_rate"),
        "Exchange Rate",
        &currency,
        company_currency,
    )?;
    accounts::require_rate(
        fl(doc, "plc_conversion_rate"),
        "Price List Exchange Rate",
        &pl_currency,
        company_currency,
    )?;
    Ok(PriceContext {
        price_list,
        price_list_currency: pl_currency,
        currency,
        conversion_rate: fl(doc, "conversion_rate"),
        plc_conversion_rate: fl(doc, "plc_conversion_rate"),
        date: date.to_string(),
    })
}

/// Sales Order / Sales Invoice `validate`: party and item details, prices, totals in both
/// currencies, taxes, the receivable account and its currency, the payment schedule.
fn validate_selling(
    site: &mut Site,
    doc: &mut Doc,
    invoice: bool,
    pass: Pass,
) -> Result<(), FrappeError> {
    let cfg = site.config.clone();
    let date_field = if invoice {
        "posting_date"
    } else {
        "transaction_date"
    };
    set_if_empty(doc, date_field, site.today());
    set_if_empty(doc, "company", cfg.company.clone());
    let company_currency = accounts::company_currency(site, &s(doc, "company"));
    if let Some(customer) = str_of(doc, "customer") {
        let c = site
            .get("Customer", &customer)
            .cloned()
            .ok_or_else(|| FrappeError::not_found("Customer", &customer))?;
        set(doc, "customer", s(&c, "name"));
        set_if_empty(doc, "customer_name", s(&c, "customer_name"));
        for f in ["customer_group", "territory"] {
            if let Some(v) = str_of(&c, f) {
                set_if_empty(doc, f, v);
            }
        }
        // `_get_party_details`: the billing currency, else the company's.
        set_if_empty(
            doc,
            "currency",
            str_of(&c, "default_currency").unwrap_or_else(|| company_currency.clone()),
        );
        // `set_contact_details`: the contact person's name, email and numbers (the customer's
        // default contact when none is given is not simulated).
        if let Some(contact) =
            str_of(doc, "contact_person").and_then(|c| site.get("Contact", &c).cloned())
        {
            for (field, from) in [
                ("contact_display", "full_name"),
                ("contact_email", "email_id"),
                ("contact_mobile", "mobile_no"),
                ("contact_phone", "phone"),
            ] {
                set(doc, field, s(&contact, from));
            }
        }
        match str_of(doc, "customer_address").and_then(|a| site.get("Address", &a).cloned()) {
            Some(a) => set_if_empty(doc, "address_display", address_display(&a)),
            None => {
                if let Some(a) = default_address(site, &s(&c, "name")) {
                    set(doc, "customer_address", s(&a, "name"));
                    set(doc, "address_display", address_display(&a));
                }
            }
        }
    }
    set_if_empty(doc, "selling_price_list", "Standard Selling");
    let date = s(doc, date_field);
    let ctx = set_currencies(site, doc, &date, &company_currency)?;
    let currency = ctx.currency.clone();
    let conversion = ctx.conversion_rate;
    if invoice && str_of(doc, "debit_to").is_none() {
        // `SalesInvoice.set_missing_values`.
        let account = accounts::party_account(site, &s(doc, "customer"), &s(doc, "company"))
            .unwrap_or_else(|| site.company_name_of("Debtors"));
        set(doc, "debit_to", account);
    }
    let warehouse = str_of(doc, "set_warehouse").unwrap_or_else(|| site.company_name_of("Stores"));
    let mut items = take_rows(doc, "items");
    for (i, row) in items.iter_mut().enumerate() {
        set(row, "idx", i as i64 + 1);
        let Some(code) = str_of(row, "item_code") else {
            continue;
        };
        let item = site
            .get("Item", &code)
            .cloned()
            .ok_or_else(|| FrappeError::not_found("Item", &code))?;
        set(row, "item_code", s(&item, "name"));
        set_if_empty(row, "item_name", s(&item, "item_name"));
        set_if_empty(row, "description", s(&item, "description"));
        set(row, "item_group", s(&item, "item_group"));
        set(row, "stock_uom", s(&item, "stock_uom"));
        set_if_empty(row, "uom", s(&item, "stock_uom"));
        if fl(row, "conversion_factor") == 0.0 {
            set(row, "conversion_factor", 1.0);
        }
        let stock_item = truthy(item.get("is_stock_item"));
        if !invoice {
            set(row, "is_stock_item", i64::from(stock_item));
        }
        if row.get("image").is_none_or(Value::is_null) {
            set(row, "image", "");
        }
        set_if_empty(row, "warehouse", warehouse.clone());
        set_if_empty(row, "cost_center", site.company_name_of("Main"));
        let cf = fl(row, "conversion_factor");
        let qty = fl(row, "qty");
        // `validate_uom_is_integer("stock_uom", "stock_qty")`
        // (`live-findings/sales_order_insert_fractional_qty_of_whole_number_uom.json`).
        // `abs(cint(qty) - flt(qty, precision)) > 0.0000001`, at the field's precision (3).
        let uom = s(row, "stock_uom");
        let stock_qty = super::money::flt(qty * cf, 3);
        if (stock_qty.trunc() - stock_qty).abs() > 0.000_000_1
            && site
                .get("UOM", &uom)
                .is_some_and(|u| truthy(u.get("must_be_whole_number")))
        {
            return Err(FrappeError::erpnext_validation(format!(
                "Row {}: Quantity ({}) cannot be a fraction. To allow this, disable \
                 '<strong>Must be Whole Number</strong>' in UOM <strong>{uom}</strong>.",
                i + 1,
                super::pyjson::float_repr(qty * cf)
            ))
            .raised_as("erpnext.utilities.transaction_base.UOMMustBeIntegerError"));
        }
        pricing::price_row(site, row, &ctx);
        let rate = fl(row, "rate");
        let amount = round2(qty * rate);
        let base_amount = round2(amount * conversion);
        let stock_qty = qty * cf;
        let stock = if stock_item {
            fl(&item, "opening_stock")
        } else {
            0.0
        };
        for (k, v) in [
            ("amount", amount),
            ("base_amount", base_amount),
            ("net_rate", rate),
            ("net_amount", amount),
            ("base_net_rate", fl(row, "base_rate")),
            ("base_net_amount", base_amount),
            ("stock_qty", stock_qty),
            ("stock_uom_rate", if cf == 0.0 { rate } else { rate / cf }),
            ("actual_qty", stock),
        ] {
            set(row, k, v);
        }
        if invoice {
            set_if_empty(row, "income_account", site.company_name_of("Sales"));
            set_if_empty(
                row,
                "expense_account",
                site.company_name_of("Cost of Goods Sold"),
            );
            set(
                row,
                "incoming_rate",
                if stock_item {
                    fl(&item, "valuation_rate")
                } else {
                    0.0
                },
            );
            link_invoice_row_to_order(site, row)?;
        } else {
            let valuation = fl(&item, "valuation_rate");
            set(row, "valuation_rate", valuation);
            set(row, "gross_profit", round2(amount - valuation * stock_qty));
            set(row, "projected_qty", stock);
            set(row, "transaction_date", date.clone());
        }
    }
    if items.is_empty() {
        // ERPNext multiplies the (unset) grand total while building the payment schedule.
        return Err(FrappeError::Type {
            message: "unsupported operand type(s) for *: 'NoneType' and 'float'".into(),
        });
    }
    let net_total = round2(items.iter().map(|r| fl(r, "amount")).sum());
    let base_net_total = round2(items.iter().map(|r| fl(r, "base_amount")).sum());
    let total_qty: f64 = items.iter().map(|r| fl(r, "qty")).sum();
    let income_accounts: Vec<String> = items
        .iter()
        .filter_map(|r| str_of(r, "income_account"))
        .collect();
    // Taxes: rows the client sent, else the template's when ERPNext adds them (see `taxes`).
    let mut rows = take_rows(doc, "taxes");
    if rows.is_empty()
        && (pass == Pass::Mapping || taxes::added_on_validate(site))
        && let Some(template) = str_of(doc, "taxes_and_charges")
    {
        rows = taxes::template_rows(site, &template).unwrap_or_default();
    }
    for (i, row) in rows.iter_mut().enumerate() {
        set(row, "idx", i as i64 + 1);
    }
    let grand_total = round2(taxes::compute(
        site, &mut rows, &items, net_total, conversion,
    ));
    let has_taxes = !rows.is_empty();
    if has_taxes {
        set(
            doc,
            "other_charges_calculation",
            taxes::breakup_html(&items, &rows, &currency),
        );
    }
    put_rows(doc, "items", items);
    put_rows(doc, "taxes", rows);
    let taxes_total = if has_taxes {
        round2(grand_total - net_total)
    } else {
        0.0
    };
    let base_grand_total = if taxes_total != 0.0 {
        round2(grand_total * conversion)
    } else {
        base_net_total
    };
    let rounding_disabled = truthy(doc.get("disable_rounded_total"));
    let rounded = if rounding_disabled {
        0.0
    } else {
        money::rounded_total(grand_total, &currency)
    };
    let adjustment = if rounding_disabled {
        0.0
    } else {
        round2(rounded - grand_total)
    };
    let base_rounded = round2(rounded * conversion);
    let (to_pay, base_to_pay) = if rounding_disabled {
        (grand_total, base_grand_total)
    } else {
        (rounded, base_rounded)
    };
    for (k, v) in [
        ("total_qty", total_qty),
        ("total", net_total),
        ("base_total", base_net_total),
        ("net_total", net_total),
        ("base_net_total", base_net_total),
        ("total_taxes_and_charges", taxes_total),
        (
            "base_total_taxes_and_charges",
            round2(taxes_total * conversion),
        ),
        ("grand_total", grand_total),
        ("base_grand_total", base_grand_total),
        ("rounded_total", rounded),
        ("base_rounded_total", base_rounded),
        ("rounding_adjustment", adjustment),
        ("base_rounding_adjustment", round2(adjustment * conversion)),
        ("amount_eligible_for_commission", base_net_total),
    ] {
        set(doc, k, v);
    }
    set(doc, "in_words", money_in_words(to_pay, &currency));
    set(
        doc,
        "base_in_words",
        money_in_words(base_to_pay, &company_currency),
    );
    if invoice {
        set_if_empty(doc, "posting_time", site.clock_time());
        set_if_empty(doc, "due_date", s(doc, "posting_date"));
        if parse_date(&s(doc, "due_date")) < parse_date(&s(doc, "posting_date")) {
            return Err(FrappeError::erpnext_validation(
                "Due Date cannot be before Posting Date",
            ));
        }
        // `validate_debit_to_acc`.
        let party_currency = accounts::account_currency(site, &s(doc, "debit_to"))
            .unwrap_or_else(|| company_currency.clone());
        set(doc, "party_account_currency", party_currency.clone());
        let mut accounts = income_accounts;
        accounts.dedup();
        set(doc, "against_income_account", accounts.join(","));
        set(doc, "title", s(doc, "customer_name"));
        if fl(doc, "docstatus") == 0.0 {
            // `calculate_outstanding_amount`, in the party account's currency.
            let outstanding = if party_currency == currency {
                to_pay
            } else {
                base_to_pay
            };
            set(doc, "outstanding_amount", outstanding);
            set(doc, "status", "Draft");
        }
        if doc.get("po_no").is_none_or(Value::is_null) {
            set(doc, "po_no", "");
        }
    }
    let schedule_date = if invoice {
        s(doc, "due_date")
    } else {
        s(doc, "transaction_date")
    };
    let mut schedule = take_rows(doc, "payment_schedule");
    if schedule.is_empty() {
        let mut row = site.blank_row("Payment Schedule");
        set(&mut row, "idx", 1);
        set(&mut row, "due_date", schedule_date);
        set(&mut row, "invoice_portion", 100.0);
        schedule.push(row);
    }
    for row in schedule.iter_mut() {
        let portion = fl(row, "invoice_portion") / 100.0;
        let (amount, base) = (round2(to_pay * portion), round2(base_to_pay * portion));
        for (k, v) in [
            ("payment_amount", amount),
            ("outstanding", amount),
            ("base_payment_amount", base),
            ("base_outstanding", base),
        ] {
            set(row, k, v);
        }
    }
    put_rows(doc, "payment_schedule", schedule);
    if pass == Pass::Validate {
        accounts::validate_currency(site, doc)?;
        if invoice {
            accounts::validate_party_account_currency(site, doc)?;
        }
    }
    if !invoice {
        validate_delivery_date(doc)?;
        if fl(doc, "docstatus") == 0.0 {
            set(doc, "status", "Draft");
        }
        set_if_empty(doc, "delivery_status", "Not Delivered");
        set_if_empty(doc, "billing_status", "Not Billed");
    }
    Ok(())
}

/// An invoice row made from an order points at the order row (`so_detail`); a row that names
/// only the order is matched by item code.
fn link_invoice_row_to_order(site: &Site, row: &mut Map<String, Value>) -> Result<(), FrappeError> {
    let Some(so_name) = str_of(row, "sales_order") else {
        return Ok(());
    };
    let idx = fl(row, "idx") as i64;
    let so = site
        .get("Sales Order", &so_name)
        .ok_or_else(|| FrappeError::LinkValidation {
            message: format!("Could not find Row #{idx}: Sales Order: {so_name}"),
        })?;
    let so_rows: Vec<&Map<String, Value>> = so
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .collect();
    let detail = str_of(row, "so_detail");
    let found = so_rows
        .iter()
        .find(|r| detail.is_some() && str_of(r, "name") == detail)
        .or_else(|| {
            so_rows
                .iter()
                .find(|r| s(r, "item_code") == s(row, "item_code"))
        });
    if let Some(r) = found {
        set(row, "so_detail", s(r, "name"));
    }
    set(row, "sales_order", s(so, "name"));
    Ok(())
}

/// ERPNext `validate_delivery_date`: the header date is the latest row date; rows without one
/// take the header's; none at all is an error.
fn validate_delivery_date(doc: &mut Doc) -> Result<(), FrappeError> {
    if s(doc, "order_type") != "Sales" || truthy(doc.get("skip_delivery_note")) {
        return Ok(());
    }
    let mut items = take_rows(doc, "items");
    let max_row = items
        .iter()
        .filter_map(|r| str_of(r, "delivery_date"))
        .max();
    if let Some(max_row) = max_row
        && str_of(doc, "delivery_date").as_deref() != Some(max_row.as_str())
    {
        set(doc, "delivery_date", max_row);
    }
    let result = match str_of(doc, "delivery_date") {
        Some(header) => {
            let transaction = parse_date(&s(doc, "transaction_date"));
            let mut result = Ok(());
            for row in items.iter_mut() {
                set_if_empty(row, "delivery_date", header.clone());
                if transaction > parse_date(&s(row, "delivery_date")) && result.is_ok() {
                    result = Err(FrappeError::erpnext_validation(format!(
                        "Row #{}: Expected Delivery Date cannot be before Sales Order Date",
                        fl(row, "idx") as i64
                    )));
                }
            }
            result
        }
        None => Err(FrappeError::erpnext_validation(
            "Please enter Delivery Date",
        )),
    };
    put_rows(doc, "items", items);
    result
}

fn validate_payment_entry(site: &mut Site, doc: &mut Doc) -> Result<(), FrappeError> {
    let cfg = site.config.clone();
    set_if_empty(doc, "posting_date", site.today());
    set_if_empty(doc, "company", cfg.company.clone());
    let party = s(doc, "party");
    if s(doc, "party_type") == "Customer" && !party.is_empty() {
        let c = site
            .get("Customer", &party)
            .cloned()
            .ok_or_else(|| FrappeError::not_found("Customer", &party))?;
        set(doc, "party", s(&c, "name"));
        set_if_empty(doc, "party_name", s(&c, "customer_name"));
    }
    set_if_empty(doc, "paid_from", site.company_name_of("Debtors"));
    set_if_empty(doc, "paid_to", site.company_name_of("Cash"));
    set_if_empty(doc, "paid_from_account_type", "Receivable");
    set_if_empty(doc, "paid_to_account_type", "Cash");
    set_if_empty(doc, "paid_from_account_currency", cfg.currency.clone());
    set_if_empty(doc, "paid_to_account_currency", cfg.currency.clone());
    let paid = fl(doc, "paid_amount");
    if fl(doc, "received_amount") == 0.0 {
        set(doc, "received_amount", paid);
    }
    let mut refs = take_rows(doc, "references");
    let mut allocated_total = 0.0;
    for (i, r) in refs.iter_mut().enumerate() {
        set(r, "idx", i as i64 + 1);
        let (dt, dn) = (s(r, "reference_doctype"), s(r, "reference_name"));
        if dt.is_empty() || dn.is_empty() {
            continue;
        }
        let target = site
            .get(&dt, &dn)
            .cloned()
            .ok_or_else(|| FrappeError::not_found(&dt, &dn))?;
        if fl(&target, "docstatus") != 1.0 {
            return Err(FrappeError::erpnext_validation(format!(
                "{dt} {dn} must be submitted"
            )));
        }
        let outstanding = fl(&target, "outstanding_amount");
        set(r, "reference_name", s(&target, "name"));
        set(r, "total_amount", fl(&target, "grand_total"));
        set(r, "outstanding_amount", outstanding);
        set_if_empty(r, "due_date", s(&target, "due_date"));
        set_if_empty(r, "account", s(&target, "debit_to"));
        if fl(r, "allocated_amount") > outstanding + 0.005 {
            return Err(FrappeError::erpnext_validation(format!(
                "Row #{}: Allocated Amount cannot be greater than outstanding amount.",
                i + 1
            )));
        }
        allocated_total += fl(r, "allocated_amount");
    }
    let allocated_total = round2(allocated_total);
    put_rows(doc, "references", refs.clone());
    if fl(doc, "source_exchange_rate") == 0.0 {
        set(doc, "source_exchange_rate", 1.0);
    }
    if fl(doc, "target_exchange_rate") == 0.0 {
        set(doc, "target_exchange_rate", 1.0);
    }
    let source_rate = fl(doc, "source_exchange_rate");
    for (k, v) in [
        ("base_paid_amount", round2(paid * source_rate)),
        ("paid_amount_after_tax", paid),
        ("base_paid_amount_after_tax", paid),
        ("base_received_amount", fl(doc, "received_amount")),
        ("received_amount_after_tax", fl(doc, "received_amount")),
        ("base_received_amount_after_tax", fl(doc, "received_amount")),
        ("total_allocated_amount", allocated_total),
        (
            "base_total_allocated_amount",
            round2(allocated_total * source_rate),
        ),
        ("unallocated_amount", round2(paid - allocated_total)),
    ] {
        set(doc, k, v);
    }
    if !truthy(doc.get("custom_remarks")) {
        let currency = s(doc, "paid_to_account_currency");
        let mut remarks = vec![format!(
            "Amount {currency} {} received from {}",
            float_repr(paid),
            s(doc, "party")
        )];
        if let Some(no) = str_of(doc, "reference_no") {
            remarks.push(format!(
                "Transaction reference no {no} dated {}",
                s(doc, "reference_date")
            ));
        }
        for r in &refs {
            if fl(r, "allocated_amount") != 0.0 {
                remarks.push(format!(
                    "Amount {currency} {} against {} {}",
                    float_repr(fl(r, "allocated_amount")),
                    s(r, "reference_doctype"),
                    s(r, "reference_name")
                ));
            }
        }
        set(doc, "remarks", remarks.join("\n"));
    }
    let words = money_in_words(paid, &cfg.currency);
    set(doc, "in_words", words.clone());
    set(doc, "base_in_words", words);
    set(doc, "title", s(doc, "party_name"));
    if fl(doc, "docstatus") == 0.0 {
        set(doc, "status", "Draft");
    }
    Ok(())
}

/// The options of `Webhook.webhook_docevent`.
const DOC_EVENTS: [&str; 7] = [
    "after_insert",
    "on_update",
    "on_submit",
    "on_cancel",
    "on_trash",
    "on_update_after_submit",
    "on_change",
];

fn validate_webhook(site: &mut Site, doc: &mut Doc) -> Result<(), FrappeError> {
    let event = s(doc, "webhook_docevent");
    if !event.is_empty() && !DOC_EVENTS.contains(&event.as_str()) {
        return Err(FrappeError::validation(format!(
            "Doc Event cannot be \"{event}\". It should be one of \"{}\"",
            DOC_EVENTS.join("\", \"")
        )));
    }
    let submittable = site
        .reg
        .get(&s(doc, "webhook_doctype"))
        .is_some_and(|m| m.submittable);
    if ["on_submit", "on_cancel", "on_update_after_submit"].contains(&event.as_str())
        && !submittable
    {
        return Err(FrappeError::validation(
            "DocType must be Submittable for the selected Doc Event",
        ));
    }
    Ok(())
}

fn validate_custom_field(site: &mut Site, doc: &mut Doc) -> Result<(), FrappeError> {
    if str_of(doc, "fieldname").is_none() {
        let label = s(doc, "label");
        let scrubbed: String = label
            .trim()
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if scrubbed.is_empty() {
            return Err(FrappeError::validation("Label is mandatory"));
        }
        set(doc, "fieldname", format!("custom_{scrubbed}"));
    }
    let dt = s(doc, "dt");
    let fieldname = s(doc, "fieldname");
    // Only for a new field (`custom_field.py`: `if self.is_new() and …`): an update of an
    // existing Custom Field finds its own field in the meta.
    let is_new = truthy(doc.get("__islocal"));
    if is_new
        && let Some(meta) = site.reg.get(&dt)
        && (meta.field(&fieldname).is_some() || meta.table(&fieldname).is_some())
    {
        return Err(FrappeError::validation(format!(
            "A field with the name <strong>{fieldname}</strong> already exists in {dt}"
        )));
    }
    // `validate_fields_for_doctype` → `check_unique_and_text`: an existing column that holds
    // one value twice (blanks aside) cannot be made unique
    // (`live-findings/custom_field_unique_refused_with_duplicate_values.json`).
    if !is_new && truthy(doc.get("unique")) {
        let mut seen = std::collections::HashSet::new();
        let twice = site
            .all(&dt)
            .filter_map(|d| str_of(d, &fieldname))
            .any(|v| !seen.insert(v.to_lowercase()));
        if twice {
            return Err(FrappeError::validation(format!(
                "{dt}: Field '{}' cannot be set as Unique as it has non-unique values",
                s(doc, "label")
            ))
            .raised_as("frappe.core.doctype.doctype.doctype.NonUniqueError"));
        }
    }
    Ok(())
}

/// Sales Order status from its delivery and billing percentages.
pub fn sales_order_status(doc: &Doc) -> &'static str {
    match fl(doc, "docstatus") as i64 {
        0 => return "Draft",
        2 => return "Cancelled",
        _ => {}
    }
    let delivered = fl(doc, "per_delivered") >= 99.99 || truthy(doc.get("skip_delivery_note"));
    let billed = fl(doc, "per_billed") >= 99.99;
    match (delivered, billed) {
        (false, false) => "To Deliver and Bill",
        (false, true) => "To Deliver",
        (true, false) => "To Bill",
        (true, true) => "Completed",
    }
}

/// `get_total_in_party_account_currency`: the rounded total (the grand total when rounding is
/// off), in the company currency when the receivable account is not in the invoice's.
fn total_in_party_account_currency(doc: &Doc) -> f64 {
    let field = if truthy(doc.get("disable_rounded_total")) {
        "grand_total"
    } else {
        "rounded_total"
    };
    let field = if s(doc, "party_account_currency") != s(doc, "currency") {
        format!("base_{field}")
    } else {
        field.to_string()
    };
    round2(fl(doc, &field))
}

/// `SalesInvoice.set_status`: Partly Paid only when `0 < outstanding < total`, both in the
/// party account's currency and precision (a fresh invoice with cents is Unpaid); Overdue
/// sticks until paid.
pub fn sales_invoice_status(doc: &Doc) -> &'static str {
    match fl(doc, "docstatus") as i64 {
        0 => return "Draft",
        2 => return "Cancelled",
        _ => {}
    }
    let outstanding = round2(fl(doc, "outstanding_amount"));
    let total = total_in_party_account_currency(doc);
    if outstanding <= 0.0 {
        "Paid"
    } else if s(doc, "status") == "Overdue" {
        "Overdue"
    } else if outstanding < total {
        "Partly Paid"
    } else {
        "Unpaid"
    }
}

/// `AccountsSettings.validate_auto_tax_settings`.
fn validate_accounts_settings(doc: &mut Doc) -> Result<(), FrappeError> {
    if truthy(doc.get("add_taxes_from_item_tax_template"))
        && truthy(doc.get("add_taxes_from_taxes_and_charges_template"))
    {
        return Err(FrappeError::erpnext_validation(
            "You cannot enable both the settings '<strong>Automatically Add Taxes and Charges from Item Tax Template</strong>' and '<strong>Automatically Add Taxes from Taxes and Charges Template</strong>'.",
        )
        .titled("Auto Tax Settings Error"));
    }
    Ok(())
}

/// Statuses set while submitting (before the document is stored).
pub fn before_submit(site: &mut Site, doctype: &str, doc: &mut Doc) -> Result<(), FrappeError> {
    match doctype {
        "Sales Order" => {
            set(doc, "docstatus", 1);
            let status = sales_order_status(doc);
            set(doc, "status", status);
        }
        "Sales Invoice" => {
            set(doc, "docstatus", 1);
            set_if_empty(doc, "remarks", "No Remarks");
            set(doc, "posting_time", site.clock_time());
            let status = sales_invoice_status(doc);
            set(doc, "status", status);
        }
        "Payment Entry" => {
            set(doc, "status", "Submitted");
        }
        _ => {}
    }
    Ok(())
}

/// Effects of a submit on other documents.
pub fn on_submit(site: &mut Site, txn: &mut Txn, doctype: &str, doc: &Doc) {
    match doctype {
        "Sales Invoice" => bill_orders(site, txn, doc, 1.0),
        "Payment Entry" => apply_payment(site, txn, doctype, doc, 1.0),
        _ => {}
    }
}

/// Add (sign 1) or remove (sign -1) an invoice's amounts to its orders' billed amounts.
fn bill_orders(site: &mut Site, txn: &mut Txn, invoice: &Doc, sign: f64) {
    let rows: Vec<Map<String, Value>> = invoice
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_object().cloned())
        .collect();
    let mut orders: Vec<String> = rows
        .iter()
        .filter_map(|r| str_of(r, "sales_order"))
        .collect();
    orders.sort();
    orders.dedup();
    for so in orders {
        let now = site.now();
        let rows = rows.clone();
        db_set(site, txn, "Sales Order", &so, |order| {
            let mut items = take_rows(order, "items");
            for item in items.iter_mut() {
                let billed: f64 = rows
                    .iter()
                    .filter(|r| s(r, "so_detail") == s(item, "name"))
                    .map(|r| fl(r, "amount"))
                    .sum();
                if billed != 0.0 {
                    set(
                        item,
                        "billed_amt",
                        round2((fl(item, "billed_amt") + sign * billed).max(0.0)),
                    );
                    set(item, "modified", now.clone());
                }
            }
            let total: f64 = items.iter().map(|i| fl(i, "amount")).sum();
            let billed: f64 = items
                .iter()
                .map(|i| fl(i, "billed_amt").min(fl(i, "amount")))
                .sum();
            put_rows(order, "items", items);
            let per_billed = if total > 0.0 {
                round2(billed / total * 100.0)
            } else {
                0.0
            };
            set(order, "per_billed", per_billed);
            set(
                order,
                "billing_status",
                if per_billed >= 99.99 {
                    "Fully Billed"
                } else if per_billed > 0.0 {
                    "Partly Billed"
                } else {
                    "Not Billed"
                },
            );
            let status = sales_order_status(order);
            set(order, "status", status);
        });
    }
}

/// Apply (sign 1) or reverse (sign -1) a payment's allocations to its invoices.
fn apply_payment(site: &mut Site, txn: &mut Txn, doctype: &str, payment: &Doc, sign: f64) {
    let mut refs = payment
        .get("references")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for r in refs.iter_mut() {
        let Some(r) = r.as_object_mut() else { continue };
        if s(r, "reference_doctype") != "Sales Invoice" {
            continue;
        }
        let allocated = fl(r, "allocated_amount");
        let mut new_outstanding = 0.0;
        db_set(site, txn, "Sales Invoice", &s(r, "reference_name"), |inv| {
            new_outstanding = round2(fl(inv, "outstanding_amount") - sign * allocated);
            set(inv, "outstanding_amount", new_outstanding);
            let status = sales_invoice_status(inv);
            set(inv, "status", status);
        });
        set(r, "outstanding_amount", new_outstanding);
    }
    // The reference rows show the invoice's outstanding after this payment.
    if let Some(mut stored) = site.get(doctype, &s(payment, "name")).cloned() {
        stored.insert("references".into(), Value::Array(refs));
        site.put(doctype, stored);
    }
}

/// `check_no_back_links_exist` for the links the integration creates.
pub fn before_cancel_or_delete(site: &Site, doctype: &str, doc: &Doc) -> Result<(), FrappeError> {
    let name = s(doc, "name");
    let linked = |dt: &str, pred: &dyn Fn(&Doc) -> bool| {
        site.all(dt)
            .find(|d| fl(d, "docstatus") == 1.0 && pred(d))
            .map(|d| (dt.to_string(), s(d, "name")))
    };
    let has_row = |d: &Doc, table: &str, field: &str| {
        d.get(table)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|r| r.get(field).and_then(Value::as_str) == Some(name.as_str()))
    };
    let found = match doctype {
        "Sales Order" => linked("Sales Invoice", &|d| has_row(d, "items", "sales_order")),
        "Sales Invoice" => linked("Payment Entry", &|d| {
            has_row(d, "references", "reference_name")
        }),
        "Customer" => linked("Sales Order", &|d| s(d, "customer") == name)
            .or_else(|| linked("Sales Invoice", &|d| s(d, "customer") == name)),
        "Item" => linked("Sales Order", &|d| {
            d.get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|r| r.get("item_code").and_then(Value::as_str) == Some(name.as_str()))
        }),
        _ => None,
    };
    match found {
        Some((dt, dn)) => Err(FrappeError::LinkExists {
            message: format!(
                "Cannot delete or cancel because {doctype} <a href=\"/app/Form/{doctype}/{name}\">{name}</a> is linked with {dt} <a href=\"/app/Form/{dt}/{dn}\">{dn}</a>"
            ),
        }),
        None => Ok(()),
    }
}

/// Effects of a cancel on other documents (the engine sets the status to Cancelled).
pub fn on_cancel(site: &mut Site, txn: &mut Txn, doctype: &str, doc: &Doc) {
    match doctype {
        "Sales Invoice" => bill_orders(site, txn, doc, -1.0),
        "Payment Entry" => apply_payment(site, txn, doctype, doc, -1.0),
        _ => {}
    }
}

/// Keep the registry in step with Custom Field documents.
pub fn after_insert(site: &mut Site, doctype: &str, doc: &Doc) {
    if doctype == "Custom Field" {
        site.reg.apply_custom_field(doc);
    }
}

/// `on_update` of a saved document: a Custom Field changed in place (made unique, relabelled)
/// changes its doctype's field.
pub fn on_update(site: &mut Site, doctype: &str, doc: &Doc) {
    if doctype == "Custom Field" {
        site.reg.apply_custom_field(doc);
    }
}

pub fn on_trash(site: &mut Site, doctype: &str, doc: &Doc) {
    if doctype == "Custom Field" {
        site.reg
            .remove_custom_field(&s(doc, "dt"), &s(doc, "fieldname"));
    }
}

/// `erpnext.selling.doctype.sales_order.sales_order.make_sales_invoice`: an unsaved invoice for
/// what is not billed yet.
pub fn make_sales_invoice(site: &mut Site, source_name: &str) -> Result<Doc, FrappeError> {
    let so = site
        .get("Sales Order", source_name)
        .cloned()
        .ok_or_else(|| FrappeError::not_found("Sales Order", source_name))?;
    if fl(&so, "docstatus") != 1.0 {
        return Err(FrappeError::validation(
            "Cannot map because following condition fails: docstatus=1",
        ));
    }
    let mut si = site.blank("Sales Invoice", "");
    let copy = [
        "customer",
        "customer_name",
        "company",
        "currency",
        "selling_price_list",
        "price_list_currency",
        "set_warehouse",
        "customer_address",
        "address_display",
        "territory",
        "customer_group",
        "taxes_and_charges",
        "conversion_rate",
        "plc_conversion_rate",
        "ignore_pricing_rule",
        "disable_rounded_total",
        "apply_discount_on",
        "additional_discount_percentage",
        "discount_amount",
        "tax_category",
        "language",
        "group_same_items",
        "is_internal_customer",
        "commission_rate",
    ];
    for k in copy {
        if let Some(v) = so.get(k) {
            si.insert(k.into(), v.clone());
        }
    }
    // Same-named custom fields are mapped too (Frappe's mapper copies fields with equal names).
    if let Some(meta) = site.reg.get("Sales Invoice") {
        for f in meta.fields.iter().filter(|f| f.custom) {
            if let Some(v) = so.get(&f.fieldname) {
                si.insert(f.fieldname.clone(), v.clone());
            }
        }
    }
    set(
        &mut si,
        "po_no",
        so.get("po_no").and_then(Value::as_str).unwrap_or(""),
    );
    set(&mut si, "posting_date", site.today());
    set(&mut si, "due_date", site.today());
    set(&mut si, "posting_time", site.clock_time());
    let mut items = Vec::new();
    for r in so
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let remaining = round2(fl(r, "amount") - fl(r, "billed_amt"));
        if remaining <= 0.0 {
            continue;
        }
        let rate = fl(r, "rate");
        let qty = if rate > 0.0 {
            remaining / rate
        } else {
            fl(r, "qty")
        };
        let mut row = site.blank_row("Sales Invoice Item");
        for k in [
            "item_code",
            "item_name",
            "description",
            "item_group",
            "image",
            "stock_uom",
            "uom",
            "conversion_factor",
            "price_list_rate",
            "rate",
            "discount_percentage",
            "warehouse",
            "cost_center",
        ] {
            if let Some(v) = r.get(k) {
                row.insert(k.into(), v.clone());
            }
        }
        set(&mut row, "qty", qty);
        set(&mut row, "sales_order", s(&so, "name"));
        set(&mut row, "so_detail", s(r, "name"));
        items.push(row);
    }
    if items.is_empty() {
        return Err(FrappeError::validation(
            "All these items have already been Invoiced/Returned",
        ));
    }
    put_rows(&mut si, "items", items);
    // The order's tax rows are mapped; without any, `set_missing_values` takes the template's.
    let taxes: Vec<Map<String, Value>> = so
        .get("taxes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|r| {
            let mut r = r.clone();
            for k in [
                "name",
                "owner",
                "creation",
                "modified",
                "modified_by",
                "docstatus",
                "parent",
                "parentfield",
                "parenttype",
            ] {
                r.remove(k);
            }
            r
        })
        .collect();
    put_rows(&mut si, "taxes", taxes);
    validate_selling(site, &mut si, true, Pass::Mapping)?;
    let mut items = take_rows(&mut si, "items");
    for (i, row) in items.iter_mut().enumerate() {
        row.insert("owner".into(), json!(site.config.user));
        row.insert("docstatus".into(), json!(0));
        row.insert("idx".into(), json!(i + 1));
        // The mapped rows still carry the mapper's values; `insert` recomputes these.
        set(row, "stock_uom_rate", 0.0);
        set(row, "incoming_rate", 0.0);
        row.insert("parentfield".into(), json!("items"));
        row.insert("parenttype".into(), json!("Sales Invoice"));
        row.insert("doctype".into(), json!("Sales Invoice Item"));
        row.insert("__islocal".into(), json!(1));
        row.insert("__unsaved".into(), json!(1));
    }
    put_rows(&mut si, "items", items);
    put_rows(&mut si, "payment_schedule", Vec::new());
    for k in [
        "name",
        "creation",
        "modified",
        "modified_by",
        "title",
        "against_income_account",
    ] {
        si.remove(k);
    }
    si.insert("__islocal".into(), json!(1));
    si.insert("__onload".into(), json!({"load_after_mapping": true}));
    si.insert("__unsaved".into(), json!(1));
    Ok(si)
}

/// `erpnext.accounts.doctype.payment_entry.payment_entry.get_payment_entry` for a Sales Invoice.
pub fn get_payment_entry(site: &mut Site, dt: &str, dn: &str) -> Result<Doc, FrappeError> {
    if dt != "Sales Invoice" {
        return Err(FrappeError::validation(format!(
            "The simulator makes payments for Sales Invoice only, not {dt}"
        )));
    }
    let si = site
        .get(dt, dn)
        .cloned()
        .ok_or_else(|| FrappeError::not_found(dt, dn))?;
    let outstanding = fl(&si, "outstanding_amount");
    if fl(&si, "docstatus") != 1.0 || outstanding <= 0.0 {
        return Err(FrappeError::erpnext_validation(format!(
            "Can only make payment against unpaid {dt}"
        )));
    }
    let mut pe = site.blank("Payment Entry", "");
    let today = site.today();
    let cfg = site.config.clone();
    // Paid from the receivable account in its currency, received in the company's (cash).
    let party_currency = str_of(&si, "party_account_currency").unwrap_or(cfg.currency.clone());
    let source_rate = if party_currency == cfg.currency {
        1.0
    } else {
        fl(&si, "conversion_rate")
    };
    let base = round2(outstanding * source_rate);
    for (k, v) in [
        ("posting_date", json!(today)),
        ("company", json!(s(&si, "company"))),
        ("party", json!(s(&si, "customer"))),
        ("party_name", json!(s(&si, "customer_name"))),
        ("paid_from", json!(s(&si, "debit_to"))),
        ("paid_from_account_type", json!("Receivable")),
        ("paid_from_account_currency", json!(party_currency)),
        ("paid_to", json!(site.company_name_of("Cash"))),
        ("paid_to_account_type", json!("Cash")),
        ("paid_to_account_currency", json!(cfg.currency)),
        ("source_exchange_rate", json!(source_rate)),
        ("target_exchange_rate", json!(1.0)),
        ("paid_amount", json!(outstanding)),
        ("base_paid_amount", json!(base)),
        ("received_amount", json!(base)),
        ("base_received_amount", json!(base)),
        ("total_allocated_amount", json!(outstanding)),
        ("base_total_allocated_amount", json!(base)),
        ("reference_date", json!(today)),
    ] {
        pe.insert(k.into(), v);
    }
    let mut reference = site.blank_row("Payment Entry Reference");
    let now = site.now();
    for (k, v) in [
        ("modified", json!(now)),
        ("modified_by", json!(cfg.user)),
        ("docstatus", json!(0)),
        ("idx", json!(1)),
        ("reference_doctype", json!(dt)),
        ("reference_name", json!(s(&si, "name"))),
        ("due_date", json!(s(&si, "due_date"))),
        ("total_amount", json!(fl(&si, "grand_total"))),
        ("outstanding_amount", json!(outstanding)),
        ("allocated_amount", json!(outstanding)),
        ("account", json!(s(&si, "debit_to"))),
        ("parentfield", json!("references")),
        ("parenttype", json!("Payment Entry")),
        ("doctype", json!("Payment Entry Reference")),
        ("__islocal", json!(1)),
    ] {
        reference.insert(k.into(), v);
    }
    put_rows(&mut pe, "references", vec![reference]);
    for k in ["name", "creation", "modified", "modified_by"] {
        pe.remove(k);
    }
    pe.insert("__islocal".into(), json!(1));
    pe.insert("__unsaved".into(), json!(1));
    Ok(pe)
}

/// Admin: the scheduler's Overdue status change (`on = true`) or its reversal.
pub fn set_overdue(
    site: &mut Site,
    txn: &mut Txn,
    name: &str,
    on: bool,
) -> Result<String, FrappeError> {
    let si = site
        .get("Sales Invoice", name)
        .cloned()
        .ok_or_else(|| FrappeError::not_found("Sales Invoice", name))?;
    if fl(&si, "docstatus") != 1.0 || fl(&si, "outstanding_amount") <= 0.0 {
        return Err(FrappeError::validation(format!(
            "Sales Invoice {name} is {}: only a submitted invoice with an outstanding amount can be overdue",
            s(&si, "status")
        )));
    }
    let mut status = String::new();
    db_set(site, txn, "Sales Invoice", name, |inv| {
        set(inv, "status", if on { "Overdue" } else { "Unpaid" });
        status = sales_invoice_status(inv).to_string();
        set(inv, "status", status.clone());
    });
    Ok(status)
}
