//! The mapping itself, as pure functions: HubSpot records in, command payloads out (DESIGN §1,
//! §8). No I/O, no clock: the caller passes "now" and the ERPNext site's time zone, so every
//! function here is a unit test away from a contract sample.
//!
//! What is decided here: whether a deal triggers, which SKU becomes which Item (and what an
//! unknown one means under the configured policy), every field of `erp.sync_deal`,
//! `erp.update_customer`, `erp.update_contact`, and the message a sales-ops person reads when a
//! deal cannot be mapped. What is not: reading HubSpot ([`crate::snapshot`]), asking ERPNext
//! which items exist ([`crate::catalog`], whose answer arrives here as an [`ItemCatalog`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Days, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use shared::commands::{
    AddressSpec, ContactSpec, CustomerSpec, OrderLine, SalesOrderSpec, SyncDeal, UpdateContact,
    UpdateCustomer,
};
use shared::hubspot::types::SimplePublicObject;
use shared::mapping::{MappingConfig, TriggerConfig, UnknownSkuPolicy};

/// Everything the mapper read about one deal: the deal and its associated records.
#[derive(Debug, Clone, PartialEq)]
pub struct DealSnapshot {
    pub deal: SimplePublicObject,
    /// The deal's (first associated) company.
    pub company: Option<SimplePublicObject>,
    /// In association order; the first is the primary contact.
    pub contacts: Vec<SimplePublicObject>,
    /// In association order.
    pub line_items: Vec<SimplePublicObject>,
    /// Products of line items without a SKU, by product id.
    pub products: BTreeMap<String, SimplePublicObject>,
}

/// What ERPNext said about the item codes of a deal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemCatalog {
    /// Not checked (no ERPNext credentials, or `verify_in_erpnext = false`): every code is
    /// assumed to exist and ERPNext has the last word.
    Unchecked,
    /// These codes exist.
    Known(BTreeSet<String>),
}

impl ItemCatalog {
    pub fn exists(&self, code: &str) -> bool {
        match self {
            ItemCatalog::Unchecked => true,
            ItemCatalog::Known(codes) => codes.contains(code),
        }
    }
}

/// The inputs every mapping needs besides the records.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub cfg: &'a MappingConfig,
    /// The ERPNext site's time zone: order dates are site-local dates.
    pub tz: Tz,
    pub now: DateTime<Utc>,
}

impl Context<'_> {
    fn today(&self) -> NaiveDate {
        self.now.with_timezone(&self.tz).date_naive()
    }
}

/// A record that cannot become an ERPNext document, and why: the text a sales-ops person reads
/// in the dead letter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{subject}: {reason}")]
pub struct Unmappable {
    /// `Deal 123 'Big deal'` or `Company 456 'ACME'`.
    pub subject: String,
    /// The deal, when the subject is one: its sync status is set to `error`.
    pub deal_id: Option<String>,
    /// Boxed: the error travels through every `Result` of the mapping; keep it small.
    pub reason: Box<Reason>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reason {
    #[error(
        "it has no associated company; associate the customer's company with the deal in HubSpot (ERPNext needs a Customer)"
    )]
    NoCompany,
    #[error("it has no line items; add the products sold to the deal in HubSpot")]
    NoLineItems,
    #[error(
        "its company {company_id} has no name ('{property}'); fill in the company name in HubSpot"
    )]
    CompanyWithoutName {
        company_id: String,
        property: String,
    },
    #[error(
        "line item {line_item_id} '{name}' has no SKU; set the product's SKU in HubSpot, or set unknown_sku = \"fallback_item\" under [mapping.items] in the config"
    )]
    MissingSku { line_item_id: String, name: String },
    #[error("HubSpot SKU '{sku}' has no ERPNext Item{}; add the Item in ERPNext or map it under [mapping.items.map] in the config", if item_code != sku { format!(" (mapped to '{item_code}', which does not exist)") } else { String::new() })]
    UnknownSku { sku: String, item_code: String },
    #[error(
        "the fallback item '{item_code}' does not exist in ERPNext; create it or change fallback_item under [mapping.items] in the config"
    )]
    FallbackMissing { item_code: String },
    #[error(
        "line item {line_item_id} '{name}' has quantity '{value}'; set a positive quantity in HubSpot"
    )]
    BadQuantity {
        line_item_id: String,
        name: String,
        value: String,
    },
    #[error(
        "line item {line_item_id} '{name}' has no usable unit price ('{value}'); set the price in HubSpot"
    )]
    BadRate {
        line_item_id: String,
        name: String,
        value: String,
    },
}

