//! `GET /api/resource/<DocType>` list queries: `fields`, `filters`/`or_filters` (list, dict and
//! child-table forms), `order_by`, `limit_start`/`limit_page_length`.
//!
//! Comparisons behave like MariaDB under Frappe's `utf8mb4_unicode_ci` collation: strings compare
//! case-insensitively, and Frappe's `ifnull(field, '')` makes a missing value equal to `""`.
//! A column the doctype does not have is the database's error (500 `OperationalError`), which is
//! what a filter on a custom field that was never created gets.
//!
//! A child-table filter makes Frappe join the child table (one result row per matching child
//! row) and passes `order_by` to MariaDB unchanged, so an unqualified column that both tables
//! have (`creation`, `modified`, `name`, `idx`...) is MariaDB's error 1052, a 500
//! (`live-findings/address_list_by_linked_customer_order_by_creation_ambiguous.json`).

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

/// A column of the query: of the listed doctype (`table: None`) or of a joined child table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub table: Option<String>,
    pub field: String,
}

/// One entry of the select list and the key it has in each result row.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectItem {
    pub column: Column,
    pub key: String,
    /// Named with `as`: MariaDB resolves an `ORDER BY` name against aliases first.
    pub aliased: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub fields: Vec<SelectItem>,
    pub filters: Vec<Cond>,
    pub or_filters: Vec<Cond>,
    /// Child doctypes joined (`LEFT JOIN ... ON parenttype = <doctype> AND parent = name`), in
    /// the order Frappe adds them.
    pub joins: Vec<String>,
    /// (column, descending).
    pub order_by: Vec<(Column, bool)>,
    pub start: usize,
    /// 0 = all.
    pub page_length: usize,
}

fn unknown_column(column: &str, clause: &str) -> FrappeError {
    FrappeError::Operational {
        message: format!("(1054, \"Unknown column '{column}' in '{clause}'\")"),
    }
}

/// `` `tabCustomer`.`name` `` → (`Some("Customer")`, `name`); `name` → (`None`, `name`). A
/// qualifier that is not a `tab<DocType>` table is kept as given after `tab` is stripped.
fn split_column(raw: &str) -> (Option<String>, String) {
    let raw = raw.trim();
    match raw.rsplit_once('.') {
        Some((table, field)) => {
            let table = table.trim().replace('`', "");
            let table = table
                .strip_prefix("tab")
                .map(str::to_string)
                .unwrap_or(table);
            (Some(table), field.trim().replace('`', ""))
        }
        None => (None, raw.replace('`', "")),
    }
}

