//! The Customer and its Address, keyed by the HubSpot company.
//!
//! - Customer: found by `hubspot_company_id` (a unique custom field), created when absent. On an
//!   existing one only the fields HubSpot owns are refreshed (`customer_name`, `customer_type`,
//!   `website`, `tax_id`, `default_currency`), and only when HubSpot's change is newer than the
//!   document. `customer_group` and `territory` are creation defaults from the mapping; an ERPNext
//!   user may re-file the customer and a HubSpot edit must not undo that.
//! - Address: has no HubSpot key of its own; it is "the Address of this type linked to this
//!   Customer" (`Dynamic Link`), created linked, refreshed like the Customer.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use shared::commands::{AddressSpec, CustomerSpec};
use shared::erpnext::{Doc, ListQuery};

use crate::diff::{changes, put_opt};
use crate::error::StepError;
use crate::metrics;
use crate::site::ErpSite;
use crate::upsert::{Change, Key, OLDEST_FIRST, by_field, find_or_insert};

pub const CUSTOMER: &str = "Customer";
pub const ADDRESS: &str = "Address";

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
    "modified",
];

/// A Customer or Address after its step.
#[derive(Debug, Clone)]
pub struct Upserted {
    pub name: String,
    pub change: Change,
}

/// Find-or-create the Customer of `spec.hubspot_company_id`; refresh it when HubSpot is newer.
pub async fn upsert_customer(site: &ErpSite, spec: &CustomerSpec) -> Result<Upserted, StepError> {
    let what = format!("Customer for HubSpot company {}", spec.hubspot_company_id);
    let mut body = Map::new();
    body.insert("customer_name".into(), json!(spec.customer_name));
    body.insert("customer_type".into(), json!(spec.customer_type));
    body.insert("customer_group".into(), json!(spec.customer_group));
    body.insert("territory".into(), json!(spec.territory));
    body.insert("hubspot_company_id".into(), json!(spec.hubspot_company_id));
    put_opt(
        &mut body,
        "default_currency",
        spec.default_currency.as_deref(),
    );
    put_opt(&mut body, "website", spec.website.as_deref());
    put_opt(&mut body, "tax_id", spec.tax_id.as_deref());
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
        Key::Unique("hubspot_company_id", &spec.hubspot_company_id),
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
    let desired = owned_fields(spec);
    let change = refresh(site, CUSTOMER, &found.doc, &desired, spec.modified, &what).await?;
    Ok(Upserted { name, change })
}

/// The Address of `spec.address_type` linked to `customer`: find, create linked, or refresh.
pub async fn upsert_address(
    site: &ErpSite,
    customer: &str,
    spec: &AddressSpec,
    hubspot_modified: DateTime<Utc>,
) -> Result<Upserted, StepError> {
    let what = format!("{} Address of Customer {customer}", spec.address_type);
    let query = ListQuery::new()
        .child_filter("Dynamic Link", "link_doctype", "=", CUSTOMER)
        .child_filter("Dynamic Link", "link_name", "=", customer)
        .filter("address_type", "=", spec.address_type.as_str())
        .fields(ADDRESS_FIELDS)
        .order_by(OLDEST_FIRST)
        .limit(1);
    let mut body = address_fields(spec);
    body.insert("is_primary_address".into(), json!(1));
    body.insert(
        "links".into(),
        json!([{"link_doctype": CUSTOMER, "link_name": customer}]),
    );
    let found = find_or_insert(
        site,
        ADDRESS,
        &query,
        &Value::Object(body),
        &what,
        Key::NotUnique("links", customer),
    )
    .await?;
    let name = found.doc.name().to_string();
    if found.created {
        metrics::step(ADDRESS, Change::Created.label());
        return Ok(Upserted {
            name,
            change: Change::Created,
        });
    }
    let change = refresh(
        site,
        ADDRESS,
        &found.doc,
        &address_fields(spec),
        hubspot_modified,
        &what,
    )
    .await?;
    Ok(Upserted { name, change })
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
    let diff = changes(existing, desired);
    let change = if diff.is_empty() {
        Change::Unchanged
    } else if !site.hubspot_is_newer(hubspot_modified, existing.modified()) {
        tracing::info!(
            doctype,
            name = existing.name(),
            erpnext_modified = existing.modified().unwrap_or_default(),
            hubspot_modified = %hubspot_modified,
            fields = ?diff.keys().collect::<Vec<_>>(),
            "ERPNext document is newer than the HubSpot change; not overwriting it"
        );
        Change::Stale
    } else {
        site.client
            .update(doctype, existing.name(), &Value::Object(diff))
            .await
            .map_err(|e| StepError::erp(what, e))?;
        Change::Updated
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
