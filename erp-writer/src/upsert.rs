//! The find-or-create pattern every step uses (DESIGN §5): look the record up by its HubSpot key
//! first, or skip the look-up when the previous step's answer settles it; create it only when
//! absent; if the create hits the unique key anyway (another writer, our own earlier attempt
//! whose answer was lost, or an insert that commits on the server after the client gave up), the
//! record exists — look it up by its key and carry on. Never by name: ERPNext renames a second
//! "Globex" to "Globex - 1" and answers 200.
//!
//! Every record lead2ledger creates carries a key that ERPNext itself keeps unique (`erp-writer
//! setup` makes the custom fields unique): `Customer.hubspot_company_id`,
//! `Contact.hubspot_contact_id`, `Address.hubspot_address_key` (`<company>:<address type>`) and
//! `Sales Order.hubspot_deal_key`. So whoever inserts second — however late it commits — gets
//! `UniqueValidationError` (HTTP 417), and nothing is ever inserted twice; no convergence after
//! the fact is needed (`live-findings/contact_insert_duplicate_hubspot_contact_id.json`,
//! `address_insert_duplicate_hubspot_address_key.json`).
//!
//! Several new records go to ERPNext in one call, `frappe.client.insert_many`
//! ([`insert_batch`]): Frappe runs one request in one database transaction, so the batch commits
//! whole or not at all, and it answers the new names in the order of the documents
//! (`live-findings/insert_many_address_and_contacts.json`,
//! `insert_many_unique_conflict_rolls_back.json`). A unique conflict in a batch does not say
//! which record exists, so the caller then looks each one up and inserts the missing ones alone.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use shared::erpnext::{Doc, ListQuery};

use crate::error::StepError;
use crate::site::{ErpSite, Judgement};

/// Frappe's whitelisted batch insert (at most 200 documents, one transaction).
pub const INSERT_MANY: &str = "frappe.client.insert_many";

/// What a step did to its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
    /// The document was written from this HubSpot version or a newer one: left alone.
    Stale,
    /// Someone else saved the document after lead2ledger last wrote it, and HubSpot changed
    /// too: left as it is, and the deal is flagged for review.
    Review,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
            Change::Stale => "stale",
            Change::Review => "needs_review",
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

/// The unique field a record is keyed by, and its value: ERPNext refuses a second record with
/// it (`UniqueValidationError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    pub field: &'static str,
    pub value: &'a str,
}

impl<'a> Key<'a> {
    pub fn new(field: &'static str, value: &'a str) -> Self {
        Self { field, value }
    }
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
    if let Some(doc) = find_first(site, doctype, query, what).await? {
        return Ok(Found {
            doc,
            created: false,
        });
    }
    insert_or_find(site, doctype, query, body, what, key).await
}

/// Insert `body` without looking first (the caller knows it is very likely absent); on a
/// unique conflict, the record `query` finds.
pub async fn insert_or_find(
    site: &ErpSite,
    doctype: &str,
    query: &ListQuery,
    body: &Value,
    what: &str,
    key: Key<'_>,
) -> Result<Found, StepError> {
    match site.client.insert(doctype, body).await {
        Ok(doc) => Ok(Found { doc, created: true }),
        Err(e) if e.is_duplicate() => {
            tracing::info!(
                doctype,
                field = key.field,
                value = key.value,
                "unique conflict on insert: the record exists; using it"
            );
            match find_first(site, doctype, query, what).await? {
                Some(doc) => Ok(Found {
                    doc,
                    created: false,
                }),
                None => Err(StepError::ConflictNotVisible {
                    what: what.to_string(),
                    field: key.field,
                    value: key.value.to_string(),
                    message: e.server_message(),
                }),
            }
        }
        Err(e) => Err(StepError::erp(what, e)),
    }
}

/// A new document for [`insert_batch`].
#[derive(Debug, Clone)]
pub struct NewDoc {
    pub doctype: &'static str,
    /// The document's fields (without `doctype`).
    pub body: Value,
}

/// What a batch insert came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    /// Every document was inserted; their names, in the order given.
    Inserted(Vec<String>),
    /// Which documents exist is not known: one of them hit its unique key (then the batch was
    /// rolled back), or ERPNext did not answer one name per document. Every document is keyed:
    /// look each one up and insert the missing ones.
    LookUp,
}

