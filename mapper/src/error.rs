//! Everything that can stop the mapper from deciding about one message, and the one place that
//! turns it into the runtime's transient/permanent answer ([`MapError::to_handler_error`]).
//!
//! The rule: a problem in the *data* or the *configuration* is permanent (a human fixes the
//! deal, the mapping or the credentials, then replays the dead letter); a problem in *reaching*
//! HubSpot, ERPNext or the broker is transient. HubSpot's and ERPNext's own errors are already
//! classified by their clients; this module only carries that decision through.

use shared::broker::BrokerError;
use shared::erpnext::{ErpNextError, ErrorClass as ErpClass};
use shared::hubspot::HubSpotError;
use shared::runtime::HandlerError;

use crate::map::Unmappable;

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The deal (or company) cannot become an ERPNext document as it is.
    #[error(transparent)]
    Unmappable(Box<Unmappable>),
    #[error(transparent)]
    HubSpot(#[from] HubSpotError),
    #[error(transparent)]
    ErpNext(#[from] ErpNextError),
    #[error("publishing commands: {0}")]
    Publish(#[from] BrokerError),
    /// The message itself is not what the mapper expects (payload, missing fields).
    #[error("{0}")]
    BadMessage(String),
    /// The mapper needs a client or setting that is not configured.
    #[error("{0}")]
    NotConfigured(String),
    /// HubSpot answered without records the deal is associated with: most likely a change in
    /// progress (an object deleted a moment ago). Worth another try.
    #[error("{0}")]
    Incomplete(String),
}

impl From<Unmappable> for MapError {
    fn from(u: Unmappable) -> Self {
        MapError::Unmappable(Box::new(u))
    }
}

impl MapError {
    pub fn is_transient(&self) -> bool {
        match self {
            MapError::HubSpot(e) => e.is_transient(),
            MapError::ErpNext(e) => e.class() == ErpClass::Transient,
            MapError::Publish(e) => e.is_transient(),
            MapError::Incomplete(_) => true,
            MapError::Unmappable(_) | MapError::BadMessage(_) | MapError::NotConfigured(_) => false,
        }
    }

    /// The runtime's answer: class, the operator's message, and any wait the remote asked for.
    pub fn to_handler_error(&self) -> HandlerError {
        let message = self.to_string();
        let retry_after = match self {
            MapError::HubSpot(e) => e.retry_after,
            MapError::ErpNext(e) => e.retry_after(),
            _ => None,
        };
        let e = if self.is_transient() {
            HandlerError::transient(message)
        } else {
            HandlerError::permanent(message)
        };
        match retry_after {
            Some(d) => e.with_retry_after(d),
            None => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::hubspot::ErrorKind;
    use shared::runtime::ErrorClass;

    use super::*;
    use crate::map::Reason;

    fn hubspot(kind: ErrorKind, retry_after: Option<Duration>) -> MapError {
        MapError::HubSpot(HubSpotError {
            kind,
            operation: "get_object",
            status: None,
            category: None,
            message: "m".into(),
            correlation_id: None,
            retry_after,
        })
    }

    #[test]
    fn classification() {
        let e = MapError::from(Unmappable {
            subject: "Deal 1".into(),
            deal_id: Some("1".into()),
            reason: Box::new(Reason::NoLineItems),
        })
        .to_handler_error();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(
            e.message.starts_with("Deal 1: it has no line items"),
            "{}",
            e.message
        );

        let e = hubspot(ErrorKind::RateLimited, Some(Duration::from_secs(2))).to_handler_error();
        assert_eq!(
            (e.class, e.retry_after),
            (ErrorClass::Transient, Some(Duration::from_secs(2)))
        );
        assert_eq!(
            hubspot(ErrorKind::Server, None).to_handler_error().class,
            ErrorClass::Transient
        );
        assert_eq!(
            hubspot(ErrorKind::Auth, None).to_handler_error().class,
            ErrorClass::Permanent
        );
        assert_eq!(
            hubspot(ErrorKind::Validation, None)
                .to_handler_error()
                .class,
            ErrorClass::Permanent
        );

        let erp = |status, exc: &str| {
            MapError::ErpNext(ErpNextError::Api {
                operation: "list",
                doctype: "Item".into(),
                status,
                exc_type: Some(exc.into()),
                message: "m".into(),
                retry_after: None,
            })
            .to_handler_error()
            .class
        };
        assert_eq!(erp(503, "Whatever"), ErrorClass::Transient);
        assert_eq!(erp(403, "PermissionError"), ErrorClass::Permanent);
        assert_eq!(erp(417, "ValidationError"), ErrorClass::Permanent);

        assert_eq!(
            MapError::Publish(BrokerError::Unavailable)
                .to_handler_error()
                .class,
            ErrorClass::Transient
        );
        assert_eq!(
            MapError::Incomplete("x".into()).to_handler_error().class,
            ErrorClass::Transient
        );
        assert_eq!(
            MapError::BadMessage("x".into()).to_handler_error().class,
            ErrorClass::Permanent
        );
        assert_eq!(
            MapError::NotConfigured("x".into()).to_handler_error().class,
            ErrorClass::Permanent
        );
    }
}
