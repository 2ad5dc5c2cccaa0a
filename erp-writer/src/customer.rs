//! The Customer and its Address, keyed by the HubSpot company.
//!
//! - Customer: found by `hubspot_company_id` (a unique custom field), created when absent. On an
//!   existing one only the fields HubSpot owns are refreshed (`customer_name`, `customer_type`,
//!   `website`, `tax_id`, `default_currency`), and only when HubSpot's change is newer than the
//!   document. `customer_group` and `territory` are creation defaults from the mapping; an ERPNext
//!   user may re-file the customer and a HubSpot edit must not undo that.
//! - Address: keyed by `hubspot_address_key` = `<hubspot_company_id>:<address_type>` (unique:
//!   `erp-writer setup` makes it so), created linked to the Customer, refreshed like the
//!   Customer. It is looked up as "the Address of this type linked to this Customer": the one
//!   carrying the key, else one without a key, which a site synced before the key existed holds
//!   (or a human made for the Customer); that one is adopted by writing the key on it, so it
//!   stays the one. An Address carrying the key but no longer linked (a human removed the link)
//!   is found by the key when the insert meets it, and linked again.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use shared::commands::{AddressSpec, CustomerSpec};
use shared::erpnext::{Doc, ListQuery};

use crate::diff::{changes, put_opt};
use crate::error::StepError;
use crate::metrics;
use crate::site::{ErpSite, SOURCE_VERSION, source_version};
use crate::upsert::{
    Change, Key, LINK_COLUMNS, LINK_FIELDS, by_field, find_or_insert, grouped, judged,
};

pub const CUSTOMER: &str = "Customer";
pub const ADDRESS: &str = "Address";
/// The unique custom field an Address is keyed by (see [`address_key`]).
pub const ADDRESS_KEY: &str = "hubspot_address_key";

const CUSTOMER_FIELDS: &[&str] = &[
    "name",
    "customer_name",
    "customer_type",
    "customer_group",
    "territory",
    "default_currency",
    "website",
    "tax_id",
    "modified",
    "modified_by",
    SOURCE_VERSION,
];

const ADDRESS_FIELDS: &[&str] = &[
    "name",
    "address_title",
    "address_type",
    "address_line1",
    "address_line2",
    "city",
    "state",
    "pincode",
    "country",
    "email_id",
    "phone",
    ADDRESS_KEY,
    "modified",
    "modified_by",
    SOURCE_VERSION,
];

/// How many Addresses of one type one Customer may have before the look-up stops reading.
const MAX_LINKED: u32 = 50;

/// A Customer or Address after its step.
#[derive(Debug, Clone)]
pub struct Upserted {
    pub name: String,
    pub change: Change,
}

/// The Customer's party (receivable) account for one company: ERPNext invoices a customer only
/// through a receivable account in the invoice's currency, so a customer billed in EUR needs a
/// EUR receivable account (`[mapping.order.receivable_accounts]`).
#[derive(Debug, Clone, Copy)]
pub struct PartyAccount<'a> {
    pub company: &'a str,
    pub account: &'a str,
    /// The account's (and so the customer's billing) currency: ERPNext also requires the
    /// customer's `default_currency` to match a foreign-currency receivable account.
    pub currency: &'a str,
}