impl Reason {
    /// Metric label (`l2l_mapper_unmappable_total{reason}`).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::NoCompany => "no_company",
            Reason::NoLineItems => "no_line_items",
            Reason::CompanyWithoutName { .. } => "company_without_name",
            Reason::MissingSku { .. } => "missing_sku",
            Reason::UnknownSku { .. } => "unknown_sku",
            Reason::FallbackMissing { .. } => "fallback_missing",
            Reason::BadQuantity { .. } => "bad_quantity",
            Reason::BadRate { .. } => "bad_rate",
        }
    }
}

/// `Deal 123 'Big deal'`.
pub fn deal_label(deal: &SimplePublicObject) -> String {
    match deal.property("dealname") {
        Some(name) => format!("Deal {} '{name}'", deal.id),
        None => format!("Deal {}", deal.id),
    }
}

fn company_label(cfg: &MappingConfig, company: &SimplePublicObject) -> String {
    match company.property(&cfg.customer.name_property) {
        Some(name) => format!("Company {} '{name}'", company.id),
        None => format!("Company {}", company.id),
    }
}

/// Why a deal does not trigger, or `None` when it does.
pub fn not_triggered(cfg: &TriggerConfig, deal: &SimplePublicObject) -> Option<String> {
    let pipeline = deal.property("pipeline");
    let stage = deal.property("dealstage");
    if cfg.matches(pipeline, stage) {
        None
    } else {
        Some(format!(
            "deal {} is at stage '{}' of pipeline '{}', not a trigger stage ({} in {})",
            deal.id,
            stage.unwrap_or("-"),
            pipeline.unwrap_or("-"),
            cfg.stages.join("|"),
            if cfg.pipelines.is_empty() {
                "any pipeline".to_string()
            } else {
                cfg.pipelines.join("|")
            },
        ))
    }
}

