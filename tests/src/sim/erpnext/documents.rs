//! Frappe's document life cycle over the store: insert, save (draft), submit, update after
//! submit, cancel, delete. Each runs the doctype's hooks (`controllers`) and the generic checks
//! (`validation`) in Frappe's order, writes only when everything passed, and records the doc
//! events the webhook dispatcher turns into deliveries.

use serde_json::{Map, Value, json};

use super::controllers::{self, fl, s};
use super::doctypes::{DocTypeMeta, HEAD, str_of, truthy};
use super::errors::{FrappeError, note_message};
use super::state::{Doc, Site};
use super::validation;
use super::webhooks::DocEvent;

/// What one request changed: the doc events, in order, for the webhook dispatcher.
#[derive(Debug, Default)]
pub struct Txn {
    pub events: Vec<DocEvent>,
}

impl Txn {
    pub fn emit(&mut self, doctype: &str, name: &str, event: &'static str, in_insert: bool) {
        self.events.push(DocEvent {
            doctype: doctype.to_string(),
            name: name.to_string(),
            event,
            in_insert,
            snapshot: None,
        });
    }
}

/// A successful write, with what the response shows besides the document.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub doctype: String,
    pub doc: Doc,
    /// Child rows answered with `"__unsaved": 1` (rows that came in the request).
    pub unsaved: Vec<(String, usize)>,
    /// `_server_messages` entries (the Customer rename note, ERPNext's alerts), dumped dicts.
    pub messages: Vec<String>,
    /// `__onload` passed through from the request (an invoice made by `make_sales_invoice`).
    pub onload: Option<Value>,
}

/// Frappe's `db_set`: change stored fields without validation, bump `modified`, and fire
/// `on_change` (which is how an invoice turns Paid).
pub fn db_set(
    site: &mut Site,
    txn: &mut Txn,
    doctype: &str,
    name: &str,
    change: impl FnOnce(&mut Doc),
) -> bool {
    let Some(mut doc) = site.get(doctype, name).cloned() else {
        return false;
    };
    change(&mut doc);
    let now = site.now();
    doc.insert("modified".into(), json!(now));
    let name = s(&doc, "name");
    site.put(doctype, doc);
    txn.emit(doctype, &name, "on_change", false);
    true
}

fn meta(site: &Site, doctype: &str) -> Result<DocTypeMeta, FrappeError> {
    site.reg
        .get(doctype)
        .cloned()
        .ok_or_else(|| FrappeError::not_found("DocType", doctype))
}

/// Copy the request's known fields into `doc` (coerced by field type; unknown fields are
/// ignored as Frappe does). Child tables are replaced by the given rows; a row whose `name`
/// matches an existing row updates it. Returns the rows that came in the request.
fn apply_input(
    site: &Site,
    meta: &DocTypeMeta,
    doc: &mut Doc,
    body: &Map<String, Value>,
) -> Vec<(String, usize)> {
    let mut unsaved = Vec::new();
    for (k, v) in body {
        if HEAD.contains(&k.as_str()) || k == "doctype" || k.starts_with("__") {
            continue;
        }
        if let Some(f) = meta.field(k) {
            doc.insert(k.clone(), f.coerce(v.clone()));
        } else if let Some(child) = meta.table(k) {
            let old_rows: Vec<Map<String, Value>> = doc
                .get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_object().cloned())
                .collect();
            let cmeta = site.reg.get(child);
            let mut rows = Vec::new();
            for (i, input) in v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .enumerate()
            {
                let existing = str_of(input, "name").and_then(|n| {
                    old_rows
                        .iter()
                        .find(|r| str_of(r, "name").as_deref() == Some(n.as_str()))
                });
                let mut row = existing.cloned().unwrap_or_else(|| site.blank_row(child));
                for (ck, cv) in input {
                    if ck.starts_with("__") {
                        continue;
                    }
                    match cmeta.and_then(|m| m.field(ck)) {
                        Some(cf) => {
                            row.insert(ck.clone(), cf.coerce(cv.clone()));
                        }
                        None if ck == "name" || cmeta.is_some_and(|m| m.open) => {
                            row.insert(ck.clone(), cv.clone());
                        }
                        None => {}
                    }
                }
                rows.push(Value::Object(row));
                unsaved.push((k.clone(), i));
            }
            doc.insert(k.clone(), Value::Array(rows));
        }
    }
    unsaved
}

