//! Frappe's generic document checks, in the order `Document.insert`/`save` runs them after the
//! doctype's own `validate`: mandatory fields, Link targets, unique fields; and the
//! update-after-submit rule for documents that are already submitted.

use serde_json::{Map, Value};

use super::doctypes::{DocTypeMeta, HEAD, str_of};
use super::errors::FrappeError;
use super::state::{Doc, Site};

/// Frappe's `has_content`: `None`, `""` and whitespace are missing; `0` is content.
fn missing(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        _ => false,
    }
}

fn meta<'a>(site: &'a Site, doctype: &str) -> Result<&'a DocTypeMeta, FrappeError> {
    site.reg
        .get(doctype)
        .ok_or_else(|| FrappeError::not_found("DocType", doctype))
}

fn rows<'a>(doc: &'a Doc, table: &str) -> impl Iterator<Item = &'a Map<String, Value>> {
    doc.get(table)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// `_validate_mandatory`: the parent's reqd fields, then each child row's.
pub fn mandatory(site: &Site, doctype: &str, doc: &Doc) -> Result<(), FrappeError> {
    let meta = meta(site, doctype)?;
    let mut fields = Vec::new();
    let mut messages = Vec::new();
    for f in meta.fields.iter().filter(|f| f.reqd) {
        if missing(doc.get(&f.fieldname)) {
            fields.push(f.fieldname.clone());
            messages.push(format!("Error: Value missing for {doctype}: {}", f.label));
        }
    }
    for (table, child) in &meta.tables {
        let Some(cmeta) = site.reg.get(child) else {
            continue;
        };
        for (i, row) in rows(doc, table).enumerate() {
            let idx = row
                .get("idx")
                .and_then(Value::as_i64)
                .unwrap_or(i as i64 + 1);
            for f in cmeta.fields.iter().filter(|f| f.reqd) {
                if missing(row.get(&f.fieldname)) {
                    fields.push(f.fieldname.clone());
                    messages.push(format!(
                        "Error: <strong>{child}</strong> Row #{idx}: Value missing for: {}",
                        f.label
                    ));
                }
            }
        }
    }
    if fields.is_empty() {
        return Ok(());
    }
    Err(FrappeError::Mandatory {
        doctype: doctype.to_string(),
        name: str_of(doc, "name").unwrap_or_default(),
        missing: fields,
        messages,
    })
}

/// `_validate_links`: every Link (and Dynamic Link) value must name an existing document. Valid
/// values are normalised to the stored spelling, as MariaDB's case-insensitive lookup does.
pub fn links(site: &Site, doctype: &str, doc: &mut Doc) -> Result<(), FrappeError> {
    let meta = meta(site, doctype)?.clone();
    let mut invalid = Vec::new();
    check_links(site, &meta, doc, None, &mut invalid);
    for (table, child) in &meta.tables {
        let Some(cmeta) = site.reg.get(child).cloned() else {
            continue;
        };
        if let Some(Value::Array(rows)) = doc.get_mut(table) {
            for (i, row) in rows.iter_mut().enumerate() {
                if let Value::Object(row) = row {
                    let idx = row
                        .get("idx")
                        .and_then(Value::as_i64)
                        .unwrap_or(i as i64 + 1);
                    check_links(site, &cmeta, row, Some(idx), &mut invalid);
                }
            }
        }
    }
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(FrappeError::LinkValidation {
            message: format!("Could not find {}", invalid.join(", ")),
        })
    }
}

