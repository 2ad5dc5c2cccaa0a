//! What can go wrong talking to ERPNext, and what each failure means for the caller (DESIGN §4).
//!
//! Frappe's error vocabulary is its `exc_type`, not the HTTP status: a unique conflict is a 417
//! (not 409), an unknown Item inside a Sales Order is a 404, an empty items list is a 500 that
//! is our bug, not theirs. So [`classify`] looks at `exc_type` first and only then at the status
//! (`contracts/erpnext/README.md`, "Error shapes"). Every error keeps the server's own message,
//! HTML stripped, because that is what an operator reads in the dead letter's `x-l2l-error`.
//!
//! What this module does not decide: what a duplicate means for a step (the caller looks the
//! record up by its unique field and carries on), or how a class becomes an AMQP action (the
//! consumer runtime does that from the handler's answer).

use std::time::Duration;

use serde_json::Value;

/// What a failed call means for whoever made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// A unique field already holds this key (417 `UniqueValidationError`): the record exists;
    /// look it up by that field and continue.
    Duplicate,
    /// Trying again later may succeed: connect errors, timeouts, 429, 5xx with an unknown
    /// `exc_type`, `TimestampMismatchError`, deadlocks.
    Transient,
    /// The request itself is wrong (validation, unknown link, our own malformed body): a human
    /// must act, retrying changes nothing.
    Permanent,
    /// Wrong or missing credentials, or the API user lacks a role (401/403): permanent for the
    /// message, and a reason for `/readyz` to say the writer is not ready.
    Configuration,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Duplicate => "duplicate",
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Configuration => "configuration",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ErpNextError {
    /// ERPNext answered with an error status.
    #[error("ERPNext {operation} {doctype}: HTTP {status}{}: {message}", exc_type.as_ref().map(|t| format!(" {t}")).unwrap_or_default())]
    Api {
        operation: &'static str,
        doctype: String,
        status: u16,
        exc_type: Option<String>,
        /// The server's own words (`_server_messages`, else `_error_message`, else `exception`),
        /// HTML stripped.
        message: String,
        /// From `Retry-After` on a 429/503.
        retry_after: Option<Duration>,
    },
    #[error("ERPNext {operation} {doctype}: no answer within {timeout:?}")]
    Timeout {
        operation: &'static str,
        doctype: String,
        timeout: Duration,
    },
    #[error("ERPNext {operation} {doctype}: cannot reach the server: {reason}")]
    Connect {
        operation: &'static str,
        doctype: String,
        reason: String,
    },
    /// A 2xx whose body is not what Frappe sends: a proxy page, a truncated body.
    #[error("ERPNext {operation} {doctype}: unexpected response: {reason}")]
    Decode {
        operation: &'static str,
        doctype: String,
        reason: String,
    },
    /// The client could not be built (bad base URL, missing credentials).
    #[error("ERPNext client configuration: {0}")]
    Setup(String),
}

impl ErpNextError {
    /// The one classification every caller acts on.
    pub fn class(&self) -> ErrorClass {
        match self {
            ErpNextError::Api {
                status,
                exc_type,
                message,
                ..
            } => classify(*status, exc_type.as_deref(), message),
            ErpNextError::Timeout { .. } | ErpNextError::Connect { .. } => ErrorClass::Transient,
            // A body we cannot read after a 2xx: the write may have happened; the caller's
            // lookup-before-create makes a retry safe, and a proxy hiccup is the likely cause.
            ErpNextError::Decode { .. } => ErrorClass::Transient,
            ErpNextError::Setup(_) => ErrorClass::Configuration,
        }
    }