/// Standard fields of child rows: name, timestamps, docstatus, idx and the parent pointers.
fn finalize_children(site: &mut Site, meta: &DocTypeMeta, doc: &mut Doc) {
    let parent = s(doc, "name");
    let creation = s(doc, "creation");
    let modified = s(doc, "modified");
    let docstatus = doc.get("docstatus").cloned().unwrap_or(json!(0));
    let user = site.config.user.clone();
    for (table, child) in &meta.tables {
        let Some(Value::Array(rows)) = doc.get_mut(table) else {
            continue;
        };
        for (i, row) in rows.iter_mut().enumerate() {
            let Some(row) = row.as_object_mut() else {
                continue;
            };
            if str_of(row, "name").is_none() {
                row.insert("name".into(), json!(site.hash_name()));
            }
            if str_of(row, "owner").is_none() {
                row.insert("owner".into(), json!(user));
            }
            if str_of(row, "creation").is_none() {
                row.insert("creation".into(), json!(creation));
            }
            row.insert("modified".into(), json!(modified));
            row.insert("modified_by".into(), json!(user));
            row.insert("docstatus".into(), docstatus.clone());
            row.insert("idx".into(), json!(i + 1));
            row.insert("parent".into(), json!(parent));
            row.insert("parentfield".into(), json!(table));
            row.insert("parenttype".into(), json!(meta.name));
            row.insert("doctype".into(), json!(child));
            row.retain(|k, _| !k.starts_with("__"));
        }
    }
}

fn set_docstatus(doc: &mut Doc, docstatus: i64) {
    doc.insert("docstatus".into(), json!(docstatus));
}

fn touch(site: &mut Site, doc: &mut Doc) {
    let now = site.now();
    doc.insert("modified".into(), json!(now));
    doc.insert("modified_by".into(), json!(site.config.user));
}

fn checks(site: &Site, doctype: &str, doc: &mut Doc) -> Result<(), FrappeError> {
    validation::null_empty_unique(site, doctype, doc);
    validation::mandatory(site, doctype, doc)?;
    validation::links(site, doctype, doc)?;
    validation::unique(site, doctype, doc)
}