/// Find-or-create the Customer of `spec.hubspot_company_id`; refresh it when HubSpot is newer;
/// make sure it has `party_account` when one is given.
pub async fn upsert_customer(
    site: &ErpSite,
    spec: &CustomerSpec,
    party_account: Option<PartyAccount<'_>>,
) -> Result<Upserted, StepError> {
    let what = format!("Customer for HubSpot company {}", spec.hubspot_company_id);
    let mut body = Map::new();
    body.insert("customer_name".into(), json!(spec.customer_name));
    body.insert("customer_type".into(), json!(spec.customer_type));
    body.insert("customer_group".into(), json!(spec.customer_group));
    body.insert("territory".into(), json!(spec.territory));
    body.insert("hubspot_company_id".into(), json!(spec.hubspot_company_id));
    body.insert(SOURCE_VERSION.into(), json!(source_version(spec.modified)));
    put_opt(
        &mut body,
        "default_currency",
        spec.default_currency.as_deref(),
    );
    put_opt(&mut body, "website", spec.website.as_deref());
    put_opt(&mut body, "tax_id", spec.tax_id.as_deref());
    if let Some(p) = party_account {
        body.insert(
            "accounts".into(),
            json!([{"company": p.company, "account": p.account}]),
        );
        body.insert("default_currency".into(), json!(p.currency));
    }
    let found = find_or_insert(
        site,
        CUSTOMER,
        &by_field(
            "hubspot_company_id",
            &spec.hubspot_company_id,
            CUSTOMER_FIELDS,
        ),
        &Value::Object(body),
        &what,
        Key::new("hubspot_company_id", &spec.hubspot_company_id),
    )
    .await?;
    let name = found.doc.name().to_string();
    if found.created {
        if found.doc.str("customer_name") != Some(name.as_str()) {
            // ERPNext renamed it ("Globex - 1"): expected for a second company of the same name.
            tracing::info!(customer = %name, customer_name = %spec.customer_name, "Customer created under a renamed name");
        }
        metrics::step(CUSTOMER, Change::Created.label());
        return Ok(Upserted {
            name,
            change: Change::Created,
        });
    }
    if let Some(p) = party_account {
        ensure_party_account(site, &name, p, &what).await?;
    }
    let desired = owned_fields(spec);
    let change = refresh(site, CUSTOMER, &found.doc, &desired, spec.modified, &what).await?;
    Ok(Upserted { name, change })
}

/// An existing Customer gets `p` as its party account for `p.company` when it has none; one
/// that already bills the company through another account is not re-pointed (its ledger is in
/// that account's currency): the deal cannot be invoiced, and the operator is told why.
async fn ensure_party_account(
    site: &ErpSite,
    customer: &str,
    p: PartyAccount<'_>,
    what: &str,
) -> Result<(), StepError> {
    let doc = site
        .client
        .get(CUSTOMER, customer)
        .await
        .map_err(|e| StepError::erp(what, e))?
        .ok_or_else(|| StepError::Invalid(format!("{what}: Customer {customer} vanished")))?;
    let rows = doc.table("accounts");
    match rows.iter().find(|r| r.str("company") == Some(p.company)) {
        Some(row) if row.str("account") == Some(p.account) => Ok(()),
        Some(row) => Err(StepError::Invalid(format!(
            "Customer {customer} is billed through receivable account {:?} for {}, but this deal's \
             currency needs {:?} ([mapping.order.receivable_accounts]); ERPNext cannot invoice \
             one customer in two currencies: change the deal's currency or the customer's account",
            row.str("account").unwrap_or_default(),
            p.company,
            p.account
        ))),
        None => {
            let billing = doc.str("default_currency").unwrap_or_default();
            if !billing.is_empty() && billing != p.currency {
                return Err(StepError::Invalid(format!(
                    "Customer {customer} is billed in {billing}, but this deal is in {}; ERPNext \
                     cannot invoice one customer in two currencies: change the deal's currency or \
                     the customer's billing currency",
                    p.currency
                )));
            }
            let mut accounts: Vec<serde_json::Value> =
                rows.into_iter().map(|r| r.into_value()).collect();
            accounts.push(json!({"company": p.company, "account": p.account}));
            site.client
                .update(
                    CUSTOMER,
                    customer,
                    &json!({ "accounts": accounts, "default_currency": p.currency }),
                )
                .await
                .map_err(|e| StepError::erp(what, e))?;
            tracing::info!(
                customer,
                account = p.account,
                "receivable account set on the Customer"
            );
            Ok(())
        }
    }
}

/// The key of a company's Address of one type: `<hubspot_company_id>:<address_type>`.
pub fn address_key(hubspot_company_id: &str, address_type: &str) -> String {
    format!("{hubspot_company_id}:{address_type}")
}