fn check_links(
    site: &Site,
    meta: &DocTypeMeta,
    doc: &mut Map<String, Value>,
    row: Option<i64>,
    invalid: &mut Vec<String>,
) {
    let prefix = row.map(|idx| format!("Row #{idx}: ")).unwrap_or_default();
    for f in &meta.fields {
        let Some(target) = &f.link else { continue };
        let Some(value) = str_of(doc, &f.fieldname) else {
            continue;
        };
        match site.canonical_name(target, &value) {
            Some(canonical) => {
                doc.insert(f.fieldname.clone(), Value::String(canonical));
            }
            None if target == "DocType" && site.reg.get(&value).is_some() => {}
            None => invalid.push(format!("{prefix}{}: {value}", f.label)),
        }
    }
    // Dynamic Link rows (Contact/Address `links`): the target doctype is in `link_doctype`.
    if meta.name == "Dynamic Link"
        && let (Some(dt), Some(name)) = (str_of(doc, "link_doctype"), str_of(doc, "link_name"))
    {
        if site.reg.get(&dt).is_none() {
            invalid.push(format!("{prefix}Link Document Type: {dt}"));
        } else if let Some(canonical) = site.canonical_name(&dt, &name) {
            doc.insert("link_name".into(), Value::String(canonical));
        } else {
            invalid.push(format!("{prefix}Link Name: {name}"));
        }
    }
}

/// An empty unique field is stored as NULL (`BaseDocument.get_valid_dict`), which the unique
/// index lets any number of documents share (a Contact without a HubSpot ID).
pub fn null_empty_unique(site: &Site, doctype: &str, doc: &mut Doc) {
    let Some(meta) = site.reg.get(doctype) else {
        return;
    };
    for f in meta.fields.iter().filter(|f| f.unique) {
        if doc
            .get(&f.fieldname)
            .and_then(Value::as_str)
            .is_some_and(|v| v.trim().is_empty())
        {
            doc.insert(f.fieldname.clone(), Value::Null);
        }
    }
}

/// A unique field already holding this value in another document → `UniqueValidationError`.
/// MariaDB's unique index is case-insensitive, so is this check.
pub fn unique(site: &Site, doctype: &str, doc: &Doc) -> Result<(), FrappeError> {
    let meta = meta(site, doctype)?;
    let own_name = str_of(doc, "name").unwrap_or_default();
    for f in meta.fields.iter().filter(|f| f.unique) {
        let Some(value) = str_of(doc, &f.fieldname) else {
            continue;
        };
        let lower = value.to_lowercase();
        let clash = site.all(doctype).any(|other| {
            str_of(other, "name").unwrap_or_default() != own_name
                && str_of(other, &f.fieldname).is_some_and(|v| v.to_lowercase() == lower)
        });
        if clash {
            return Err(FrappeError::UniqueValidation {
                doctype: doctype.to_string(),
                name: own_name,
                fieldname: f.fieldname.clone(),
                value,
                label: f.label.clone(),
            });
        }
    }
    Ok(())
}

/// Python's `str()` of a stored value, as the UpdateAfterSubmit message prints it.
fn py_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => super::pyjson::float_repr(n.as_f64().unwrap_or(0.0)),
        other => other.to_string(),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Null, Value::String(s)) | (Value::String(s), Value::Null) => s.is_empty(),
        _ => a == b,
    }
}

fn not_allowed(prefix: &str, label: &str, old: &Value, new: &Value) -> FrappeError {
    FrappeError::UpdateAfterSubmit {
        message: format!(
            "{prefix} Not allowed to change <strong>{label}</strong> after submission from <strong>{}</strong> to <strong>{}</strong>",
            py_str(old),
            py_str(new)
        ),
    }
}