/// `POST /api/resource/<DocType>` (`frappe.new_doc(doctype, **data).insert()`); a body with
/// `docstatus: 1` is inserted submitted.
pub fn insert(
    site: &mut Site,
    txn: &mut Txn,
    doctype: &str,
    body: &Map<String, Value>,
) -> Result<Outcome, FrappeError> {
    let meta = meta(site, doctype)?;
    if meta.is_child {
        return Err(FrappeError::validation(format!(
            "{doctype} is a child table and cannot be inserted on its own"
        )));
    }
    let mut doc = site.blank(doctype, "");
    if let Some(name) = str_of(body, "name") {
        doc.insert("name".into(), json!(name));
    }
    let unsaved = apply_input(site, &meta, &mut doc, body);
    // `set_new_name(set_child_names=True)`: rows of a new document get new names, whatever
    // the request says (an amendment sends the cancelled document's rows).
    for (table, _) in &meta.tables {
        if let Some(Value::Array(rows)) = doc.get_mut(table) {
            for row in rows.iter_mut().filter_map(Value::as_object_mut) {
                row.remove("name");
            }
        }
    }
    let submit = meta.submittable && body.get("docstatus").and_then(Value::as_i64) == Some(1);
    let sent_status = str_of(body, "status");
    let mut naming = controllers::autoname(site, doctype, &doc)?;
    if naming.name.trim().is_empty() {
        naming.name = site.hash_name();
    }
    doc.insert("name".into(), json!(naming.name));
    // `is_new()` for the controller, while it validates.
    doc.insert("__islocal".into(), json!(1));
    let validated = controllers::validate(site, doctype, &mut doc);
    doc.remove("__islocal");
    validated?;
    finalize_children(site, &meta, &mut doc);
    checks(site, doctype, &mut doc)?;
    // The primary key clash surfaces at `db_insert`, after every validation.
    if site.exists(doctype, &naming.name) {
        return Err(FrappeError::DuplicateEntry {
            message: format!("{doctype} {} already exists", naming.name),
        });
    }
    // `validate_amended_from` runs after `db_insert` (so the unique index has spoken first)
    // and rolls the insert back.
    if let Some(from) = str_of(&doc, "amended_from") {
        validation::amended_from(site, doctype, &from)?;
    }
    if submit {
        controllers::before_submit(site, doctype, &mut doc)?;
        if doctype == "Sales Order" {
            // `StatusUpdater.set_status` returns early for a new document: submitted on insert,
            // the order keeps the status it was sent with, "Draft" by default
            // (`live-findings/sales_order_insert_submitted_status_stays_draft.json`).
            doc.insert(
                "status".into(),
                json!(sent_status.unwrap_or_else(|| "Draft".into())),
            );
        }
        set_docstatus(&mut doc, 1);
        finalize_children(site, &meta, &mut doc);
    }
    if let Some(n) = naming.series {
        site.commit_series(&naming.name, n);
    }
    site.put(doctype, doc.clone());
    controllers::after_insert(site, doctype, &doc);
    txn.emit(doctype, &naming.name, "after_insert", true);
    txn.emit(doctype, &naming.name, "on_update", true);
    if submit {
        txn.emit(doctype, &naming.name, "on_submit", true);
        controllers::on_submit(site, txn, doctype, &doc);
    }
    let doc = site.get(doctype, &naming.name).cloned().unwrap_or(doc);
    let mut messages: Vec<String> = naming
        .note
        .as_deref()
        .map(note_message)
        .into_iter()
        .collect();
    messages.append(&mut site.message_log);
    Ok(Outcome {
        doctype: doctype.to_string(),
        doc,
        unsaved,
        messages,
        onload: body.get("__onload").cloned(),
    })
}

fn stale(site: &mut Site, old: &Doc, given: Option<String>) -> Result<(), FrappeError> {
    match given {
        Some(given) if given != s(old, "modified") => {
            let now = site.now();
            Err(FrappeError::TimestampMismatch {
                message: format!(
                    "Error: Document has been modified after you have opened it ({}, {now}). Please refresh to get the latest document.",
                    s(old, "modified")
                ),
            })
        }
        _ => Ok(()),
    }
}