    pub fn is_duplicate(&self) -> bool {
        self.class() == ErrorClass::Duplicate
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ErpNextError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn exc_type(&self) -> Option<&str> {
        match self {
            ErpNextError::Api { exc_type, .. } => exc_type.as_deref(),
            _ => None,
        }
    }

    /// The server's message when it sent one, else this error's description.
    pub fn server_message(&self) -> String {
        match self {
            ErpNextError::Api { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ErpNextError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// `exc_type`s that are never worth retrying whatever the status: validation of the document,
/// and our own malformed requests (Frappe answers those with a 500).
const PERMANENT_EXC_TYPES: &[&str] = &[
    "MandatoryError",
    "ValidationError",
    "LinkValidationError",
    "UpdateAfterSubmitError",
    "DoesNotExistError",
    "TypeError",
    "JSONDecodeError",
    "ValueError",
    "KeyError",
    "AttributeError",
    "CharacterLengthExceededError",
    "InvalidStatusError",
    "CannotChangeConstantError",
    "DocstatusTransitionError",
    "LinkExistsError",
    "DataError",
    "InvalidEmailAddressError",
    "InvalidPhoneNumberError",
    "NameError",
];

/// `exc_type`s that say "the same request later may work".
const TRANSIENT_EXC_TYPES: &[&str] = &[
    "TimestampMismatchError",
    "QueryDeadlockError",
    "QueryTimeoutError",
    "DocumentLockedError",
    "TooManyRequestsError",
    "RateLimitExceededError",
];

/// MariaDB errors that mean the query itself is wrong (a bug in the request or on the server),
/// so the same request fails the same way every time: 1052 ambiguous column (an unqualified sort
/// key next to a child-table filter), 1054 unknown column, 1064 syntax, 1146 no such table.
const SQL_PROGRAMMING_ERRORS: &[u32] = &[1052, 1054, 1064, 1146];

/// The MariaDB error code at the start of a pymysql message: `(1052, "Column …")` → 1052.
fn sql_error_code(message: &str) -> Option<u32> {
    let rest = message.trim_start().strip_prefix('(')?;
    rest.split(',').next()?.trim().parse().ok()
}

/// Classify one error response: `exc_type` first (with `message` where the type alone does not
/// tell), then the status (DESIGN §4).
pub fn classify(status: u16, exc_type: Option<&str>, message: &str) -> ErrorClass {
    match exc_type {
        // pymysql's errors reach the client as a bare 500. A wrong query is not worth the 36
        // minutes of the retry ladder; a lock wait, a lost connection or a restart is.
        Some("ProgrammingError") => return ErrorClass::Permanent,
        Some("OperationalError") => {
            return match sql_error_code(message) {
                Some(code) if SQL_PROGRAMMING_ERRORS.contains(&code) => ErrorClass::Permanent,
                _ => ErrorClass::Transient,
            };
        }
        Some("UniqueValidationError" | "DuplicateEntryError") => return ErrorClass::Duplicate,
        Some("AuthenticationError" | "PermissionError" | "SessionExpired" | "CSRFTokenError") => {
            return ErrorClass::Configuration;
        }
        Some(t) if TRANSIENT_EXC_TYPES.contains(&t) => return ErrorClass::Transient,
        Some(t) if PERMANENT_EXC_TYPES.contains(&t) => return ErrorClass::Permanent,
        _ => {}
    }
    match status {
        401 | 403 => ErrorClass::Configuration,
        408 | 425 | 429 => ErrorClass::Transient,
        409 => ErrorClass::Duplicate,
        400..=499 => ErrorClass::Permanent,
        // A 5xx with no or an unknown exc_type: the server (or a proxy before it) is unwell.
        _ => ErrorClass::Transient,
    }
}

/// The parts of a Frappe error body an operator needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrappeError {
    pub exc_type: Option<String>,
    pub message: Option<String>,
}

/// Read `exc_type` and the human message out of a Frappe error body.
///
/// `_server_messages` is a JSON string holding a list of JSON strings, each an object with a
/// `message` (possibly HTML). Fallbacks, in order: `_error_message`, `exception` (without its
/// `frappe.exceptions.X: ` prefix), `message` as a plain string.
pub fn parse_error_body(body: &[u8]) -> FrappeError {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = strip_html(text.trim());
        return FrappeError {
            exc_type: None,
            message: (!text.is_empty()).then(|| truncate_chars(&text, 300)),
        };
    };
    let exc_type = v
        .get("exc_type")
        .and_then(Value::as_str)
        .map(str::to_string);
    let message = server_messages(&v)
        .or_else(|| {
            v.get("_error_message")
                .and_then(Value::as_str)
                .map(strip_html)
                .filter(|s| !s.is_empty())
        })
        .or_else(|| {
            v.get("exception").and_then(Value::as_str).map(|e| {
                // "frappe.exceptions.UniqueValidationError: ('Customer', …)" → after the type.
                let e = e.trim();
                match e.split_once(": ") {
                    Some((head, rest)) if !head.contains(' ') => strip_html(rest),
                    _ => strip_html(e),
                }
            })
        })
        .or_else(|| v.get("message").and_then(Value::as_str).map(strip_html));
    FrappeError { exc_type, message }
}

/// The `message`s of `_server_messages`, joined with "; ". `None` when absent or empty.
pub fn server_messages(body: &Value) -> Option<String> {
    let raw = body.get("_server_messages")?.as_str()?;
    let list: Vec<Value> = serde_json::from_str(raw).ok()?;
    let messages: Vec<String> =
        list.iter()
            .filter_map(|item| {
                // Each entry is itself a JSON string; be lenient about an already-decoded object.
                let obj = match item {
                    Value::String(s) => serde_json::from_str::<Value>(s)
                        .unwrap_or_else(|_| Value::String(s.clone())),
                    other => other.clone(),
                };
                match &obj {
                    Value::Object(_) => obj.get("message").and_then(Value::as_str).map(strip_html),
                    Value::String(s) => Some(strip_html(s)),
                    _ => None,
                }
            })
            .filter(|m| !m.is_empty())
            .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

/// Remove tags (`<strong>`, `<br>`), decode the few entities Frappe uses, squeeze whitespace.
pub fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let squeezed: Vec<&str> = out.split_whitespace().collect();
    squeezed
        .join(" ")
        .replace(" .", ".")
        .replace(" ,", ",")
        .replace(" :", ":")
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn contract(name: &str) -> (u16, Vec<u8>) {
        let p = crate::contracts::path("erpnext").join(name);
        let raw = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let v: Value = serde_json::from_str(&raw).expect("contract json");
        let status = v["response"]["status"].as_u64().expect("status") as u16;
        let body = serde_json::to_vec(&v["response"]["body"]).expect("body");
        (status, body)
    }

    fn class_of(name: &str) -> (ErrorClass, FrappeError) {
        let (status, body) = contract(name);
        let parsed = parse_error_body(&body);
        let message = parsed.message.clone().unwrap_or_default();
        (
            classify(status, parsed.exc_type.as_deref(), &message),
            parsed,
        )
    }

    #[test]
    fn captured_errors_classify_as_design_says() {
        let cases = [
            (
                "customer_create_duplicate_hubspot_company_id.json",
                ErrorClass::Duplicate,
            ),
            (
                "sales_order_create_duplicate_hubspot_deal_id.json",
                ErrorClass::Duplicate,
            ),
            (
                "sales_order_create_unknown_item.json",
                ErrorClass::Permanent,
            ),
            (
                "sales_order_create_unknown_customer.json",
                ErrorClass::Permanent,
            ),
            ("customer_get_not_found.json", ErrorClass::Permanent),
            (
                "address_create_missing_required.json",
                ErrorClass::Permanent,
            ),
            (
                "sales_order_create_missing_delivery_date.json",
                ErrorClass::Permanent,
            ),
            ("customer_create_invalid_link.json", ErrorClass::Permanent),
            (
                "sales_order_update_after_submit_error.json",
                ErrorClass::Permanent,
            ),
            ("sales_order_create_no_items.json", ErrorClass::Permanent),
            ("malformed_json_body.json", ErrorClass::Permanent),
            (
                "sales_order_submit_frappe_client_submit_stale_doc.json",
                ErrorClass::Transient,
            ),
            ("auth_bad_token.json", ErrorClass::Configuration),
            ("auth_missing.json", ErrorClass::Configuration),
            (
                "item_price_list_permission_denied.json",
                ErrorClass::Configuration,
            ),
            ("method_not_found.json", ErrorClass::Permanent),
            // Real ERPNext's answer to an unqualified sort key beside a child-table filter.
            (
                "live-findings/address_list_by_linked_customer_order_by_creation_ambiguous.json",
                ErrorClass::Permanent,
            ),
        ];
        for (file, want) in cases {
            let (got, parsed) = class_of(file);
            assert_eq!(got, want, "{file}: {parsed:?}");
        }
    }

    #[test]
    fn sql_errors_are_permanent_only_when_the_query_is_wrong() {
        let op = Some("OperationalError");
        assert_eq!(
            classify(
                500,
                op,
                "(1052, \"Column 'creation' in ORDER BY is ambiguous\")"
            ),
            ErrorClass::Permanent
        );
        assert_eq!(
            classify(500, op, "(1054, \"Unknown column 'x' in 'field list'\")"),
            ErrorClass::Permanent
        );
        assert_eq!(
            classify(500, op, "(1205, 'Lock wait timeout exceeded')"),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(
                500,
                op,
                "(2013, 'Lost connection to MySQL server during query')"
            ),
            ErrorClass::Transient
        );
        assert_eq!(classify(500, op, "no code"), ErrorClass::Transient);
        assert_eq!(
            classify(
                500,
                Some("ProgrammingError"),
                "(1064, 'You have an error in your SQL syntax')"
            ),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn status_decides_when_exc_type_is_unknown() {
        assert_eq!(classify(500, None, ""), ErrorClass::Transient);
        assert_eq!(
            classify(502, Some("SomethingNew"), ""),
            ErrorClass::Transient
        );
        assert_eq!(classify(503, None, ""), ErrorClass::Transient);
        assert_eq!(classify(429, None, ""), ErrorClass::Transient);
        assert_eq!(
            classify(417, Some("SomethingNew"), ""),
            ErrorClass::Permanent
        );
        assert_eq!(classify(404, None, ""), ErrorClass::Permanent);
        assert_eq!(classify(401, None, ""), ErrorClass::Configuration);
        assert_eq!(classify(403, None, ""), ErrorClass::Configuration);
        // exc_type wins over the status.
        assert_eq!(classify(500, Some("TypeError"), ""), ErrorClass::Permanent);
        assert_eq!(
            classify(417, Some("TimestampMismatchError"), ""),
            ErrorClass::Transient
        );
    }

    #[test]
    fn server_messages_are_unwrapped_and_stripped() {
        let (_, parsed) = class_of("customer_create_duplicate_hubspot_company_id.json");
        assert_eq!(parsed.exc_type.as_deref(), Some("UniqueValidationError"));
        assert_eq!(
            parsed.message.as_deref(),
            Some("HubSpot Company ID must be unique")
        );

        let (_, parsed) = class_of("sales_order_create_unknown_item.json");
        assert_eq!(
            parsed.message.as_deref(),
            Some("Item SKU-DOES-NOT-EXIST not found")
        );

        let (_, parsed) = class_of("auth_missing.json");
        let m = parsed.message.expect("message");
        assert!(!m.contains('<'), "{m}");
        assert!(m.contains("User Guest does not have doctype access"), "{m}");

        // No _server_messages: the exception text, without the exception class prefix.
        let (_, parsed) = class_of("sales_order_create_no_items.json");
        assert_eq!(parsed.exc_type.as_deref(), Some("TypeError"));
        assert!(
            parsed
                .message
                .expect("message")
                .contains("unsupported operand")
        );
    }

    #[test]
    fn non_json_bodies_still_give_a_message() {
        let parsed = parse_error_body(b"<html><body><h1>502 Bad Gateway</h1></body></html>");
        assert_eq!(parsed.exc_type, None);
        assert_eq!(parsed.message.as_deref(), Some("502 Bad Gateway"));
        assert_eq!(parse_error_body(b"").message, None);
    }

    #[test]
    fn html_is_stripped() {
        assert_eq!(
            strip_html("Row #1: Item <strong>W-9</strong> not found<br>"),
            "Row #1: Item W-9 not found"
        );
        assert_eq!(strip_html("a &amp; b"), "a & b");
    }

    #[test]
    fn api_errors_keep_the_server_message() {
        let e = ErpNextError::Api {
            operation: "insert",
            doctype: "Sales Order".into(),
            status: 404,
            exc_type: Some("DoesNotExistError".into()),
            message: "Item W-9 not found".into(),
            retry_after: None,
        };
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert_eq!(e.server_message(), "Item W-9 not found");
        assert_eq!(
            e.to_string(),
            "ERPNext insert Sales Order: HTTP 404 DoesNotExistError: Item W-9 not found"
        );
    }
}