/// `` `tabCustomer`.`name` `` → `name`.
fn bare(column: &str) -> String {
    split_column(column).1
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

/// The columns of a table of the query.
fn has_column(site: &Site, meta: &DocTypeMeta, table: Option<&str>, field: &str) -> bool {
    match table {
        None => meta.is_column(field),
        Some(child) => site.reg.get(child).is_some_and(|m| m.is_column(field)),
    }
}

/// The select list. Frappe qualifies every plain field with the listed doctype's table once a
/// second table is joined (`set_field_tables`), so a field is never ambiguous; a field qualified
/// with a child table (`` `tabDynamic Link`.link_name ``) joins that table.
fn parse_fields(
    site: &Site,
    meta: &DocTypeMeta,
    raw: &str,
    joins: &mut Vec<String>,
) -> Result<Vec<SelectItem>, FrappeError> {
    let list = match parse_json_param(raw)? {
        Value::Array(a) => a,
        v => vec![v],
    };
    let mut parsed = Vec::new();
    for f in list {
        let Some(f) = f.as_str() else { continue };
        let (expr, alias) = match f.to_lowercase().find(" as ") {
            Some(pos) => (
                f[..pos].to_string(),
                Some(f[pos + 4..].trim().replace(['`', '\'', '"'], "")),
            ),
            None => (f.to_string(), None),
        };
        let (table, field) = split_column(&expr);
        let table = table.filter(|t| *t != meta.name);
        if let Some(t) = &table
            && !joins.contains(t)
        {
            joins.push(t.clone());
        }
        parsed.push((table, field, alias));
    }
    let joined = !joins.is_empty();
    let mut fields = Vec::new();
    for (table, field, alias) in parsed {
        if field == "*" {
            let columns: Vec<String> = match &table {
                None => HEAD
                    .iter()
                    .map(|h| h.to_string())
                    .chain(meta.fields.iter().map(|m| m.fieldname.clone()))
                    .collect(),
                Some(child) => site
                    .reg
                    .get(child)
                    .map(|m| {
                        HEAD.iter()
                            .map(|h| h.to_string())
                            .chain(m.fields.iter().map(|f| f.fieldname.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            for c in columns {
                fields.push(SelectItem {
                    column: Column {
                        table: table.clone(),
                        field: c.clone(),
                    },
                    key: c,
                    aliased: false,
                });
            }
            continue;
        }
        if !has_column(site, meta, table.as_deref(), &field) {
            let shown = match (&table, joined) {
                (Some(t), _) => format!("tab{t}.{field}"),
                (None, true) => format!("tab{}.{field}", meta.name),
                (None, false) => field.clone(),
            };
            return Err(unknown_column(&shown, "field list"));
        }
        fields.push(SelectItem {
            key: alias.clone().unwrap_or_else(|| field.clone()),
            aliased: alias.is_some(),
            column: Column { table, field },
        });
    }
    Ok(fields)
}

/// Frappe passes `order_by` to MariaDB as written (after `validate_order_by_and_group_by`), so
/// MariaDB resolves each name: a name of the select list first, then the columns of every
/// table of the query. An unqualified name that more than one table has is error 1052, which
/// is what a child-table filter (it joins the child table, whose standard columns `name`,
/// `creation`, `modified`, `idx`... every table has) does to `order_by=creation asc`.
fn parse_order_by(
    site: &Site,
    meta: &DocTypeMeta,
    raw: &str,
    fields: &[SelectItem],
    joins: &[String],
) -> Result<Vec<(Column, bool)>, FrappeError> {
    let illegal = raw
        .to_lowercase()
        .chars()
        .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || " -_,`'\".()".contains(c)));
    if illegal {
        return Err(FrappeError::validation("Illegal SQL Query"));
    }
    let mut terms = Vec::new();
    for part in raw.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let lower = part.to_lowercase();
        let (expr, desc) = if lower.ends_with(" desc") {
            (&part[..part.len() - 5], true)
        } else if lower.ends_with(" asc") {
            (&part[..part.len() - 4], false)
        } else {
            (part, false)
        };
        let expr = expr.trim();
        let (table, field) = split_column(expr);
        match table {
            Some(t) => {
                let table = (t != meta.name).then_some(t);
                let known = table.as_ref().is_none_or(|t| joins.contains(t));
                if !known && expr.starts_with("`tab") {
                    return Err(FrappeError::validation(format!(
                        "Please select atleast 1 column from {} to sort/group",
                        table.unwrap_or_default()
                    )));
                }
                if !known || !has_column(site, meta, table.as_deref(), &field) {
                    return Err(unknown_column(&expr.replace('`', ""), "order clause"));
                }
                terms.push((Column { table, field }, desc));
            }
            None => {
                let mut named: Vec<&Column> = fields
                    .iter()
                    .filter(|f| f.key.eq_ignore_ascii_case(&field))
                    .map(|f| &f.column)
                    .collect();
                named.dedup();
                if let [column] = named.as_slice() {
                    terms.push(((*column).clone(), desc));
                    continue;
                }
                let mut tables: Vec<Option<String>> = Vec::new();
                if meta.is_column(&field) {
                    tables.push(None);
                }
                for j in joins {
                    if has_column(site, meta, Some(j), &field) {
                        tables.push(Some(j.clone()));
                    }
                }
                if named.len() > 1 || tables.len() > 1 {
                    return Err(FrappeError::ambiguous_column(&field, "ORDER BY"));
                }
                match tables.pop() {
                    Some(table) => terms.push((Column { table, field }, desc)),
                    None => return Err(unknown_column(&field, "order clause")),
                }
            }
        }
    }
    Ok(terms)
}

pub fn parse(
    site: &Site,
    meta: &DocTypeMeta,
    params: &HashMap<String, String>,
) -> Result<ListQuery, FrappeError> {
    let filters = parse_conds(meta, site, params.get("filters"));
    let or_filters = parse_conds(meta, site, params.get("or_filters"));
    // Tables come from the filters and from qualified fields (`extract_tables`).
    let mut joins: Vec<String> = Vec::new();
    for c in filters
        .iter()
        .chain(or_filters.iter())
        .flatten()
        .filter_map(|c| c.child.as_ref())
    {
        if !joins.contains(c) {
            joins.push(c.clone());
        }
    }
    let raw_fields = params
        .get("fields")
        .map(String::as_str)
        .unwrap_or("[\"name\"]");
    // MariaDB checks the select list, then WHERE, then ORDER BY.
    let fields = parse_fields(site, meta, raw_fields, &mut joins)?;
    let (filters, or_filters) = (filters?, or_filters?);
    let order_by = match params.get("order_by").filter(|o| !o.trim().is_empty()) {
        Some(raw) => parse_order_by(site, meta, raw, &fields, &joins)?,
        // Frappe's default order is qualified (`` `tabX`.`modified` desc ``).
        None => vec![(
            Column {
                table: None,
                field: meta.sort.0.clone(),
            },
            meta.sort.1,
        )],
    };
    let number = |keys: &[&str], default: usize| {
        keys.iter()
            .find_map(|k| params.get(*k))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(default)
    };
    Ok(ListQuery {
        fields,
        filters,
        or_filters,
        joins,
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

/// The rows of `doc` the join condition of child doctype `child` matches: those of every table
/// field holding that doctype (the join is on `parenttype` and `parent`, not `parentfield`).
fn child_rows<'a>(meta: &DocTypeMeta, doc: &'a Doc, child: &str) -> Vec<&'a Map<String, Value>> {
    meta.tables
        .iter()
        .filter(|(_, c)| c == child)
        .flat_map(|(t, _)| doc.get(t).and_then(Value::as_array).into_iter().flatten())
        .filter_map(Value::as_object)
        .collect()
}

/// One row of the joined tables: the document and, per joined child doctype, one of its rows
/// (`None` where the LEFT JOIN found none).
struct Joined<'a> {
    doc: &'a Doc,
    children: Vec<Option<&'a Map<String, Value>>>,
}

impl Joined<'_> {
    fn value(&self, joins: &[String], table: Option<&str>, field: &str) -> Value {
        match table {
            None => field_value(self.doc, field),
            Some(t) => joins
                .iter()
                .position(|j| j == t)
                .and_then(|i| self.children.get(i).copied().flatten())
                .map(|row| field_value(row, field))
                .unwrap_or(Value::Null),
        }
    }

    fn holds(&self, joins: &[String], c: &Cond) -> bool {
        matches(
            &self.value(joins, c.child.as_deref(), &c.field),
            &c.op,
            &c.value,
        )
    }
}

/// Every combination of one row per joined child table, as MariaDB's LEFT JOINs produce them:
/// a document with two matching child rows is listed twice, as on a real site.
fn joined<'a>(meta: &DocTypeMeta, doc: &'a Doc, joins: &[String]) -> Vec<Joined<'a>> {
    let mut out = vec![Joined {
        doc,
        children: Vec::new(),
    }];
    for child in joins {
        let rows = child_rows(meta, doc, child);
        let options: Vec<Option<&Map<String, Value>>> = if rows.is_empty() {
            vec![None]
        } else {
            rows.into_iter().map(Some).collect()
        };
        out = out
            .into_iter()
            .flat_map(|j| {
                options.iter().map(move |o| {
                    let mut children = j.children.clone();
                    children.push(*o);
                    Joined {
                        doc: j.doc,
                        children,
                    }
                })
            })
            .collect();
    }
    out
}