/// A new Address of `spec`, keyed `key`, linked to `customer`, its primary address.
pub fn address_body(
    customer: &str,
    key: &str,
    spec: &AddressSpec,
    hubspot_modified: DateTime<Utc>,
) -> Value {
    let mut body = address_fields(spec);
    body.insert(ADDRESS_KEY.into(), json!(key));
    body.insert(
        SOURCE_VERSION.into(),
        json!(source_version(hubspot_modified)),
    );
    body.insert("is_primary_address".into(), json!(1));
    body.insert(
        "links".into(),
        json!([{"link_doctype": CUSTOMER, "link_name": customer}]),
    );
    Value::Object(body)
}

/// An Address found for a company: its list row and whether it links to the Customer.
#[derive(Debug, Clone)]
pub struct KnownAddress {
    pub row: Doc,
    pub linked: bool,
}

/// The Address of `address_type` linked to `customer` that is the company's: the one carrying
/// `key`, else the oldest without a key (adopted by [`refresh_address`]). An Address carrying
/// another company's key is that company's, even when linked here too. One call.
pub async fn find_linked_address(
    site: &ErpSite,
    customer: &str,
    key: &str,
    address_type: &str,
) -> Result<Option<KnownAddress>, StepError> {
    let query = ListQuery::new()
        .child_filter("Dynamic Link", "link_doctype", "=", CUSTOMER)
        .child_filter("Dynamic Link", "link_name", "=", customer)
        .filter("address_type", "=", address_type)
        .fields(ADDRESS_FIELDS)
        .oldest_first()
        .limit(MAX_LINKED);
    let rows =
        site.client.list(ADDRESS, &query).await.map_err(|e| {
            StepError::erp(format!("{address_type} Address of Customer {customer}"), e)
        })?;
    let key_of = |row: &Doc| {
        row.str(ADDRESS_KEY)
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_lowercase)
    };
    let want = key.to_lowercase();
    let pick = rows
        .iter()
        .position(|r| key_of(r).as_deref() == Some(want.as_str()))
        .or_else(|| rows.iter().position(|r| key_of(r).is_none()));
    Ok(pick
        .and_then(|i| rows.into_iter().nth(i))
        .map(|row| KnownAddress { row, linked: true }))
}

/// The Address carrying `key`, linked to `customer` or not.
pub async fn find_address_by_key(
    site: &ErpSite,
    customer: &str,
    key: &str,
) -> Result<Option<KnownAddress>, StepError> {
    let mut fields = ADDRESS_FIELDS.to_vec();
    fields.extend(LINK_COLUMNS);
    let query = ListQuery::new()
        .filter(ADDRESS_KEY, "=", key)
        .fields(&fields)
        .oldest_first()
        .limit(0);
    let rows = site
        .client
        .list(ADDRESS, &query)
        .await
        .map_err(|e| StepError::erp(format!("Address {ADDRESS_KEY} = {key:?}"), e))?;
    Ok(grouped(rows, LINK_FIELDS)
        .into_iter()
        .next()
        .map(|(row, links)| KnownAddress {
            linked: links.iter().any(|l| {
                l.str("link_doctype") == Some(CUSTOMER) && l.str("link_name") == Some(customer)
            }),
            row,
        }))
}

/// The company's Address of `spec.address_type`, found linked to `customer`, created linked,
/// or refreshed (`erp.update_customer`).
pub async fn upsert_address(
    site: &ErpSite,
    hubspot_company_id: &str,
    customer: &str,
    spec: &AddressSpec,
    hubspot_modified: DateTime<Utc>,
) -> Result<Upserted, StepError> {
    let key = address_key(hubspot_company_id, &spec.address_type);
    match find_linked_address(site, customer, &key, &spec.address_type).await? {
        Some(known) => refresh_address(site, customer, &key, spec, known, hubspot_modified).await,
        None => ensure_address(site, customer, &key, spec, hubspot_modified).await,
    }
}

