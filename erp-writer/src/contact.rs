//! Contacts, keyed by `hubspot_contact_id` (unique: `erp-writer setup` makes it so) and linked
//! to their Customer.
//!
//! The Contacts of a deal are looked up together, in one list call with an `in` filter that also
//! returns their links ([`find_contacts`]); the missing ones are inserted together with the
//! Address (see `sync_deal`). A site synced before setup made the key unique may still hold two
//! Contacts of one HubSpot contact: the oldest is the one, whoever reads.
//!
//! On an existing Contact:
//! - a missing link to the Customer is always added (additive: a HubSpot contact associated
//!   with two companies is linked to both Customers);
//! - names, primary email and phone are refreshed only when HubSpot's change is newer. Email and
//!   phone rows a human added in ERPNext are kept; the HubSpot value becomes (or stays) primary.
//!
//! The list row says whether either is needed; only then is the full document read (its child
//! rows are rewritten whole) and written.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use shared::commands::ContactSpec;
use shared::erpnext::{Doc, ListQuery};

use crate::customer::{CUSTOMER, Upserted};
use crate::diff::{changes, put_opt, same};
use crate::error::StepError;
use crate::metrics;
use crate::site::{ErpSite, SOURCE_VERSION, source_version};
use crate::upsert::{Change, LINK_COLUMNS, LINK_FIELDS, grouped, judged};

pub const CONTACT: &str = "Contact";
/// The unique custom field a Contact is keyed by.
pub const CONTACT_KEY: &str = "hubspot_contact_id";

const CONTACT_FIELDS: &[&str] = &[
    "name",
    CONTACT_KEY,
    "first_name",
    "last_name",
    "email_id",
    "phone",
    "is_primary_contact",
    "modified",
    "modified_by",
    SOURCE_VERSION,
];

/// A Contact found by its HubSpot ID: its list row and what it links to.
#[derive(Debug, Clone)]
pub struct KnownContact {
    pub row: Doc,
    /// `link_doctype`, `link_name` of each link.
    pub links: Vec<Doc>,
}

impl KnownContact {
    pub fn name(&self) -> &str {
        self.row.name()
    }

    fn linked_to(&self, customer: &str) -> bool {
        self.links.iter().any(|l| {
            l.str("link_doctype") == Some(CUSTOMER) && l.str("link_name") == Some(customer)
        })
    }
}

/// The Contacts of `ids` by HubSpot ID (lower-cased: ERPNext compares keys without case), in
/// one call. Absent IDs are absent from the map.
pub async fn find_contacts(
    site: &ErpSite,
    ids: &[&str],
) -> Result<HashMap<String, KnownContact>, StepError> {
    let mut found = HashMap::new();
    if ids.is_empty() {
        return Ok(found);
    }
    let mut fields = CONTACT_FIELDS.to_vec();
    fields.extend(LINK_COLUMNS);
    let query = ListQuery::new()
        .filter(CONTACT_KEY, "in", json!(ids))
        .fields(&fields)
        .oldest_first()
        .limit(0);
    let rows = site
        .client
        .list(CONTACT, &query)
        .await
        .map_err(|e| StepError::erp(format!("Contacts for HubSpot contacts {ids:?}"), e))?;
    for (row, links) in grouped(rows, LINK_FIELDS) {
        let Some(id) = row.str(CONTACT_KEY).map(str::to_lowercase) else {
            continue;
        };
        // Oldest first: the first one of an ID is the one.
        found.entry(id).or_insert(KnownContact { row, links });
    }
    Ok(found)
}

/// The key [`find_contacts`] files `spec` under.
pub fn lookup_key(spec: &ContactSpec) -> String {
    spec.hubspot_contact_id.to_lowercase()
}

/// A new Contact of `spec`, linked to `customer` when given.
pub fn contact_body(spec: &ContactSpec, customer: Option<&str>) -> Value {
    let mut body = scalar_fields(spec);
    body.insert(CONTACT_KEY.into(), json!(spec.hubspot_contact_id));
    body.insert(SOURCE_VERSION.into(), json!(source_version(spec.modified)));
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
    Value::Object(body)
}