pub fn run(site: &Site, meta: &DocTypeMeta, q: &ListQuery) -> Vec<ListRow> {
    let mut rows: Vec<Joined<'_>> = site
        .all(&meta.name)
        .flat_map(|d| joined(meta, d, &q.joins))
        .filter(|j| {
            q.filters.iter().all(|c| j.holds(&q.joins, c))
                && (q.or_filters.is_empty() || q.or_filters.iter().any(|c| j.holds(&q.joins, c)))
        })
        .collect();
    rows.sort_by(|a, b| {
        for (col, desc) in &q.order_by {
            let ord = compare(
                &a.value(&q.joins, col.table.as_deref(), &col.field),
                &b.value(&q.joins, col.table.as_deref(), &col.field),
            );
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        field_value(b.doc, "creation")
            .as_str()
            .cmp(&field_value(a.doc, "creation").as_str())
    });
    let take = if q.page_length == 0 {
        usize::MAX
    } else {
        q.page_length
    };
    rows.into_iter()
        .skip(q.start)
        .take(take)
        .map(|j| {
            ListRow(
                q.fields
                    .iter()
                    .map(|f| {
                        (
                            f.key.clone(),
                            j.value(&q.joins, f.column.table.as_deref(), &f.column.field),
                        )
                    })
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