/// The Address carrying `key`, refreshed and linked to `customer`; inserted when there is none.
/// For when no Address linked to the Customer is the company's, or none was looked for (a
/// Customer created a moment ago has none).
pub async fn ensure_address(
    site: &ErpSite,
    customer: &str,
    key: &str,
    spec: &AddressSpec,
    hubspot_modified: DateTime<Utc>,
) -> Result<Upserted, StepError> {
    if let Some(known) = find_address_by_key(site, customer, key).await? {
        return refresh_address(site, customer, key, spec, known, hubspot_modified).await;
    }
    let what = format!("{} Address of Customer {customer}", spec.address_type);
    match site
        .client
        .insert(
            ADDRESS,
            &address_body(customer, key, spec, hubspot_modified),
        )
        .await
    {
        Ok(doc) => {
            metrics::step(ADDRESS, Change::Created.label());
            Ok(Upserted {
                name: doc.name().to_string(),
                change: Change::Created,
            })
        }
        Err(e) if e.is_duplicate() => {
            tracing::info!(
                key,
                "unique conflict on insert: the Address exists; using it"
            );
            match find_address_by_key(site, customer, key).await? {
                Some(known) => {
                    refresh_address(site, customer, key, spec, known, hubspot_modified).await
                }
                None => Err(StepError::ConflictNotVisible {
                    what,
                    field: ADDRESS_KEY,
                    value: key.to_string(),
                    message: e.server_message(),
                }),
            }
        }
        Err(e) => Err(StepError::erp(what, e)),
    }
}

/// Bring a found Address in line: adopt it (write `key` on one without), link it to
/// `customer`, and refresh the fields HubSpot owns when HubSpot's change is newer. Nothing is
/// written when it already agrees.
pub async fn refresh_address(
    site: &ErpSite,
    customer: &str,
    key: &str,
    spec: &AddressSpec,
    mut known: KnownAddress,
    hubspot_modified: DateTime<Utc>,
) -> Result<Upserted, StepError> {
    let what = format!("{} Address of Customer {customer}", spec.address_type);
    // Twice at most: adopting can meet the key on another Address, which is then the one.
    for _ in 0..2 {
        let name = known.row.name().to_string();
        let mut update = Map::new();
        let adopt = known
            .row
            .str(ADDRESS_KEY)
            .is_none_or(|k| k.trim().is_empty());
        if adopt {
            update.insert(ADDRESS_KEY.into(), json!(key));
        }
        if !known.linked {
            // The list row has no child rows; the full document's are kept and ours added.
            let full = site
                .client
                .get(ADDRESS, &name)
                .await
                .map_err(|e| StepError::erp(&what, e))?
                .ok_or_else(|| StepError::ConflictNotVisible {
                    what: what.clone(),
                    field: ADDRESS_KEY,
                    value: key.to_string(),
                    message: format!("Address {name} was deleted while it was being linked"),
                })?;
            let mut rows: Vec<Value> = full
                .table("links")
                .into_iter()
                .map(Doc::into_value)
                .collect();
            rows.push(json!({"link_doctype": CUSTOMER, "link_name": customer}));
            update.insert("links".into(), Value::Array(rows));
        }
        let diff = changes(&known.row, &address_fields(spec));
        let mut change = if diff.is_empty() {
            Change::Unchanged
        } else {
            let change = judged(site, ADDRESS, &known.row, &diff, hubspot_modified, &what).await?;
            if change == Change::Updated {
                update.extend(diff);
                update.insert(
                    SOURCE_VERSION.into(),
                    json!(source_version(hubspot_modified)),
                );
            }
            change
        };
        if !update.is_empty() {
            match site
                .client
                .update(ADDRESS, &name, &Value::Object(update))
                .await
            {
                Ok(_) => {
                    if adopt {
                        tracing::info!(address = %name, key, "Address synced before it had a key adopted");
                    }
                    if !matches!(change, Change::Stale | Change::Review) {
                        change = Change::Updated;
                    }
                }
                Err(e) if adopt && e.is_duplicate() => {
                    // Another Address got the key meanwhile (another writer inserted it): that
                    // one is the company's; this one stays as it was.
                    match find_address_by_key(site, customer, key).await? {
                        Some(other) if other.row.name() != name => {
                            known = other;
                            continue;
                        }
                        _ => return Err(StepError::erp(&what, e)),
                    }
                }
                Err(e) => return Err(StepError::erp(&what, e)),
            }
        }
        metrics::step(ADDRESS, change.label());
        return Ok(Upserted { name, change });
    }
    Err(StepError::ConflictNotVisible {
        what,
        field: ADDRESS_KEY,
        value: key.to_string(),
        message: "the key moved between Addresses while it was being adopted".into(),
    })
}