/// `PUT /api/resource/<DocType>/<name>`: merge the fields, then save, submit
/// (`docstatus: 1`), cancel (`docstatus: 2`) or update after submit, by docstatus.
pub fn save(
    site: &mut Site,
    txn: &mut Txn,
    doctype: &str,
    name: &str,
    body: &Map<String, Value>,
) -> Result<Outcome, FrappeError> {
    let meta = meta(site, doctype)?;
    let old = site
        .get(doctype, name)
        .cloned()
        .ok_or_else(|| FrappeError::not_found(doctype, name))?;
    stale(site, &old, str_of(body, "modified"))?;
    let from = fl(&old, "docstatus") as i64;
    let to = body
        .get("docstatus")
        .and_then(Value::as_i64)
        .unwrap_or(from);
    match (from, to) {
        (0, 0) | (0, 1) => {
            let mut doc = old.clone();
            let unsaved = apply_input(site, &meta, &mut doc, body);
            if to == 1 {
                submit_doc(site, txn, &meta, doc, unsaved)
            } else {
                touch(site, &mut doc);
                controllers::validate(site, doctype, &mut doc)?;
                finalize_children(site, &meta, &mut doc);
                checks(site, doctype, &mut doc)?;
                validation::set_only_once(site, doctype, &old, &doc)?;
                site.put(doctype, doc.clone());
                controllers::on_update(site, doctype, &doc);
                txn.emit(doctype, &s(&doc, "name"), "on_update", false);
                txn.emit(doctype, &s(&doc, "name"), "on_change", false);
                let mut out = outcome(doctype, doc, unsaved);
                out.messages.append(&mut site.message_log);
                Ok(out)
            }
        }
        (1, 1) => update_after_submit(site, txn, &meta, old, body),
        (1, 2) => cancel(site, txn, doctype, name),
        (2, _) => Err(FrappeError::validation("Cannot edit cancelled document")),
        (from, to) => Err(FrappeError::DocstatusTransition {
            message: format!("Cannot change docstatus from {from} to {to}"),
        }),
    }
}

fn outcome(doctype: &str, doc: Doc, unsaved: Vec<(String, usize)>) -> Outcome {
    Outcome {
        doctype: doctype.to_string(),
        doc,
        unsaved,
        messages: Vec::new(),
        onload: None,
    }
}

fn submit_doc(
    site: &mut Site,
    txn: &mut Txn,
    meta: &DocTypeMeta,
    mut doc: Doc,
    unsaved: Vec<(String, usize)>,
) -> Result<Outcome, FrappeError> {
    let doctype = meta.name.as_str();
    if !meta.submittable {
        return Err(FrappeError::validation(format!(
            "{doctype} is not submittable"
        )));
    }
    touch(site, &mut doc);
    controllers::validate(site, doctype, &mut doc)?;
    finalize_children(site, meta, &mut doc);
    checks(site, doctype, &mut doc)?;
    controllers::before_submit(site, doctype, &mut doc)?;
    set_docstatus(&mut doc, 1);
    finalize_children(site, meta, &mut doc);
    let name = s(&doc, "name");
    site.put(doctype, doc.clone());
    controllers::on_submit(site, txn, doctype, &doc);
    txn.emit(doctype, &name, "on_update", false);
    txn.emit(doctype, &name, "on_submit", false);
    txn.emit(doctype, &name, "on_change", false);
    let doc = site.get(doctype, &name).cloned().unwrap_or(doc);
    let mut out = outcome(doctype, doc, unsaved);
    out.messages.append(&mut site.message_log);
    Ok(out)
}

/// `frappe.client.submit(doc)`: Frappe builds the document from the given dict (not from the
/// database), checks `modified` against the stored one and submits.
pub fn client_submit(
    site: &mut Site,
    txn: &mut Txn,
    body: &Map<String, Value>,
) -> Result<Outcome, FrappeError> {
    let doctype =
        str_of(body, "doctype").ok_or_else(|| FrappeError::validation("doctype is required"))?;
    let meta = meta(site, &doctype)?;
    let Some(name) = str_of(body, "name") else {
        let mut body = body.clone();
        body.insert("docstatus".into(), json!(1));
        return insert(site, txn, &doctype, &body);
    };
    let old = site
        .get(&doctype, &name)
        .cloned()
        .ok_or_else(|| FrappeError::not_found(&doctype, &name))?;
    stale(site, &old, Some(s(body, "modified")))?;
    // Rows the client sent still marked unsaved come back marked so.
    let unsaved: Vec<(String, usize)> = meta
        .tables
        .iter()
        .flat_map(|(t, _)| {
            body.get(t)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(_, r)| truthy(r.get("__unsaved")))
                .map(move |(i, _)| (t.clone(), i))
        })
        .collect();
    if fl(&old, "docstatus") as i64 != 0 {
        return update_after_submit(site, txn, &meta, old, body);
    }
    let mut doc = site.blank(&doctype, &name);
    for k in ["owner", "creation"] {
        if let Some(v) = old.get(k) {
            doc.insert(k.into(), v.clone());
        }
    }
    // Start from the stored rows so row names the client kept match.
    for (t, _) in &meta.tables {
        if let Some(v) = old.get(t) {
            doc.insert(t.clone(), v.clone());
        }
    }
    apply_input(site, &meta, &mut doc, body);
    let mut result = submit_doc(site, txn, &meta, doc, Vec::new())?;
    result.unsaved = unsaved;
    Ok(result)
}

