//! The one mapping from a HubSpot failure to what the runtime does with the message (DESIGN §4):
//! [`classify`]. Everything crm-writer knows about HubSpot's error vocabulary lives here, so
//! "is a 404 worth retrying?" has one tested answer.
//!
//! - 429, budget exhausted, 5xx, timeouts, connection errors → transient (quick retries, then
//!   the ladder), keeping HubSpot's `Retry-After`.
//! - 404 → permanent: the object was deleted or merged in HubSpot; retrying cannot bring it back.
//! - 401/403 → permanent, with the configuration to fix.
//! - 400 and other 4xx → permanent; a missing property points at `crm-writer setup`.
//!
//! The dead letter's `x-l2l-error` is the message built here: it keeps HubSpot's own message,
//! category and `correlationId` (through [`HubSpotError`]'s `Display`), which is what HubSpot
//! support asks for.

use shared::hubspot::{ErrorKind, HubSpotError, ObjectType};
use shared::runtime::HandlerError;

/// What the runtime should do after HubSpot refused (or never answered) the write of one object.
pub fn classify(object_type: ObjectType, object_id: &str, error: &HubSpotError) -> HandlerError {
    let what = format!("{} {object_id}", singular(object_type));
    if error.is_transient() {
        let e = HandlerError::transient(format!("writing HubSpot {what}: {error}"));
        return match error.retry_after {
            Some(d) => e.with_retry_after(d),
            None => e,
        };
    }
    let hint = match error.kind {
        ErrorKind::NotFound => {
            "the object no longer exists in HubSpot (deleted or merged); nothing to write to"
        }
        ErrorKind::Auth => {
            "check hubspot.access_token and its scopes (crm.objects.companies.write, crm.objects.deals.write)"
        }
        ErrorKind::Validation if missing_property(error) => {
            "run `crm-writer setup` to create the properties lead2ledger writes, or fix the names under [mapping.writeback]"
        }
        ErrorKind::Validation => "HubSpot refused the values; check the mapping that produced them",
        ErrorKind::Conflict | ErrorKind::Decode => "unexpected answer from HubSpot",
        // Transient kinds returned above.
        ErrorKind::RateLimited | ErrorKind::Server | ErrorKind::Transport => "",
    };
    HandlerError::permanent(format!(
        "HubSpot refused the update of {what}: {error} — {hint}"
    ))
}

/// HubSpot's 400 for a property that does not exist (`PROPERTY_DOESNT_EXIST`).
fn missing_property(error: &HubSpotError) -> bool {
    error.message.contains("PROPERTY_DOESNT_EXIST") || error.message.contains("does not exist")
}

pub fn singular(object_type: ObjectType) -> &'static str {
    match object_type {
        ObjectType::Deals => "deal",
        ObjectType::Companies => "company",
        ObjectType::Contacts => "contact",
        // crm-writer writes only companies and deals; other types keep their plural path name.
        other => other.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::runtime::ErrorClass;

    use super::*;

    fn error(kind: ErrorKind, status: Option<u16>, message: &str) -> HubSpotError {
        HubSpotError {
            kind,
            operation: "update",
            status,
            category: Some("OBJECT_NOT_FOUND".into()),
            message: message.into(),
            correlation_id: Some("c0ffee00-1111-2222-3333-444455556666".into()),
            retry_after: None,
        }
    }

    #[test]
    fn not_found_is_permanent_and_keeps_hubspots_words() {
        let e = classify(
            ObjectType::Deals,
            "42",
            &error(
                ErrorKind::NotFound,
                Some(404),
                "resource not found: no DEAL with id 42",
            ),
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("deal 42"), "{}", e.message);
        assert!(
            e.message.contains("resource not found: no DEAL with id 42"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("c0ffee00-1111-2222-3333-444455556666"),
            "{}",
            e.message
        );
        assert!(e.message.contains("deleted or merged"), "{}", e.message);
    }

    #[test]
    fn rate_limits_server_errors_and_timeouts_are_transient() {
        let mut limited = error(ErrorKind::RateLimited, Some(429), "ten_secondly_rolling");
        limited.retry_after = Some(Duration::from_secs(2));
        let e = classify(ObjectType::Companies, "7", &limited);
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        for (kind, status) in [(ErrorKind::Server, Some(503)), (ErrorKind::Transport, None)] {
            let e = classify(ObjectType::Deals, "1", &error(kind, status, "x"));
            assert_eq!(e.class, ErrorClass::Transient, "{kind}");
            assert_eq!(e.retry_after, None);
        }
    }

    #[test]
    fn contract_errors_are_permanent_with_a_fix() {
        let e = classify(
            ObjectType::Deals,
            "1",
            &error(
                ErrorKind::Validation,
                Some(400),
                "Property values were not valid: PROPERTY_DOESNT_EXIST",
            ),
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("crm-writer setup"), "{}", e.message);
        let e = classify(
            ObjectType::Deals,
            "1",
            &error(ErrorKind::Auth, Some(401), "bad token"),
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("access_token"), "{}", e.message);
    }
}
