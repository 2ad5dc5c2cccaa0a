//! `GET /api/resource/<DocType>` list queries: `fields`, `filters`/`or_filters` (list, dict and
//! child-table forms), `order_by`, `limit_start`/`limit_page_length`.
//!
//! Comparisons behave like MariaDB under Frappe's `utf8mb4_unicode_ci` collation: strings compare
//! case-insensitively, and Frappe's `ifnull(field, '')` makes a missing value equal to `""`.
//! A column the doctype does not have is the database's error (500 `OperationalError`), which is
//! what a filter on a custom field that was never created gets.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value};

use super::doctypes::{DocTypeMeta, HEAD, ListRow};
use super::errors::FrappeError;
use super::state::{Doc, Site};

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Like,
    NotLike,
    In,
    NotIn,
    Gt,
    Lt,
    Ge,
    Le,
    Is,
    Between,
}

impl Op {
    fn parse(s: &str) -> Result<Self, FrappeError> {
        Ok(match s.trim().to_lowercase().as_str() {
            "=" | "==" => Op::Eq,
            "!=" | "<>" => Op::Ne,
            "like" => Op::Like,
            "not like" => Op::NotLike,
            "in" => Op::In,
            "not in" => Op::NotIn,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" | "=<" => Op::Le,
            "is" => Op::Is,
            "between" => Op::Between,
            other => {
                return Err(FrappeError::validation(format!(
                    "Operator must be one of =, !=, like, not like, in, not in, >, <, >=, <=, is, between (got {other})"
                )));
            }
        })
    }
}

/// One condition; `child` names the child doctype of a `[ChildDocType, field, op, value]` filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub child: Option<String>,
    pub field: String,
    pub op: Op,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// (column, output key).
    pub fields: Vec<(String, String)>,
    pub filters: Vec<Cond>,
    pub or_filters: Vec<Cond>,
    /// (column, descending).
    pub order_by: Vec<(String, bool)>,
    pub start: usize,
    /// 0 = all.
    pub page_length: usize,
}

fn unknown_column(column: &str, clause: &str) -> FrappeError {
    FrappeError::Operational {
        message: format!("(1054, \"Unknown column '{column}' in '{clause}'\")"),
    }
}

/// `` `tabCustomer`.`name` `` → `name`.
fn bare(column: &str) -> String {
    let c = column.trim().replace('`', "");
    match c.rsplit_once('.') {
        Some((_, f)) => f.trim().to_string(),
        None => c.trim().to_string(),
    }
}

fn parse_json_param(raw: &str) -> Result<Value, FrappeError> {
    serde_json::from_str(raw).or_else(|_| {
        // Frappe accepts a bare field name for `fields` as well.
        Ok(Value::String(raw.to_string()))
    })
}

fn parse_conds(
    meta: &DocTypeMeta,
    site: &Site,
    raw: Option<&String>,
) -> Result<Vec<Cond>, FrappeError> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let value = serde_json::from_str::<Value>(raw).map_err(|e| FrappeError::JsonDecode {
        message: format!("{e}"),
    })?;
    let mut out = Vec::new();
    match value {
        Value::Object(map) => {
            for (field, v) in map {
                out.push(match v {
                    Value::Array(pair) if pair.len() == 2 && pair[0].is_string() => Cond {
                        child: None,
                        field,
                        op: Op::parse(pair[0].as_str().unwrap_or("="))?,
                        value: pair[1].clone(),
                    },
                    v => Cond {
                        child: None,
                        field,
                        op: Op::Eq,
                        value: v,
                    },
                });
            }
        }
        Value::Array(items) => {
            let items = if items.first().is_some_and(|f| !f.is_array()) {
                vec![Value::Array(items)]
            } else {
                items
            };
            for item in items {
                let Value::Array(parts) = item else {
                    return Err(FrappeError::validation("Filter must be a list"));
                };
                let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_default();
                let cond = match parts.len() {
                    3 => Cond {
                        child: None,
                        field: text(&parts[0]),
                        op: Op::parse(&text(&parts[1]))?,
                        value: parts[2].clone(),
                    },
                    4 => {
                        let dt = text(&parts[0]);
                        let child = (dt != meta.name).then_some(dt);
                        Cond {
                            child,
                            field: text(&parts[1]),
                            op: Op::parse(&text(&parts[2]))?,
                            value: parts[3].clone(),
                        }
                    }
                    2 => Cond {
                        child: None,
                        field: text(&parts[0]),
                        op: Op::Eq,
                        value: parts[1].clone(),
                    },
                    _ => return Err(FrappeError::validation("Filter must have 3 or 4 elements")),
                };
                out.push(cond);
            }
        }
        _ => return Err(FrappeError::validation("Filters must be a list or a dict")),
    }
    for c in out.iter_mut() {
        c.field = bare(&c.field);
        let column_ok = match &c.child {
            None => meta.is_column(&c.field),
            Some(child) => site.reg.get(child).is_some_and(|m| m.is_column(&c.field)),
        };
        if !column_ok {
            let table = c.child.clone().unwrap_or_else(|| meta.name.clone());
            return Err(unknown_column(
                &format!("tab{table}.{}", c.field),
                "where clause",
            ));
        }
    }
    Ok(out)
}