fn update_after_submit(
    site: &mut Site,
    txn: &mut Txn,
    meta: &DocTypeMeta,
    old: Doc,
    body: &Map<String, Value>,
) -> Result<Outcome, FrappeError> {
    let doctype = meta.name.as_str();
    validation::update_after_submit(site, doctype, &old, body)?;
    let mut doc = old;
    apply_input(site, meta, &mut doc, body);
    touch(site, &mut doc);
    finalize_children(site, meta, &mut doc);
    let name = s(&doc, "name");
    site.put(doctype, doc.clone());
    txn.emit(doctype, &name, "before_update_after_submit", false);
    txn.emit(doctype, &name, "on_update_after_submit", false);
    txn.emit(doctype, &name, "on_change", false);
    Ok(outcome(doctype, doc, Vec::new()))
}

/// `frappe.client.cancel(doctype, name)` or `PUT {"docstatus": 2}`.
pub fn cancel(
    site: &mut Site,
    txn: &mut Txn,
    doctype: &str,
    name: &str,
) -> Result<Outcome, FrappeError> {
    let meta = meta(site, doctype)?;
    let mut doc = site
        .get(doctype, name)
        .cloned()
        .ok_or_else(|| FrappeError::not_found(doctype, name))?;
    let from = fl(&doc, "docstatus") as i64;
    if from != 1 {
        return Err(FrappeError::DocstatusTransition {
            message: format!("Cannot change docstatus from {from} to 2"),
        });
    }
    controllers::before_cancel_or_delete(site, doctype, &doc)?;
    set_docstatus(&mut doc, 2);
    if meta.field("status").is_some() {
        doc.insert("status".into(), json!("Cancelled"));
    }
    touch(site, &mut doc);
    finalize_children(site, &meta, &mut doc);
    let name = s(&doc, "name");
    site.put(doctype, doc.clone());
    controllers::on_cancel(site, txn, doctype, &doc);
    txn.emit(doctype, &name, "on_cancel", false);
    txn.emit(doctype, &name, "on_change", false);
    let doc = site.get(doctype, &name).cloned().unwrap_or(doc);
    Ok(outcome(doctype, doc, Vec::new()))
}

/// `DELETE /api/resource/<DocType>/<name>`.
pub fn delete(
    site: &mut Site,
    txn: &mut Txn,
    doctype: &str,
    name: &str,
) -> Result<(), FrappeError> {
    meta(site, doctype)?;
    let doc = site
        .get(doctype, name)
        .cloned()
        .ok_or_else(|| FrappeError::not_found(doctype, name))?;
    if fl(&doc, "docstatus") as i64 == 1 {
        return Err(FrappeError::validation(format!(
            "{doctype} {}: Submitted Record cannot be deleted. You must Cancel it first.",
            s(&doc, "name")
        )));
    }
    controllers::before_cancel_or_delete(site, doctype, &doc)?;
    site.remove(doctype, name);
    controllers::on_trash(site, doctype, &doc);
    txn.events.push(DocEvent {
        doctype: doctype.to_string(),
        name: s(&doc, "name"),
        event: "on_trash",
        in_insert: false,
        snapshot: Some(doc),
    });
    Ok(())
}