/// Insert `docs` in one call, all or none: one document as a plain insert, several with
/// [`INSERT_MANY`].
pub async fn insert_batch(site: &ErpSite, docs: &[NewDoc], what: &str) -> Result<Batch, StepError> {
    let answer = match docs {
        [] => return Ok(Batch::Inserted(Vec::new())),
        [one] => site
            .client
            .insert(one.doctype, &one.body)
            .await
            .map(|doc| json!([doc.name()])),
        many => {
            let docs: Vec<Value> = many
                .iter()
                .map(|d| {
                    let mut body = d.body.clone();
                    if let Some(m) = body.as_object_mut() {
                        m.insert("doctype".into(), json!(d.doctype));
                    }
                    body
                })
                .collect();
            site.client
                .call(INSERT_MANY, &json!({ "docs": docs }))
                .await
        }
    };
    match answer {
        Ok(Value::Array(names))
            if names.len() == docs.len() && names.iter().all(Value::is_string) =>
        {
            Ok(Batch::Inserted(
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ))
        }
        Ok(other) => {
            tracing::warn!(
                what,
                answer = %other,
                documents = docs.len(),
                "batch insert answered without one name per document; looking each record up"
            );
            Ok(Batch::LookUp)
        }
        Err(e) if e.is_duplicate() => {
            tracing::info!(
                what,
                message = %e.server_message(),
                "unique conflict in a batch insert: nothing was inserted; looking each record up"
            );
            Ok(Batch::LookUp)
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

/// A Contact's or Address's links, from the `Dynamic Link` rows a list joins (one row per link;
/// Frappe names the columns without their table): the columns to ask for, and the fields they
/// come back as ([`grouped`]'s `child`).
pub const LINK_COLUMNS: &[&str] = &[
    "`tabDynamic Link`.link_doctype",
    "`tabDynamic Link`.link_name",
];
pub const LINK_FIELDS: &[&str] = &["link_doctype", "link_name"];

/// Rows of a list that joined a child table (one row per child row), grouped back into one
/// entry per document, in the order the documents first appear: the document's own fields from
/// its first row, and the child fields `child` of every row.
pub fn grouped(rows: Vec<Doc>, child: &[&str]) -> Vec<(Doc, Vec<Doc>)> {
    let mut out: Vec<(Doc, Vec<Doc>)> = Vec::new();
    for row in rows {
        let children = Doc(child
            .iter()
            .filter_map(|f| row.get(f).map(|v| (f.to_string(), v.clone())))
            .collect());
        let has_child = children.0.values().any(|v| !v.is_null());
        match out.iter_mut().find(|(d, _)| d.name() == row.name()) {
            Some((_, rows)) => {
                if has_child {
                    rows.push(children);
                }
            }
            None => {
                let mut doc = row;
                for f in child {
                    doc.0.remove(*f);
                }
                out.push((doc, if has_child { vec![children] } else { vec![] }));
            }
        }
    }
    out
}

/// Whether HubSpot's change at `hubspot_modified`, which differs from `doc` in `diff`, may be
/// written ([`Change::Updated`]), is older than what `doc` was written from ([`Change::Stale`]),
/// or meets a human edit ([`Change::Review`]); the last two are logged with the fields.
pub(crate) async fn judged(
    site: &ErpSite,
    doctype: &'static str,
    doc: &Doc,
    diff: &Map<String, Value>,
    hubspot_modified: DateTime<Utc>,
    what: &str,
) -> Result<Change, StepError> {
    let fields: Vec<&String> = diff.keys().collect();
    match site
        .judge(doc, hubspot_modified)
        .await
        .map_err(|e| StepError::erp(what, e))?
    {
        Judgement::Apply => Ok(Change::Updated),
        Judgement::Stale { stored } => {
            tracing::info!(
                doctype,
                name = doc.name(),
                written_from = %stored,
                hubspot_modified = %hubspot_modified,
                ?fields,
                "written from this HubSpot version or a newer one; not overwriting it"
            );
            Ok(Change::Stale)
        }
        Judgement::EditedInErpNext { by, at } => {
            tracing::warn!(
                doctype,
                name = doc.name(),
                edited_by = %by,
                edited_at = %at,
                hubspot_modified = %hubspot_modified,
                ?fields,
                "edited in ERPNext after lead2ledger wrote it, and changed in HubSpot since; left as it is, the deal needs review"
            );
            Ok(Change::Review)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: Value) -> Doc {
        match v {
            Value::Object(m) => Doc(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn joined_rows_group_by_document_in_first_seen_order() {
        let rows = vec![
            doc(json!({"name": "B", "x": 1, "link_name": "C1", "link_doctype": "Customer"})),
            doc(json!({"name": "A", "x": 2, "link_name": null, "link_doctype": null})),
            doc(json!({"name": "B", "x": 1, "link_name": "C2", "link_doctype": "Customer"})),
        ];
        let g = grouped(rows, &["link_doctype", "link_name"]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].0.name(), "B");
        assert_eq!(
            g[0].0.get("link_name"),
            None,
            "child fields are not the document's"
        );
        assert_eq!(
            g[0].1
                .iter()
                .map(|r| r.str("link_name"))
                .collect::<Vec<_>>(),
            vec![Some("C1"), Some("C2")]
        );
        assert_eq!(g[1].0.name(), "A");
        assert!(
            g[1].1.is_empty(),
            "a LEFT JOIN row of nulls is no child row"
        );
    }
}