/// Find-or-create the Contact of `spec.hubspot_contact_id`, linked to `customer` when given:
/// one Contact at a time (`erp.update_contact`, and after a batch insert met an existing one).
pub async fn upsert_contact(
    site: &ErpSite,
    customer: Option<&str>,
    spec: &ContactSpec,
) -> Result<Upserted, StepError> {
    let id = spec.hubspot_contact_id.as_str();
    let existing = match find_contacts(site, &[id]).await?.remove(&lookup_key(spec)) {
        Some(known) => known,
        None => match site
            .client
            .insert(CONTACT, &contact_body(spec, customer))
            .await
        {
            Ok(doc) => {
                metrics::step(CONTACT, Change::Created.label());
                return Ok(Upserted {
                    name: doc.name().to_string(),
                    change: Change::Created,
                });
            }
            // Another writer, or an earlier attempt of ours that committed late, created it.
            Err(e) if e.is_duplicate() => {
                tracing::info!(
                    hubspot_contact_id = id,
                    "unique conflict on insert: the Contact exists; using it"
                );
                find_contacts(site, &[id])
                    .await?
                    .remove(&lookup_key(spec))
                    .ok_or_else(|| StepError::ConflictNotVisible {
                        what: format!("Contact for HubSpot contact {id}"),
                        field: CONTACT_KEY,
                        value: id.to_string(),
                        message: e.server_message(),
                    })?
            }
            Err(e) => {
                return Err(StepError::erp(
                    format!("Contact for HubSpot contact {id}"),
                    e,
                ));
            }
        },
    };
    let change = refresh_contact(site, customer, spec, &existing).await?;
    Ok(Upserted {
        name: existing.name().to_string(),
        change,
    })
}

/// Bring an existing Contact in line with `spec` (see the module doc): nothing is read or
/// written when its list row already agrees.
pub async fn refresh_contact(
    site: &ErpSite,
    customer: Option<&str>,
    spec: &ContactSpec,
    known: &KnownContact,
) -> Result<Change, StepError> {
    let what = format!("Contact for HubSpot contact {}", spec.hubspot_contact_id);
    let name = known.name();
    let email = clean(spec.email_id.as_deref());
    let phone = clean(spec.phone.as_deref());
    let mut desired = scalar_fields(spec);
    if let Some(email) = email {
        desired.insert("email_id".into(), json!(email));
    }
    if let Some(phone) = phone {
        desired.insert("phone".into(), json!(phone));
    }
    let needs_link = customer.is_some_and(|c| !known.linked_to(c));
    let listed_diff = changes(&known.row, &desired);
    let listed = if listed_diff.is_empty() {
        Change::Unchanged
    } else {
        judged(
            site,
            CONTACT,
            &known.row,
            &listed_diff,
            spec.modified,
            &what,
        )
        .await?
    };
    if !needs_link && listed != Change::Updated {
        metrics::step(CONTACT, listed.label());
        return Ok(listed);
    }

    // The list row has no child tables; the full document does, and they are rewritten whole.
    let Some(full) = site
        .client
        .get(CONTACT, name)
        .await
        .map_err(|e| StepError::erp(&what, e))?
    else {
        return Err(StepError::ConflictNotVisible {
            what,
            field: CONTACT_KEY,
            value: spec.hubspot_contact_id.clone(),
            message: format!("Contact {name} was deleted while it was being updated"),
        });
    };
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
    let diff = changes(&full, &desired);
    let fields_change = if diff.is_empty() || listed != Change::Updated {
        if diff.is_empty() {
            Change::Unchanged
        } else {
            listed
        }
    } else {
        update.insert(SOURCE_VERSION.into(), json!(source_version(spec.modified)));
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
            .update(CONTACT, name, &Value::Object(update))
            .await
            .map_err(|e| StepError::erp(&what, e))?;
        Change::Updated
    };
    metrics::step(CONTACT, change.label());
    Ok(change)
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
