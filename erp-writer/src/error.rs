//! Why a step failed, in words an operator can act on, and the one mapping from a step failure
//! to the runtime's [`HandlerError`] (STYLE "Errors": a tested `classify`, not scattered `if`s).
//!
//! Duplicates never reach here: a step that hits a unique conflict looks the record up and
//! carries on. What does reach here is either worth retrying (ERPNext busy or unreachable) or
//! needs a human (a mapping gap, a validation error, wrong credentials), and then the message
//! names the record, the reason Frappe gave, and the fix when we know it.

use shared::commands::ErpOutcome;
use shared::erpnext::{ErpNextError, ErrorClass};
use shared::runtime::HandlerError;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// ERPNext refused or failed a call made for `what` ("Customer for HubSpot company 42").
    #[error("{what}: {source}")]
    Erp {
        what: String,
        #[source]
        source: ErpNextError,
    },
    /// A Sales Order line names an Item ERPNext does not have.
    #[error(
        "ERPNext rejected item '{item}': {message}; add the Item or map the SKU under [mapping.items]"
    )]
    UnknownItem { item: String, message: String },
    /// ERPNext said the unique key exists, but looking it up by that key found nothing: the
    /// conflicting write is not visible yet, or the conflict is on another unique field.
    #[error(
        "{what}: ERPNext reported a unique conflict ({message}) but no record has {field} = {value:?} yet"
    )]
    ConflictNotVisible {
        what: String,
        field: &'static str,
        value: String,
        message: String,
    },
    /// The command itself cannot be applied (no order lines, …): the mapper sent something wrong.
    #[error("invalid command: {0}")]
    Invalid(String),
}

impl StepError {
    pub fn erp(what: impl Into<String>, source: ErpNextError) -> Self {
        StepError::Erp {
            what: what.into(),
            source,
        }
    }

    /// Transient or not, from the ERPNext error's own class.
    pub fn is_transient(&self) -> bool {
        match self {
            StepError::Erp { source, .. } => matches!(
                source.class(),
                ErrorClass::Transient | ErrorClass::Duplicate
            ),
            StepError::ConflictNotVisible { .. } => true,
            StepError::UnknownItem { .. } | StepError::Invalid(_) => false,
        }
    }

    /// The answer the runtime acts on; the message becomes the dead letter's `x-l2l-error`.
    pub fn to_handler_error(&self) -> HandlerError {
        let message = match self {
            // Frappe's own words first, then where: "HubSpot Deal ID must be unique (…)".
            StepError::Erp { what, source } => match source {
                ErpNextError::Api {
                    status,
                    exc_type,
                    message,
                    operation,
                    doctype,
                    ..
                } => format!(
                    "{what}: ERPNext {operation} {doctype} failed (HTTP {status}{}): {message}{}",
                    exc_type
                        .as_deref()
                        .map(|t| format!(" {t}"))
                        .unwrap_or_default(),
                    match source.class() {
                        ErrorClass::Configuration =>
                            "; check erpnext.api_key/api_secret and the API user's roles",
                        _ => "",
                    }
                ),
                other => format!("{what}: {other}"),
            },
            other => other.to_string(),
        };
        if self.is_transient() {
            let e = HandlerError::transient(message);
            match self {
                StepError::Erp { source, .. } => match source.retry_after() {
                    Some(d) => e.with_retry_after(d),
                    None => e,
                },
                _ => e,
            }
        } else {
            HandlerError::permanent(message)
        }
    }
}

/// A command that stopped part-way: the outcomes of the steps that were applied (to publish, so
/// the mapper learns about the Customer even when the Sales Order is rejected) and the error.
#[derive(Debug)]
pub struct StepFailure {
    pub applied: Vec<ErpOutcome>,
    pub error: StepError,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (after {} applied step(s))",
            self.error,
            self.applied.len()
        )
    }
}

impl std::error::Error for StepFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::runtime::ErrorClass as Class;

    use super::*;

    fn api(status: u16, exc: &str, msg: &str) -> ErpNextError {
        ErpNextError::Api {
            operation: "insert",
            doctype: "Sales Order".into(),
            status,
            exc_type: Some(exc.into()),
            message: msg.into(),
            retry_after: None,
        }
    }

    #[test]
    fn classes_map_to_handler_classes() {
        let e = StepError::erp(
            "Sales Order for deal 7",
            api(417, "MandatoryError", "Value missing for: Delivery Date"),
        );
        let h = e.to_handler_error();
        assert_eq!(h.class, Class::Permanent);
        assert_eq!(
            h.message,
            "Sales Order for deal 7: ERPNext insert Sales Order failed (HTTP 417 MandatoryError): Value missing for: Delivery Date"
        );

        let e = StepError::erp(
            "Customer",
            api(417, "TimestampMismatchError", "Document has been modified"),
        );
        assert_eq!(e.to_handler_error().class, Class::Transient);

        let e = StepError::erp(
            "Customer",
            ErpNextError::Timeout {
                operation: "insert",
                doctype: "Customer".into(),
                timeout: Duration::from_secs(1),
            },
        );
        assert_eq!(e.to_handler_error().class, Class::Transient);

        let e = StepError::erp(
            "Customer",
            api(401, "AuthenticationError", "Authentication failed"),
        );
        let h = e.to_handler_error();
        assert_eq!(h.class, Class::Permanent);
        assert!(h.message.contains("api_key"), "{}", h.message);

        let e = StepError::erp(
            "Customer",
            ErpNextError::Api {
                operation: "list",
                doctype: "Customer".into(),
                status: 503,
                exc_type: None,
                message: "Service Unavailable".into(),
                retry_after: Some(Duration::from_secs(2)),
            },
        );
        let h = e.to_handler_error();
        assert_eq!(h.class, Class::Transient);
        assert_eq!(h.retry_after, Some(Duration::from_secs(2)));
    }

    #[test]
    fn unknown_items_tell_the_operator_what_to_do() {
        let e = StepError::UnknownItem {
            item: "W-9".into(),
            message: "Item W-9 not found".into(),
        };
        let h = e.to_handler_error();
        assert_eq!(h.class, Class::Permanent);
        assert_eq!(
            h.message,
            "ERPNext rejected item 'W-9': Item W-9 not found; add the Item or map the SKU under [mapping.items]"
        );
        assert!(
            StepError::ConflictNotVisible {
                what: "x".into(),
                field: "hubspot_deal_id",
                value: "1".into(),
                message: "m".into()
            }
            .to_handler_error()
            .is_transient()
        );
    }
}
