//! Which of the fields lead2ledger owns differ between what ERPNext holds and what a command
//! wants. Steps write only those, so a replayed command is a read, not a write, and a field a
//! human filled in ERPNext that HubSpot knows nothing about is never cleared.
//!
//! Frappe normalises what it stores (`10` comes back as `10.0`, an unset Data field as `null` or
//! `""`, a Check as `0`/`1`), so comparison is by meaning, not by JSON equality.

use serde_json::{Map, Value};
use shared::erpnext::Doc;

/// Whether ERPNext's `existing` value already says what `desired` says.
pub fn same(existing: Option<&Value>, desired: &Value) -> bool {
    let existing = existing.unwrap_or(&Value::Null);
    match (existing, desired) {
        (a, b) if blank(a) && blank(b) => true,
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            _ => a == b,
        },
        (Value::Bool(a), Value::Number(n)) | (Value::Number(n), Value::Bool(a)) => {
            n.as_f64() == Some(f64::from(u8::from(*a)))
        }
        (Value::String(a), Value::String(b)) => a.trim() == b.trim(),
        (a, b) => a == b,
    }
}

fn blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// The subset of `desired` that differs from `existing`, ready to `PUT`.
pub fn changes(existing: &Doc, desired: &Map<String, Value>) -> Map<String, Value> {
    desired
        .iter()
        .filter(|(k, v)| !same(existing.get(k), v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Insert `value` under `key` when present; `None` means "HubSpot has nothing to say", not
/// "clear it".
pub fn put_opt(map: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
        map.insert(key.to_string(), Value::String(v.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(v: Value) -> Doc {
        match v {
            Value::Object(m) => Doc(m),
            _ => panic!("object"),
        }
    }

    #[test]
    fn comparison_follows_frappe_normalisation() {
        assert!(same(Some(&json!(10.0)), &json!(10)));
        assert!(same(Some(&json!(null)), &json!("")));
        assert!(same(None, &json!(null)));
        assert!(same(Some(&json!(1)), &json!(true)));
        assert!(same(Some(&json!("Globex ")), &json!("Globex")));
        assert!(!same(Some(&json!("Globex")), &json!("Globex Corp")));
        assert!(!same(Some(&json!(null)), &json!("x")));
    }

    #[test]
    fn only_differing_fields_are_written() {
        let existing = doc(
            json!({"name": "Globex", "website": "https://a", "territory": "United States", "tax_id": null}),
        );
        let desired = json!({"website": "https://b", "territory": "United States", "tax_id": ""});
        let Value::Object(desired) = desired else {
            unreachable!()
        };
        let c = changes(&existing, &desired);
        assert_eq!(Value::Object(c), json!({"website": "https://b"}));
    }
}