/// The Customer fields HubSpot owns (see the module doc).
fn owned_fields(spec: &CustomerSpec) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("customer_name".into(), json!(spec.customer_name));
    m.insert("customer_type".into(), json!(spec.customer_type));
    put_opt(&mut m, "default_currency", spec.default_currency.as_deref());
    put_opt(&mut m, "website", spec.website.as_deref());
    put_opt(&mut m, "tax_id", spec.tax_id.as_deref());
    m
}

fn address_fields(spec: &AddressSpec) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("address_title".into(), json!(spec.address_title));
    m.insert("address_type".into(), json!(spec.address_type));
    m.insert("address_line1".into(), json!(spec.address_line1));
    put_opt(&mut m, "address_line2", spec.address_line2.as_deref());
    m.insert("city".into(), json!(spec.city));
    put_opt(&mut m, "state", spec.state.as_deref());
    put_opt(&mut m, "pincode", spec.pincode.as_deref());
    m.insert("country".into(), json!(spec.country));
    put_opt(&mut m, "email_id", spec.email_id.as_deref());
    put_opt(&mut m, "phone", spec.phone.as_deref());
    m
}

/// `PUT` the fields of `desired` that differ, if HubSpot's change is newer than the document.
pub(crate) async fn refresh(
    site: &ErpSite,
    doctype: &'static str,
    existing: &Doc,
    desired: &Map<String, Value>,
    hubspot_modified: DateTime<Utc>,
    what: &str,
) -> Result<Change, StepError> {
    let mut diff = changes(existing, desired);
    let change = if diff.is_empty() {
        Change::Unchanged
    } else {
        let change = judged(site, doctype, existing, &diff, hubspot_modified, what).await?;
        if change == Change::Updated {
            diff.insert(
                SOURCE_VERSION.into(),
                json!(source_version(hubspot_modified)),
            );
            site.client
                .update(doctype, existing.name(), &Value::Object(diff))
                .await
                .map_err(|e| StepError::erp(what, e))?;
        }
        change
    };
    metrics::step(doctype, change.label());
    Ok(change)
}

/// The Customer of a HubSpot company, if one was synced: `name` and the fields [`refresh`] compares.
pub async fn find_customer(
    site: &ErpSite,
    hubspot_company_id: &str,
) -> Result<Option<Doc>, StepError> {
    crate::upsert::find_first(
        site,
        CUSTOMER,
        &by_field("hubspot_company_id", hubspot_company_id, CUSTOMER_FIELDS),
        &format!("Customer for HubSpot company {hubspot_company_id}"),
    )
    .await
}

/// Refresh an already-synced Customer (never creates one); `None` when there is none.
pub async fn refresh_customer(
    site: &ErpSite,
    spec: &CustomerSpec,
) -> Result<Option<Upserted>, StepError> {
    let Some(doc) = find_customer(site, &spec.hubspot_company_id).await? else {
        return Ok(None);
    };
    let what = format!("Customer for HubSpot company {}", spec.hubspot_company_id);
    let desired = owned_fields(spec);
    let change = refresh(site, CUSTOMER, &doc, &desired, spec.modified, &what).await?;
    Ok(Some(Upserted {
        name: doc.name().to_string(),
        change,
    }))
}
