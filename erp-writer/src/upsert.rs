//! The find-or-create pattern every step uses (DESIGN §5): look the record up by its HubSpot key
//! first; create it only when absent; if the create hits the unique key anyway (another writer,
//! or our own earlier attempt whose answer was lost), the record exists — look it up again and
//! carry on. Never by name: ERPNext renames a second "Globex" to "Globex - 1" and answers 200.
//!
//! Contacts and Addresses have no unique key in ERPNext (`Contact.hubspot_contact_id` is not
//! unique; an Address is "the one of this type linked to this Customer"). The writer's lock and
//! lease keep concurrent creators apart, but with Redis down two processes can both create. So
//! for these [`Key::NotUnique`] makes the creator look again right after its insert, oldest first:
//! if an older twin exists, it deletes its own copy and uses the twin. Both racers agree on the
//! oldest, so they converge on one document. (A human-made duplicate is never deleted: only the
//! document this call just created is.)

use serde_json::Value;
use shared::erpnext::{Doc, ListQuery};

use crate::error::StepError;
use crate::site::ErpSite;

/// What a step did to its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
    /// ERPNext's document is newer than the HubSpot change: left alone.
    Stale,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
            Change::Stale => "stale",
        }
    }

    pub fn created(self) -> bool {
        self == Change::Created
    }
}

/// One document the step found or created.
#[derive(Debug, Clone)]
pub struct Found {
    pub doc: Doc,
    pub created: bool,
}

/// Whether ERPNext enforces the lookup key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// A unique field: a second insert fails with `UniqueValidationError`.
    Unique(&'static str, &'a str),
    /// Not enforced: after an insert, converge on the oldest match (see the module doc).
    NotUnique(&'static str, &'a str),
}

/// Find `doctype` by `query` (its first row, oldest first), else insert `body`; a unique
/// conflict on insert means it exists, so the query is asked again.
pub async fn find_or_insert(
    site: &ErpSite,
    doctype: &str,
    query: &ListQuery,
    body: &Value,
    what: &str,
    key: Key<'_>,
) -> Result<Found, StepError> {
    let found = find_or_insert_once(site, doctype, query, body, what, key).await?;
    if !found.created || matches!(key, Key::Unique(..)) {
        return Ok(found);
    }
    let ours = found.doc.name().to_string();
    match find_first(site, doctype, query, what).await? {
        Some(oldest) if oldest.name() != ours => {
            tracing::warn!(
                doctype,
                ours = %ours,
                kept = oldest.name(),
                "another writer created the same record concurrently; removing our copy"
            );
            crate::metrics::step(static_doctype(doctype), "converged");
            site.client
                .delete(doctype, &ours)
                .await
                .map_err(|e| StepError::erp(format!("{what} (removing duplicate {ours})"), e))?;
            Ok(Found {
                doc: oldest,
                created: false,
            })
        }
        _ => Ok(found),
    }
}

fn static_doctype(doctype: &str) -> &'static str {
    match doctype {
        "Contact" => "Contact",
        "Address" => "Address",
        _ => "other",
    }
}

async fn find_or_insert_once(
    site: &ErpSite,
    doctype: &str,
    query: &ListQuery,
    body: &Value,
    what: &str,
    key: Key<'_>,
) -> Result<Found, StepError> {
    let (Key::Unique(field, value) | Key::NotUnique(field, value)) = key;
    if let Some(doc) = find_first(site, doctype, query, what).await? {
        return Ok(Found {
            doc,
            created: false,
        });
    }
    match site.client.insert(doctype, body).await {
        Ok(doc) => Ok(Found { doc, created: true }),
        Err(e) if e.is_duplicate() => {
            tracing::info!(
                doctype,
                field,
                value,
                "unique conflict on insert: the record exists; using it"
            );
            match find_first(site, doctype, query, what).await? {
                Some(doc) => Ok(Found {
                    doc,
                    created: false,
                }),
                None => Err(StepError::ConflictNotVisible {
                    what: what.to_string(),
                    field,
                    value: value.to_string(),
                    message: e.server_message(),
                }),
            }
        }
        Err(e) => Err(StepError::erp(what, e)),
    }
}

/// The first row of a list query (the query orders by creation, so the oldest).
pub async fn find_first(
    site: &ErpSite,
    doctype: &str,
    query: &ListQuery,
    what: &str,
) -> Result<Option<Doc>, StepError> {
    site.client
        .list(doctype, query)
        .await
        .map(|rows| rows.into_iter().next())
        .map_err(|e| StepError::erp(what, e))
}

/// `[field = value]` with `fields`, oldest first, one row.
pub fn by_field(field: &str, value: &str, fields: &[&str]) -> ListQuery {
    ListQuery::new()
        .filter(field, "=", value)
        .fields(fields)
        .oldest_first()
        .limit(1)
}