/// PUT on a submitted document. Child rows are replaced by the given ones, so first every given
/// row must be complete (`MandatoryError`, as the capture shows for partial item rows), then no
/// field without `allow_on_submit` may change.
pub fn update_after_submit(
    site: &Site,
    doctype: &str,
    old: &Doc,
    body: &Map<String, Value>,
) -> Result<(), FrappeError> {
    let meta = meta(site, doctype)?;
    let mut fields = Vec::new();
    let mut messages = Vec::new();
    for (table, child) in &meta.tables {
        let Some(Value::Array(new_rows)) = body.get(table) else {
            continue;
        };
        let Some(cmeta) = site.reg.get(child) else {
            continue;
        };
        for (i, row) in new_rows.iter().enumerate() {
            let Some(row) = row.as_object() else { continue };
            let existing = str_of(row, "name").and_then(|n| {
                rows(old, table).find(|r| str_of(r, "name").as_deref() == Some(n.as_str()))
            });
            for f in cmeta.fields.iter().filter(|f| f.reqd) {
                let v = row
                    .get(&f.fieldname)
                    .or_else(|| existing.and_then(|e| e.get(&f.fieldname)));
                if missing(v) {
                    fields.push(f.fieldname.clone());
                    messages.push(format!(
                        "Error: <strong>{child}</strong> Row #{}: Value missing for: {}",
                        i + 1,
                        f.label
                    ));
                }
            }
        }
    }
    if !fields.is_empty() {
        return Err(FrappeError::Mandatory {
            doctype: doctype.to_string(),
            name: str_of(old, "name").unwrap_or_default(),
            missing: fields,
            messages,
        });
    }
    for (k, new) in body {
        if HEAD.contains(&k.as_str()) || k == "doctype" || k.starts_with("__") {
            continue;
        }
        if let Some(f) = meta.field(k) {
            let new = f.coerce(new.clone());
            let old_v = old.get(k).cloned().unwrap_or(Value::Null);
            if !f.allow_on_submit && !same(&old_v, &new) {
                return Err(not_allowed("", &f.label, &old_v, &new));
            }
        } else if let Some(child) = meta.table(k) {
            let Some(cmeta) = site.reg.get(child) else {
                continue;
            };
            let old_rows: Vec<&Map<String, Value>> = rows(old, k).collect();
            let new_rows: Vec<&Map<String, Value>> = new
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .collect();
            for (i, row) in new_rows.iter().enumerate() {
                let Some(existing) = str_of(row, "name").and_then(|n| {
                    old_rows
                        .iter()
                        .find(|r| str_of(r, "name").as_deref() == Some(n.as_str()))
                }) else {
                    return Err(FrappeError::UpdateAfterSubmit {
                        message: format!(
                            " Not allowed to change <strong>{}</strong> after submission",
                            meta.label(k)
                        ),
                    });
                };
                for (ck, cv) in row.iter() {
                    let Some(cf) = cmeta.field(ck) else { continue };
                    let cv = cf.coerce(cv.clone());
                    let old_v = existing.get(ck).cloned().unwrap_or(Value::Null);
                    if !cf.allow_on_submit && !same(&old_v, &cv) {
                        return Err(not_allowed(
                            &format!("Row #{}:", i + 1),
                            &cf.label,
                            &old_v,
                            &cv,
                        ));
                    }
                }
            }
            if new_rows.len() != old_rows.len() {
                return Err(FrappeError::UpdateAfterSubmit {
                    message: format!(
                        " Not allowed to change <strong>{}</strong> after submission",
                        meta.label(k)
                    ),
                });
            }
        }
    }
    Ok(())
}

/// `Document.validate_amended_from`: only a cancelled document can be amended.
pub fn amended_from(site: &Site, doctype: &str, from: &str) -> Result<(), FrappeError> {
    let cancelled = site
        .get(doctype, from)
        .and_then(|d| d.get("docstatus"))
        .and_then(Value::as_i64)
        == Some(2);
    if cancelled {
        return Ok(());
    }
    let slug = doctype.to_lowercase().replace(' ', "-");
    let link = format!(
        "<a href=\"http://{}/app/{slug}/{from}\">{from}</a>",
        site.config.site
    );
    Err(FrappeError::validation(format!(
        "{link} cannot be amended because it is not cancelled. Please cancel the document before creating an amendment."
    ))
    .titled("Amendment Not Allowed"))
}

/// `Document.validate_set_only_once`: a `set_only_once` field keeps its inserted value.
pub fn set_only_once(site: &Site, doctype: &str, old: &Doc, new: &Doc) -> Result<(), FrappeError> {
    let meta = meta(site, doctype)?;
    for f in meta.fields.iter().filter(|f| f.set_only_once) {
        let before = old.get(&f.fieldname).cloned().unwrap_or(Value::Null);
        let after = new.get(&f.fieldname).cloned().unwrap_or(Value::Null);
        if !same(&before, &after) {
            return Err(FrappeError::validation(format!(
                "Value cannot be changed for <strong>{}</strong>",
                f.label
            ))
            .raised_as("frappe.exceptions.CannotChangeConstantError"));
        }
    }
    Ok(())
}