pub fn parse(
    site: &Site,
    meta: &DocTypeMeta,
    params: &HashMap<String, String>,
) -> Result<ListQuery, FrappeError> {
    let mut fields = Vec::new();
    let raw_fields = params
        .get("fields")
        .map(String::as_str)
        .unwrap_or("[\"name\"]");
    let list = match parse_json_param(raw_fields)? {
        Value::Array(a) => a,
        v => vec![v],
    };
    for f in list {
        let Some(f) = f.as_str() else { continue };
        if f.trim() == "*" {
            for h in HEAD {
                fields.push((h.to_string(), h.to_string()));
            }
            for m in &meta.fields {
                fields.push((m.fieldname.clone(), m.fieldname.clone()));
            }
            continue;
        }
        let (column, alias) = match f.to_lowercase().find(" as ") {
            Some(pos) => (bare(&f[..pos]), f[pos + 4..].trim().replace('`', "")),
            None => (bare(f), bare(f)),
        };
        if !meta.is_column(&column) {
            return Err(unknown_column(&column, "field list"));
        }
        fields.push((column, alias));
    }
    let mut order_by = Vec::new();
    match params.get("order_by").filter(|o| !o.trim().is_empty()) {
        Some(raw) => {
            for part in raw.split(',') {
                let mut words = part.split_whitespace();
                let Some(col) = words.next() else { continue };
                let col = bare(col);
                if !meta.is_column(&col) {
                    return Err(unknown_column(&col, "order clause"));
                }
                let desc = words.next().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
                order_by.push((col, desc));
            }
        }
        None => order_by.push(meta.sort.clone()),
    }
    let number = |keys: &[&str], default: usize| {
        keys.iter()
            .find_map(|k| params.get(*k))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(default)
    };
    Ok(ListQuery {
        fields,
        filters: parse_conds(meta, site, params.get("filters"))?,
        or_filters: parse_conds(meta, site, params.get("or_filters"))?,
        order_by,
        start: number(&["limit_start", "start"], 0),
        page_length: number(&["limit_page_length", "page_length", "limit"], 20),
    })
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.to_lowercase(),
        other => other.to_string().to_lowercase(),
    }
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => match (as_number(a), as_number(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => as_text(a).cmp(&as_text(b)),
        },
        _ => as_text(a).cmp(&as_text(b)),
    }
}

/// SQL LIKE with `%` and `_`, case-insensitive.
fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    fn go(t: &[char], p: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('%') => (0..=t.len()).any(|i| go(&t[i..], &p[1..])),
            Some('_') => !t.is_empty() && go(&t[1..], &p[1..]),
            Some(c) => t.first() == Some(c) && go(&t[1..], &p[1..]),
        }
    }
    go(&t, &p)
}

fn list_of(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::String(s) => s
            .split(',')
            .map(|x| Value::String(x.trim().to_string()))
            .collect(),
        other => vec![other.clone()],
    }
}