/// A HubSpot timestamp: ISO 8601 (`2025-01-02T11:59:50.123Z`), epoch milliseconds (older APIs
/// and date pickers) or a bare date (midnight UTC).
pub fn parse_hubspot_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(ms) = raw.parse::<i64>() {
        return DateTime::from_timestamp_millis(ms);
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// ERPNext's naive site-local timestamp (`2026-11-24 12:17:35.284407`) as UTC. An ambiguous
/// local time (the hour the clocks go back) takes the earlier instant.
pub fn parse_erpnext_time(raw: &str, tz: Tz) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(raw.trim(), "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(raw.trim(), "%Y-%m-%d %H:%M:%S"))
        .ok()?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// When a HubSpot record last changed: `hs_lastmodifieddate` (`lastmodifieddate` on contacts),
/// else `updatedAt`, else `now` (unknown counts as new, so an update is never skipped for it).
pub fn modified(o: &SimplePublicObject, now: DateTime<Utc>) -> DateTime<Utc> {
    known_modified(o).unwrap_or(now)
}

/// `hs_lastmodifieddate` (or `updatedAt`) when HubSpot gave one.
fn known_modified(o: &SimplePublicObject) -> Option<DateTime<Utc>> {
    ["hs_lastmodifieddate", "lastmodifieddate"]
        .iter()
        .find_map(|p| o.property(p).and_then(parse_hubspot_time))
        .or(o.updated_at)
}

fn prop(o: &SimplePublicObject, name: &str) -> Option<String> {
    o.property(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// The SKU of a line item: its own, else its product's.
pub fn line_sku(
    cfg: &MappingConfig,
    line: &SimplePublicObject,
    products: &BTreeMap<String, SimplePublicObject>,
) -> Option<String> {
    let sku = &cfg.items.sku_property;
    prop(line, sku).or_else(|| {
        let product = products.get(line.property("hs_product_id")?)?;
        prop(product, sku)
    })
}

/// Product ids the snapshot must read: those of line items without a SKU of their own.
pub fn products_needed(cfg: &MappingConfig, line_items: &[SimplePublicObject]) -> Vec<String> {
    let mut ids: Vec<String> = line_items
        .iter()
        .filter(|l| prop(l, &cfg.items.sku_property).is_none())
        .filter_map(|l| prop(l, "hs_product_id"))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Item codes a deal would order (including the fallback item when the policy may use it): the
/// codes to look up in ERPNext before mapping.
pub fn item_codes(cfg: &MappingConfig, snapshot: &DealSnapshot) -> BTreeSet<String> {
    let mut codes: BTreeSet<String> = snapshot
        .line_items
        .iter()
        .filter_map(|l| line_sku(cfg, l, &snapshot.products))
        .map(|sku| cfg.items.item_code(&sku))
        .collect();
    if cfg.items.unknown_sku == UnknownSkuPolicy::FallbackItem
        && let Some(f) = cfg
            .items
            .fallback_item
            .as_deref()
            .filter(|f| !f.trim().is_empty())
    {
        codes.insert(f.to_string());
    }
    codes
}

/// ERPNext Customer from a HubSpot company.
pub fn customer(ctx: &Context<'_>, company: &SimplePublicObject) -> Result<CustomerSpec, Reason> {
    let c = &ctx.cfg.customer;
    let name = prop(company, &c.name_property).ok_or_else(|| Reason::CompanyWithoutName {
        company_id: company.id.clone(),
        property: c.name_property.clone(),
    })?;
    let country = company_country(ctx.cfg, company);
    let territory = c
        .territories
        .get(&country)
        .filter(|t| !t.is_empty())
        .cloned()
        .unwrap_or_else(|| c.territory.clone());
    Ok(CustomerSpec {
        hubspot_company_id: company.id.clone(),
        customer_name: name,
        customer_type: c.customer_type.clone(),
        customer_group: c.customer_group.clone(),
        territory,
        default_currency: c.default_currency.clone().filter(|s| !s.is_empty()),
        website: prop(company, &c.website_property).or_else(|| prop(company, "domain")),
        tax_id: c.tax_id_property.as_deref().and_then(|p| prop(company, p)),
        modified: modified(company, ctx.now),
    })
}

/// The ERPNext Country of a company (mapped, or the default).
pub fn company_country(cfg: &MappingConfig, company: &SimplePublicObject) -> String {
    cfg.address
        .country(prop(company, &cfg.address.country_property).as_deref())
}

/// The company's address, when it has street and city (ERPNext requires both).
pub fn address(
    cfg: &MappingConfig,
    company: &SimplePublicObject,
    customer_name: &str,
) -> Option<AddressSpec> {
    let a = &cfg.address;
    if !a.enabled {
        return None;
    }
    let line1 = prop(company, &a.line1_property)?;
    let city = prop(company, &a.city_property)?;
    Some(AddressSpec {
        address_title: customer_name.to_string(),
        address_type: a.address_type.clone(),
        address_line1: line1,
        address_line2: prop(company, &a.line2_property),
        city,
        state: prop(company, &a.state_property),
        pincode: prop(company, &a.pincode_property),
        country: company_country(cfg, company),
        email_id: a.email_property.as_deref().and_then(|p| prop(company, p)),
        phone: prop(company, &a.phone_property),
    })
}

/// ERPNext Contact from a HubSpot contact; `None` when it has no name and no e-mail at all.
pub fn contact(
    ctx: &Context<'_>,
    person: &SimplePublicObject,
    primary: bool,
) -> Option<ContactSpec> {
    let c = &ctx.cfg.contact;
    let first = prop(person, &c.first_name_property);
    let last = prop(person, &c.last_name_property);
    let email = prop(person, &c.email_property);
    let (first_name, last_name) = match (first, last) {
        (Some(f), l) => (f, l),
        (None, Some(l)) => (l, None),
        (None, None) => (email.clone()?, None),
    };
    Some(ContactSpec {
        hubspot_contact_id: person.id.clone(),
        first_name,
        last_name,
        email_id: email,
        phone: prop(person, &c.phone_property),
        is_primary_contact: primary,
        modified: modified(person, ctx.now),
    })
}

/// A HubSpot number property (a decimal string such as `19.995`, or `1.5E3`), exactly.
fn parse_number(raw: &str) -> Option<Decimal> {
    let raw = raw.trim();
    Decimal::from_str_exact(raw)
        .or_else(|_| Decimal::from_scientific(raw))
        .ok()
        .map(|d| d.normalize())
}

/// One Sales Order row from a line item.
pub fn order_line(
    ctx: &Context<'_>,
    line: &SimplePublicObject,
    products: &BTreeMap<String, SimplePublicObject>,
    catalog: &ItemCatalog,
) -> Result<OrderLine, Reason> {
    let items = &ctx.cfg.items;
    let name = prop(line, "name").unwrap_or_default();
    let qty = match prop(line, &items.quantity_property) {
        None => Decimal::ONE,
        Some(raw) => parse_number(&raw)
            .filter(|q| q.is_sign_positive() && !q.is_zero())
            .ok_or_else(|| Reason::BadQuantity {
                line_item_id: line.id.clone(),
                name: name.clone(),
                value: raw.clone(),
            })?,
    };
    let rate_raw = prop(line, &items.rate_property);
    let rate = match rate_raw.as_deref().and_then(parse_number) {
        Some(r) => Some(r),
        None => prop(line, "amount")
            .as_deref()
            .and_then(parse_number)
            .and_then(|a| a.checked_div(qty)),
    }
    .filter(|r| !r.is_sign_negative())
    .ok_or_else(|| Reason::BadRate {
        line_item_id: line.id.clone(),
        name: name.clone(),
        value: rate_raw.unwrap_or_default(),
    })?;
    let description = prop(line, &items.description_property);
    let fallback = |why: String| -> Result<(String, Option<String>), Reason> {
        let item_code = items.fallback_item.clone().unwrap_or_default();
        if !catalog.exists(&item_code) {
            return Err(Reason::FallbackMissing { item_code });
        }
        let text = match &description {
            Some(d) => format!("{d} ({why})"),
            None => why,
        };
        Ok((item_code, Some(text)))
    };
    let (item_code, description) = match line_sku(ctx.cfg, line, products) {
        None => match items.unknown_sku {
            UnknownSkuPolicy::Fail => {
                return Err(Reason::MissingSku {
                    line_item_id: line.id.clone(),
                    name,
                });
            }
            UnknownSkuPolicy::FallbackItem => {
                fallback(format!("HubSpot line item {} without SKU", line.id))?
            }
        },
        Some(sku) => {
            let code = items.item_code(&sku);
            if catalog.exists(&code) {
                (code, description)
            } else {
                match items.unknown_sku {
                    UnknownSkuPolicy::Fail => {
                        return Err(Reason::UnknownSku {
                            sku,
                            item_code: code,
                        });
                    }
                    UnknownSkuPolicy::FallbackItem => fallback(format!("HubSpot SKU {sku}"))?,
                }
            }
        }
    };
    Ok(OrderLine {
        item_code,
        qty,
        rate,
        hubspot_line_item_id: line.id.clone(),
        description,
    })
}

/// The deal's currency: its property (upper-cased) when it looks like an ISO code, else the default.
pub fn currency(cfg: &MappingConfig, deal: &SimplePublicObject) -> String {
    prop(deal, &cfg.order.currency_property)
        .map(|c| c.to_ascii_uppercase())
        .filter(|c| c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()))
        .unwrap_or_else(|| cfg.order.default_currency.clone())
}

/// The order date: the deal's date property as a site-local date, else today (site-local).
pub fn transaction_date(ctx: &Context<'_>, deal: &SimplePublicObject) -> NaiveDate {
    let raw = prop(deal, &ctx.cfg.order.transaction_date_property);
    raw.as_deref()
        .and_then(|r| {
            NaiveDate::parse_from_str(r, "%Y-%m-%d")
                .ok()
                .or_else(|| parse_hubspot_time(r).map(|t| t.with_timezone(&ctx.tz).date_naive()))
        })
        .unwrap_or_else(|| ctx.today())
}

/// The whole `erp.sync_deal` payload, or why the deal cannot be ordered.
pub fn sync_deal(
    ctx: &Context<'_>,
    snapshot: &DealSnapshot,
    catalog: &ItemCatalog,
) -> Result<SyncDeal, Unmappable> {
    let deal = &snapshot.deal;
    let fail = |reason: Reason| Unmappable {
        subject: deal_label(deal),
        deal_id: Some(deal.id.clone()),
        reason: Box::new(reason),
    };
    let company = snapshot
        .company
        .as_ref()
        .ok_or_else(|| fail(Reason::NoCompany))?;
    if snapshot.line_items.is_empty() {
        return Err(fail(Reason::NoLineItems));
    }
    let customer = customer(ctx, company).map_err(fail)?;
    let address = address(ctx.cfg, company, &customer.customer_name);
    let contacts = snapshot
        .contacts
        .iter()
        .filter_map(|c| contact(ctx, c, false))
        .enumerate()
        .map(|(i, mut c)| {
            c.is_primary_contact = i == 0;
            c
        })
        .collect();
    let items = snapshot
        .line_items
        .iter()
        .map(|l| order_line(ctx, l, &snapshot.products, catalog))
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    let o = &ctx.cfg.order;
    let transaction_date = transaction_date(ctx, deal);
    let delivery_date = transaction_date
        .checked_add_days(Days::new(u64::from(o.delivery_days)))
        .unwrap_or(transaction_date);
    Ok(SyncDeal {
        hubspot_deal_id: deal.id.clone(),
        deal_name: prop(deal, "dealname").unwrap_or_else(|| format!("Deal {}", deal.id)),
        // The order's version: its lines change without the deal's own time moving.
        deal_modified: snapshot
            .line_items
            .iter()
            .filter_map(known_modified)
            .fold(modified(deal, ctx.now), DateTime::max),
        order: SalesOrderSpec {
            company: o.company.clone(),
            currency: currency(ctx.cfg, deal),
            transaction_date,
            delivery_date,
            selling_price_list: o.price_list(),
            taxes_and_charges: o.tax_template(&company_country(ctx.cfg, company)),
            set_warehouse: o.warehouse(),
            submit: o.submit,
            receivable_account: o.receivable_account(&currency(ctx.cfg, deal)),
            items,
        },
        customer,
        address,
        contacts,
    })
}

/// `erp.update_customer` for a company that changed.
pub fn update_customer(
    ctx: &Context<'_>,
    company: &SimplePublicObject,
) -> Result<UpdateCustomer, Unmappable> {
    let customer = customer(ctx, company).map_err(|reason| Unmappable {
        subject: company_label(ctx.cfg, company),
        deal_id: None,
        reason: Box::new(reason),
    })?;
    let address = address(ctx.cfg, company, &customer.customer_name);
    Ok(UpdateCustomer { customer, address })
}

/// `erp.update_contact` for a contact that changed; `None` when it has nothing to map.
pub fn update_contact(
    ctx: &Context<'_>,
    person: &SimplePublicObject,
    hubspot_company_id: Option<String>,
) -> Option<UpdateContact> {
    Some(UpdateContact {
        hubspot_company_id,
        contact: contact(ctx, person, false)?,
    })
}

#[cfg(test)]
mod tests {

    use serde_json::json;
    use shared::hubspot::ObjectType;
    use shared::hubspot::types::BatchResponse;

    use super::*;

    fn contract(path: &str) -> String {
        let p = shared::contracts::path(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn object(v: serde_json::Value) -> SimplePublicObject {
        serde_json::from_value(v).expect("object")
    }

    fn line(id: &str, sku: Option<&str>, qty: &str, price: &str) -> SimplePublicObject {
        let mut props =
            json!({"name": format!("Line {id}"), "quantity": qty, "price": price, "hs_sku": sku});
        if sku.is_none() {
            props["hs_product_id"] = json!(format!("p{id}"));
        }
        object(json!({"id": id, "properties": props}))
    }

    /// The contract's deal and company, with the two line items its associations name.
    fn sample() -> DealSnapshot {
        let deal: SimplePublicObject =
            serde_json::from_str(&contract("hubspot/api/get_deal_response.json")).expect("deal");
        let companies: BatchResponse<SimplePublicObject> =
            serde_json::from_str(&contract("hubspot/api/batch_read_response_207.json"))
                .expect("companies");
        let ids = deal.association_ids(ObjectType::LineItems);
        assert_eq!(ids, ["7001", "7002"]);
        let contact = object(
            json!({"id": deal.association_ids(ObjectType::Contacts)[0], "properties": {
            "firstname": "Ada", "lastname": "Lovelace", "email": "ada@acme.example",
            "lastmodifieddate": "2025-01-01T10:00:00Z"}}),
        );
        DealSnapshot {
            company: companies
                .results
                .into_iter()
                .find(|c| c.id == deal.association_ids(ObjectType::Companies)[0]),
            contacts: vec![contact],
            line_items: vec![
                line("7001", Some("SKU-WIDGET"), "10", "25"),
                line("7002", Some("SKU-SERVICE"), "2.5", "150.00"),
            ],
            products: BTreeMap::new(),
            deal,
        }
    }

    fn ctx(cfg: &MappingConfig) -> Context<'_> {
        Context {
            cfg,
            tz: chrono_tz::America::New_York,
            now: "2025-01-03T12:00:00Z".parse().expect("now"),
        }
    }

    #[test]
    fn contract_deal_maps_to_a_sync_deal() {
        let cfg = MappingConfig::default();
        let snap = sample();
        assert_eq!(not_triggered(&cfg.trigger, &snap.deal), None);
        let cmd = sync_deal(&ctx(&cfg), &snap, &ItemCatalog::Unchecked).expect("maps");
        assert_eq!(cmd.hubspot_deal_id, "18204735012");
        assert_eq!(cmd.deal_name, "ACME – Rahmenvertrag");
        assert_eq!(
            cmd.deal_modified,
            "2025-01-02T11:59:50.123Z"
                .parse::<DateTime<Utc>>()
                .expect("t")
        );
        assert_eq!(cmd.customer.hubspot_company_id, "9911223344");
        assert_eq!(cmd.customer.customer_name, "ACME GmbH");
        assert_eq!(cmd.customer.customer_type, "Company");
        assert_eq!(cmd.customer.customer_group, "Commercial");
        assert_eq!(
            cmd.customer.territory, "United States",
            "default country US → the Territory ERPNext's wizard made for it"
        );
        assert_eq!(
            cmd.customer.website.as_deref(),
            Some("acme.example"),
            "domain is the website fallback"
        );
        assert_eq!(
            cmd.address, None,
            "the sample company has no street or city"
        );
        assert_eq!(cmd.contacts.len(), 1);
        assert_eq!(cmd.contacts[0].hubspot_contact_id, "65059681032");
        assert!(cmd.contacts[0].is_primary_contact);
        let o = &cmd.order;
        assert_eq!(o.company, "Acme Test Ltd");
        assert_eq!(o.currency, "USD");
        // closedate 2025-01-02T12:00:00Z is 07:00 in New York, same day.
        assert_eq!(
            o.transaction_date,
            NaiveDate::from_ymd_opt(2025, 1, 2).expect("date")
        );
        assert_eq!(
            o.delivery_date,
            NaiveDate::from_ymd_opt(2025, 1, 16).expect("date")
        );
        assert_eq!(o.selling_price_list.as_deref(), Some("Standard Selling"));
        assert_eq!(o.set_warehouse.as_deref(), Some("Stores - ATL"));
        assert_eq!(
            o.taxes_and_charges.as_deref(),
            Some("US Sales Tax - ATL"),
            "default country US"
        );
        assert!(!o.submit);
        let lines: Vec<(&str, String, String, &str)> = o
            .items
            .iter()
            .map(|l| {
                (
                    l.item_code.as_str(),
                    l.qty.to_string(),
                    l.rate.to_string(),
                    l.hubspot_line_item_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("SKU-WIDGET", "10".into(), "25".into(), "7001"),
                ("SKU-SERVICE", "2.5".into(), "150".into(), "7002")
            ]
        );
        assert_eq!(o.items[0].description.as_deref(), Some("Line 7001"));
    }

    #[test]
    fn full_company_gives_address_territory_and_tax() {
        let mut cfg = MappingConfig::default();
        cfg.customer
            .territories
            .insert("Germany".into(), "Rest Of The World".into());
        cfg.order
            .tax_templates
            .insert("Germany".into(), "DE VAT".into());
        let mut snap = sample();
        let company = snap.company.as_mut().expect("company");
        for (k, v) in [
            ("address", "Hauptstr. 1"),
            ("city", "Berlin"),
            ("zip", "10115"),
            ("country", "DE"),
            ("phone", "+49 30 1"),
        ] {
            company.properties.insert(k.into(), Some(v.into()));
        }
        let cmd = sync_deal(&ctx(&cfg), &snap, &ItemCatalog::Unchecked).expect("maps");
        let a = cmd.address.expect("address");
        assert_eq!(
            (
                a.address_title.as_str(),
                a.address_type.as_str(),
                a.address_line1.as_str(),
                a.city.as_str(),
                a.country.as_str()
            ),
            ("ACME GmbH", "Billing", "Hauptstr. 1", "Berlin", "Germany")
        );
        assert_eq!(a.pincode.as_deref(), Some("10115"));
        assert_eq!(a.address_line2, None);
        assert_eq!(cmd.customer.territory, "Rest Of The World");
        assert_eq!(cmd.order.taxes_and_charges.as_deref(), Some("DE VAT"));
    }

    #[test]
    fn unmappable_deals_say_what_to_do() {
        let cfg = MappingConfig::default();
        let c = ctx(&cfg);
        let mut snap = sample();
        snap.company = None;
        let e = sync_deal(&c, &snap, &ItemCatalog::Unchecked).expect_err("no company");
        assert_eq!(e.reason.code(), "no_company");
        assert!(
            e.to_string().starts_with(
                "Deal 18204735012 'ACME – Rahmenvertrag': it has no associated company"
            ),
            "{e}"
        );

        let mut snap = sample();
        snap.line_items.clear();
        let e = sync_deal(&c, &snap, &ItemCatalog::Unchecked).expect_err("no lines");
        assert_eq!(*e.reason, Reason::NoLineItems);

        let mut snap = sample();
        snap.line_items[0] = line("7001", Some("W-9"), "1", "10");
        let catalog = ItemCatalog::Known(
            ["SKU-WIDGET", "SKU-SERVICE"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        let e = sync_deal(&c, &snap, &catalog).expect_err("unknown sku");
        assert_eq!(
            e.to_string(),
            "Deal 18204735012 'ACME – Rahmenvertrag': HubSpot SKU 'W-9' has no ERPNext Item; add the Item in ERPNext or map it under [mapping.items.map] in the config"
        );

        let mut snap = sample();
        snap.line_items[1] = line("7002", None, "1", "10");
        let e = sync_deal(&c, &snap, &ItemCatalog::Unchecked).expect_err("no sku");
        assert_eq!(e.reason.code(), "missing_sku");
        assert!(
            e.to_string()
                .contains("line item 7002 'Line 7002' has no SKU"),
            "{e}"
        );

        let mut snap = sample();
        snap.line_items[0] = line("7001", Some("SKU-WIDGET"), "-1", "10");
        assert_eq!(
            sync_deal(&c, &snap, &ItemCatalog::Unchecked)
                .expect_err("qty")
                .reason
                .code(),
            "bad_quantity"
        );
        snap.line_items[0] = line("7001", Some("SKU-WIDGET"), "1", "ten");
        assert_eq!(
            sync_deal(&c, &snap, &ItemCatalog::Unchecked)
                .expect_err("rate")
                .reason
                .code(),
            "bad_rate"
        );

        let mut snap = sample();
        if let Some(co) = snap.company.as_mut() {
            co.properties.remove("name");
        }
        let e = sync_deal(&c, &snap, &ItemCatalog::Unchecked).expect_err("nameless");
        assert_eq!(e.reason.code(), "company_without_name");
    }

    #[test]
    fn sku_table_products_and_fallback() {
        let mut cfg = MappingConfig::default();
        cfg.items.map.insert("W-9".into(), "SKU-WIDGET".into());
        let catalog = ItemCatalog::Known(
            ["SKU-WIDGET", "SKU-GADGET", "SKU-SERVICE"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        let mut snap = sample();
        snap.line_items = vec![
            line("1", Some("W-9"), "1", "25"),
            line("2", None, "3", "40"),
        ];
        assert_eq!(products_needed(&cfg, &snap.line_items), ["p2"]);
        snap.products.insert(
            "p2".into(),
            object(json!({"id": "p2", "properties": {"hs_sku": "SKU-GADGET", "name": "Gadget"}})),
        );
        assert_eq!(
            item_codes(&cfg, &snap).into_iter().collect::<Vec<_>>(),
            ["SKU-GADGET", "SKU-WIDGET"]
        );
        let cmd = sync_deal(&ctx(&cfg), &snap, &catalog).expect("maps");
        let codes: Vec<&str> = cmd
            .order
            .items
            .iter()
            .map(|l| l.item_code.as_str())
            .collect();
        assert_eq!(codes, ["SKU-WIDGET", "SKU-GADGET"]);

        cfg.items.unknown_sku = UnknownSkuPolicy::FallbackItem;
        cfg.items.fallback_item = Some("SKU-SERVICE".into());
        snap.line_items.push(line("3", Some("NOPE"), "1", "5"));
        assert!(item_codes(&cfg, &snap).contains("SKU-SERVICE"));
        let cmd = sync_deal(&ctx(&cfg), &snap, &catalog).expect("maps with fallback");
        let last = cmd.order.items.last().expect("row");
        assert_eq!(last.item_code, "SKU-SERVICE");
        assert_eq!(
            last.description.as_deref(),
            Some("Line 3 (HubSpot SKU NOPE)")
        );

        let no_fallback = ItemCatalog::Known(
            ["SKU-WIDGET", "SKU-GADGET"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        let e = sync_deal(&ctx(&cfg), &snap, &no_fallback).expect_err("fallback missing");
        assert_eq!(e.reason.code(), "fallback_missing");
    }

    #[test]
    fn rate_falls_back_to_amount_per_unit_and_quantity_to_one() {
        let cfg = MappingConfig::default();
        let l = object(
            json!({"id": "9", "properties": {"hs_sku": "SKU-WIDGET", "amount": "100", "quantity": "4"}}),
        );
        let row =
            order_line(&ctx(&cfg), &l, &BTreeMap::new(), &ItemCatalog::Unchecked).expect("row");
        assert_eq!(
            (row.qty.to_string(), row.rate.to_string()),
            ("4".into(), "25".into())
        );
        let l = object(
            json!({"id": "9", "properties": {"hs_sku": "SKU-WIDGET", "price": "7.5", "quantity": null}}),
        );
        let row =
            order_line(&ctx(&cfg), &l, &BTreeMap::new(), &ItemCatalog::Unchecked).expect("row");
        assert_eq!(
            (row.qty.to_string(), row.rate.to_string()),
            ("1".into(), "7.5".into())
        );
    }

    /// Issue 16: HubSpot's decimal strings reach the command exactly and go on the wire as
    /// strings; with floats, 19.995 became 19.994999999999997 and 0.1 × 3 not 0.3.
    #[test]
    fn prices_and_quantities_are_kept_exactly() {
        let cfg = MappingConfig::default();
        let l = object(
            json!({"id": "9", "properties": {"hs_sku": "SKU-WIDGET", "price": "19.995", "quantity": "0.333"}}),
        );
        let row =
            order_line(&ctx(&cfg), &l, &BTreeMap::new(), &ItemCatalog::Unchecked).expect("row");
        assert_eq!(
            (row.qty.to_string(), row.rate.to_string()),
            ("0.333".into(), "19.995".into())
        );
        let wire = serde_json::to_value(&row).expect("json");
        assert_eq!(
            (&wire["qty"], &wire["rate"]),
            (&json!("0.333"), &json!("19.995"))
        );
        // What an older mapper queued (numbers) still reads.
        let old: shared::commands::OrderLine = serde_json::from_value(json!({
            "item_code": "SKU-WIDGET", "qty": 2.0, "rate": 19.99, "hubspot_line_item_id": "9"
        }))
        .expect("numbers");
        assert_eq!(
            (old.qty.to_string(), old.rate.to_string()),
            ("2".into(), "19.99".into())
        );
        // An amount per unit divides exactly.
        let l = object(
            json!({"id": "9", "properties": {"hs_sku": "SKU-WIDGET", "amount": "0.3", "quantity": "3"}}),
        );
        let row =
            order_line(&ctx(&cfg), &l, &BTreeMap::new(), &ItemCatalog::Unchecked).expect("row");
        assert_eq!(row.rate.to_string(), "0.1");
    }

    #[test]
    fn trigger_reads_pipeline_and_stage() {
        let cfg = MappingConfig::default();
        let mut deal = sample().deal;
        deal.properties
            .insert("dealstage".into(), Some("contractsent".into()));
        let why = not_triggered(&cfg.trigger, &deal).expect("not triggered");
        assert!(why.contains("stage 'contractsent'"), "{why}");
    }

    #[test]
    fn currency_and_dates() {
        let cfg = MappingConfig::default();
        let mut deal = sample().deal;
        deal.properties
            .insert("deal_currency_code".into(), Some("eur".into()));
        assert_eq!(currency(&cfg, &deal), "EUR");
        deal.properties
            .insert("deal_currency_code".into(), Some("euro".into()));
        assert_eq!(currency(&cfg, &deal), "USD");
        // 02:00 UTC on Jan 2 is still Jan 1 in New York.
        deal.properties
            .insert("closedate".into(), Some("2025-01-02T02:00:00Z".into()));
        assert_eq!(
            transaction_date(&ctx(&cfg), &deal),
            NaiveDate::from_ymd_opt(2025, 1, 1).expect("d")
        );
        deal.properties
            .insert("closedate".into(), Some("1735819200000".into()));
        assert_eq!(
            transaction_date(&ctx(&cfg), &deal),
            NaiveDate::from_ymd_opt(2025, 1, 2).expect("d")
        );
        deal.properties.insert("closedate".into(), None);
        assert_eq!(
            transaction_date(&ctx(&cfg), &deal),
            NaiveDate::from_ymd_opt(2025, 1, 3).expect("d")
        );
    }

    #[test]
    fn erpnext_times_are_site_local() {
        let t = parse_erpnext_time("2026-11-24 12:17:41.035485", chrono_tz::America::New_York)
            .expect("t");
        assert_eq!(t.to_rfc3339(), "2026-11-24T17:17:41.035485+00:00");
        assert_eq!(
            parse_erpnext_time("2026-07-01 00:00:00", chrono_tz::UTC).map(|t| t.to_rfc3339()),
            Some("2026-07-01T00:00:00+00:00".into())
        );
        assert_eq!(parse_erpnext_time("yesterday", chrono_tz::UTC), None);
    }

    #[test]
    fn contacts_need_some_name() {
        let cfg = MappingConfig::default();
        let c = ctx(&cfg);
        let only_mail = object(json!({"id": "1", "properties": {"email": "x@y.z"}}));
        assert_eq!(
            contact(&c, &only_mail, false).map(|s| s.first_name),
            Some("x@y.z".into())
        );
        let only_last = object(json!({"id": "2", "properties": {"lastname": "Curie"}}));
        let s = contact(&c, &only_last, true).expect("contact");
        assert_eq!(
            (
                s.first_name.as_str(),
                s.last_name.as_deref(),
                s.is_primary_contact
            ),
            ("Curie", None, true)
        );
        assert_eq!(
            contact(&c, &object(json!({"id": "3", "properties": {}})), false),
            None
        );
        assert_eq!(
            update_contact(&c, &only_mail, Some("9".into())).and_then(|u| u.hubspot_company_id),
            Some("9".into())
        );
    }
}
