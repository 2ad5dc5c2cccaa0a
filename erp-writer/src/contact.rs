//! Contacts, keyed by `hubspot_contact_id` and linked to their Customer.
//!
//! `Contact.hubspot_contact_id` is not unique in ERPNext (a person can be imported twice by
//! hand), so lookups take the oldest match, and concurrent creation of the same contact is
//! prevented by the writer's lease on the company (see `handler`), not by the database.
//!
//! On an existing Contact:
//! - a missing link to the Customer is always added (additive: a HubSpot contact associated
//!   with two companies is linked to both Customers);
//! - names, primary email and phone are refreshed only when HubSpot's change is newer. Email and
//!   phone rows a human added in ERPNext are kept; the HubSpot value becomes (or stays) primary.

use serde_json::{Map, Value, json};
use shared::commands::ContactSpec;
use shared::erpnext::Doc;

use crate::customer::{CUSTOMER, Upserted};
use crate::diff::{changes, put_opt, same};
use crate::error::StepError;
use crate::metrics;
use crate::site::ErpSite;
use crate::upsert::{Change, Key, by_field, find_or_insert};

pub const CONTACT: &str = "Contact";

const CONTACT_FIELDS: &[&str] = &[
    "name",
    "first_name",
    "last_name",
    "email_id",
    "phone",
    "is_primary_contact",
    "modified",
];

/// Find-or-create the Contact of `spec.hubspot_contact_id`, linked to `customer` when given.
pub async fn upsert_contact(
    site: &ErpSite,
    customer: Option<&str>,
    spec: &ContactSpec,
) -> Result<Upserted, StepError> {
    let what = format!("Contact for HubSpot contact {}", spec.hubspot_contact_id);
    let mut body = scalar_fields(spec);
    body.insert("hubspot_contact_id".into(), json!(spec.hubspot_contact_id));
    if let Some(email) = clean(spec.email_id.as_deref()) {
        body.insert(
            "email_ids".into(),
            json!([{"email_id": email, "is_primary": 1}]),
        );
    }
    if let Some(phone) = clean(spec.phone.as_deref()) {
        body.insert(
            "phone_nos".into(),
            json!([{"phone": phone, "is_primary_phone": 1}]),
        );
    }
    if let Some(customer) = customer {
        body.insert(
            "links".into(),
            json!([{"link_doctype": CUSTOMER, "link_name": customer}]),
        );
    }
    let found = find_or_insert(
        site,
        CONTACT,
        &by_field(
            "hubspot_contact_id",
            &spec.hubspot_contact_id,
            CONTACT_FIELDS,
        ),
        &Value::Object(body),
        &what,
        Key::NotUnique("hubspot_contact_id", &spec.hubspot_contact_id),
    )
    .await?;
    let name = found.doc.name().to_string();
    if found.created {
        metrics::step(CONTACT, Change::Created.label());
        return Ok(Upserted {
            name,
            change: Change::Created,
        });
    }

    // The list row has no child tables; the full document does.
    let full = site
        .client
        .get(CONTACT, &name)
        .await
        .map_err(|e| StepError::erp(&what, e))?
        .unwrap_or(found.doc);
    let mut update = Map::new();
    if let Some(customer) = customer {
        let links = full.table("links");
        let linked = links.iter().any(|l| {
            l.str("link_doctype") == Some(CUSTOMER) && l.str("link_name") == Some(customer)
        });
        if !linked {
            let mut rows: Vec<Value> = links.into_iter().map(Doc::into_value).collect();
            rows.push(json!({"link_doctype": CUSTOMER, "link_name": customer}));
            update.insert("links".into(), Value::Array(rows));
        }
    }
    let mut desired = scalar_fields(spec);
    let email = clean(spec.email_id.as_deref());
    let phone = clean(spec.phone.as_deref());
    if let Some(email) = email {
        desired.insert("email_id".into(), json!(email));
    }
    if let Some(phone) = phone {
        desired.insert("phone".into(), json!(phone));
    }
    let diff = changes(&full, &desired);
    let fields_change = if diff.is_empty() {
        Change::Unchanged
    } else if !site.hubspot_is_newer(spec.modified, full.modified()) {
        tracing::info!(contact = %name, "ERPNext Contact is newer than the HubSpot change; not overwriting it");
        Change::Stale
    } else {
        for (k, v) in diff {
            match k.as_str() {
                // Frappe derives `email_id`/`phone` from the primary child rows.
                "email_id" => {
                    if let Some(email) = email {
                        update.insert(
                            "email_ids".into(),
                            primary_rows(&full, "email_ids", "email_id", "is_primary", email),
                        );
                    }
                }
                "phone" => {
                    if let Some(phone) = phone {
                        update.insert(
                            "phone_nos".into(),
                            primary_rows(&full, "phone_nos", "phone", "is_primary_phone", phone),
                        );
                    }
                }
                _ => {
                    update.insert(k, v);
                }
            }
        }
        Change::Updated
    };
    let change = if update.is_empty() {
        fields_change
    } else {
        site.client
            .update(CONTACT, &name, &Value::Object(update))
            .await
            .map_err(|e| StepError::erp(&what, e))?;
        Change::Updated
    };
    metrics::step(CONTACT, change.label());
    Ok(Upserted { name, change })
}

fn scalar_fields(spec: &ContactSpec) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("first_name".into(), json!(spec.first_name));
    put_opt(&mut m, "last_name", spec.last_name.as_deref());
    m.insert(
        "is_primary_contact".into(),
        json!(i32::from(spec.is_primary_contact)),
    );
    m
}

fn clean(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

/// The child rows of `table` with `value` as the only primary row (appended if absent); the
/// other rows are kept as they are, by `name`.
fn primary_rows(doc: &Doc, table: &str, field: &str, flag: &str, value: &str) -> Value {
    let mut found = false;
    let mut rows: Vec<Value> = doc
        .table(table)
        .into_iter()
        .map(|row| {
            let is_it = same(row.get(field), &json!(value));
            found |= is_it;
            let mut m = row.0;
            m.insert(flag.to_string(), json!(i32::from(is_it)));
            Value::Object(m)
        })
        .collect();
    if !found {
        rows.push(json!({field: value, flag: 1}));
    }
    Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_rows_keep_other_rows_and_move_the_flag() {
        let Value::Object(m) = json!({"email_ids": [
            {"name": "r1", "email_id": "old@x", "is_primary": 1},
            {"name": "r2", "email_id": "other@x", "is_primary": 0}
        ]}) else {
            unreachable!()
        };
        let doc = Doc(m);
        let rows = primary_rows(&doc, "email_ids", "email_id", "is_primary", "new@x");
        assert_eq!(
            rows,
            json!([
                {"name": "r1", "email_id": "old@x", "is_primary": 0},
                {"name": "r2", "email_id": "other@x", "is_primary": 0},
                {"email_id": "new@x", "is_primary": 1}
            ])
        );
        let rows = primary_rows(&doc, "email_ids", "email_id", "is_primary", "other@x");
        assert_eq!(rows[1]["is_primary"], 1);
        assert_eq!(rows[0]["is_primary"], 0);
        assert_eq!(rows.as_array().map(Vec::len), Some(2));
    }
}