fn matches(actual: &Value, op: &Op, target: &Value) -> bool {
    let empty = |v: &Value| v.is_null() || v.as_str().is_some_and(|s| s.is_empty());
    match op {
        Op::Eq => compare(actual, target) == Ordering::Equal,
        Op::Ne => compare(actual, target) != Ordering::Equal,
        Op::Like => like(&as_text(actual), &as_text(target)),
        Op::NotLike => !like(&as_text(actual), &as_text(target)),
        Op::In => list_of(target)
            .iter()
            .any(|t| compare(actual, t) == Ordering::Equal),
        Op::NotIn => !list_of(target)
            .iter()
            .any(|t| compare(actual, t) == Ordering::Equal),
        Op::Gt => !actual.is_null() && compare(actual, target) == Ordering::Greater,
        Op::Lt => !actual.is_null() && compare(actual, target) == Ordering::Less,
        Op::Ge => !actual.is_null() && compare(actual, target) != Ordering::Less,
        Op::Le => !actual.is_null() && compare(actual, target) != Ordering::Greater,
        Op::Is => {
            let set = !empty(actual);
            match as_text(target).as_str() {
                "set" => set,
                "not set" => !set,
                _ => false,
            }
        }
        Op::Between => match list_of(target).as_slice() {
            [lo, hi] => {
                compare(actual, lo) != Ordering::Less && compare(actual, hi) != Ordering::Greater
            }
            _ => false,
        },
    }
}

fn field_value(doc: &Map<String, Value>, field: &str) -> Value {
    doc.get(field).cloned().unwrap_or(Value::Null)
}

fn child_rows<'a>(meta: &DocTypeMeta, doc: &'a Doc, child: &str) -> Vec<&'a Map<String, Value>> {
    meta.tables
        .iter()
        .filter(|(_, c)| c == child)
        .flat_map(|(t, _)| doc.get(t).and_then(Value::as_array).into_iter().flatten())
        .filter_map(Value::as_object)
        .collect()
}

/// All conditions hold; child-table conditions of one child doctype must hold on the same row
/// (Frappe joins the child table once).
fn all_hold(meta: &DocTypeMeta, doc: &Doc, conds: &[Cond]) -> bool {
    let (own, child): (Vec<&Cond>, Vec<&Cond>) = conds.iter().partition(|c| c.child.is_none());
    if !own
        .iter()
        .all(|c| matches(&field_value(doc, &c.field), &c.op, &c.value))
    {
        return false;
    }
    let mut children: Vec<&str> = child.iter().filter_map(|c| c.child.as_deref()).collect();
    children.sort();
    children.dedup();
    children.iter().all(|dt| {
        let conds: Vec<&&Cond> = child
            .iter()
            .filter(|c| c.child.as_deref() == Some(*dt))
            .collect();
        child_rows(meta, doc, dt).iter().any(|row| {
            conds
                .iter()
                .all(|c| matches(&field_value(row, &c.field), &c.op, &c.value))
        })
    })
}

fn any_holds(meta: &DocTypeMeta, doc: &Doc, conds: &[Cond]) -> bool {
    conds.is_empty()
        || conds
            .iter()
            .any(|c| all_hold(meta, doc, std::slice::from_ref(c)))
}

pub fn run(site: &Site, meta: &DocTypeMeta, q: &ListQuery) -> Vec<ListRow> {
    let mut docs: Vec<&Doc> = site
        .all(&meta.name)
        .filter(|d| all_hold(meta, d, &q.filters) && any_holds(meta, d, &q.or_filters))
        .collect();
    docs.sort_by(|a, b| {
        for (col, desc) in &q.order_by {
            let ord = compare(&field_value(a, col), &field_value(b, col));
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        field_value(b, "creation")
            .as_str()
            .cmp(&field_value(a, "creation").as_str())
    });
    let take = if q.page_length == 0 {
        usize::MAX
    } else {
        q.page_length
    };
    docs.into_iter()
        .skip(q.start)
        .take(take)
        .map(|d| {
            ListRow(
                q.fields
                    .iter()
                    .map(|(col, alias)| (alias.clone(), field_value(d, col)))
                    .collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_and_case_insensitive_equality() {
        assert!(like("sku-widget", "SKU-%"));
        assert!(like("abc", "a_c"));
        assert!(!like("abd", "a_c"));
        assert!(matches(
            &Value::from("Globex Corporation"),
            &Op::Eq,
            &Value::from("globex corporation")
        ));
        assert!(matches(&Value::Null, &Op::Is, &Value::from("not set")));
        assert!(matches(&Value::from(850.0), &Op::Ge, &Value::from("850")));
        assert!(matches(&Value::from("b"), &Op::In, &Value::from("a, b")));
    }
}
