//! One error type for every HubSpot call, classified once so workers can decide retry vs dead
//! letter with a `match`, and carrying what a human needs in a dead letter: HTTP status, HubSpot's
//! `category`, its message and `correlationId` (quote it to HubSpot support).

use std::time::Duration;

use super::types::ApiErrorBody;

/// What went wrong, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 404: the object does not exist (deleted, merged, wrong ID).
    NotFound,
    /// 429, or the shared budget could not grant a slot in time.
    RateLimited,
    /// 401/403: wrong or missing token, missing scopes. A configuration problem.
    Auth,
    /// 400/422 and other 4xx: the request is wrong and will stay wrong.
    Validation,
    /// 409: e.g. a property that already exists.
    Conflict,
    /// 5xx.
    Server,
    /// No HTTP answer: connect error, timeout, connection reset.
    Transport,
    /// An answer we could not decode: the contract differs from what we expect.
    Decode,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Auth => "auth",
            ErrorKind::Validation => "validation",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Server => "server",
            ErrorKind::Transport => "transport",
            ErrorKind::Decode => "decode",
        }
    }

    /// The kind an HTTP error status stands for.
    pub fn from_status(status: u16) -> Self {
        match status {
            404 => ErrorKind::NotFound,
            429 => ErrorKind::RateLimited,
            401 | 403 => ErrorKind::Auth,
            409 => ErrorKind::Conflict,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::Validation,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HubSpot {operation} failed ({kind}{}): {message}{}",
    .status.map(|s| format!(", HTTP {s}")).unwrap_or_default(),
    .correlation_id.as_ref().map(|c| format!(" [correlationId {c}]")).unwrap_or_default())]
pub struct HubSpotError {
    pub kind: ErrorKind,
    /// Which client call (`get_deal`, `batch_read`, …).
    pub operation: &'static str,
    /// HTTP status, if there was an answer.
    pub status: Option<u16>,
    /// HubSpot's `category` (`OBJECT_NOT_FOUND`, `VALIDATION_ERROR`, `RATE_LIMITS`, …) or, for a 429
    /// without one, its `policyName`.
    pub category: Option<String>,
    pub message: String,
    /// HubSpot's `correlationId` (body, or the `X-HubSpot-Correlation-Id` header).
    pub correlation_id: Option<String>,
    /// For `RateLimited`: how long HubSpot (or the budget) asked us to wait.
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl HubSpotError {
    /// Whether trying again later may succeed: rate limits, 5xx, transport errors.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::RateLimited | ErrorKind::Server | ErrorKind::Transport
        )
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// An error for an HTTP answer with a non-success status; `body` is parsed leniently.
    pub(crate) fn from_response(
        operation: &'static str,
        status: u16,
        body: &[u8],
        header_correlation_id: Option<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        let parsed: ApiErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let message = parsed.message.clone().unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status} without a body")
            } else {
                text.chars().take(500).collect()
            }
        });
        Self {
            kind: ErrorKind::from_status(status),
            operation,
            status: Some(status),
            category: parsed.category.or(parsed.policy_name).or(parsed.error_type),
            message,
            correlation_id: parsed.correlation_id.or(header_correlation_id),
            retry_after,
        }
    }

    pub(crate) fn transport(operation: &'static str, error: &reqwest::Error) -> Self {
        // reqwest's Display names the URL but never headers, so the token cannot leak here.
        let message = if error.is_timeout() {
            format!("timed out: {error}")
        } else {
            error.to_string()
        };
        Self {
            kind: ErrorKind::Transport,
            operation,
            status: None,
            category: None,
            message,
            correlation_id: None,
            retry_after: None,
        }
    }

    pub(crate) fn decode(operation: &'static str, status: u16, error: &serde_json::Error) -> Self {
        Self {
            kind: ErrorKind::Decode,
            operation,
            status: Some(status),
            category: None,
            message: format!("cannot decode HubSpot's answer: {error}"),
            correlation_id: None,
            retry_after: None,
        }
    }

    pub(crate) fn budget(operation: &'static str, error: &crate::budget::BudgetError) -> Self {
        let crate::budget::BudgetError::Exhausted { retry_after, .. } = error;
        Self {
            kind: ErrorKind::RateLimited,
            operation,
            status: None,
            category: Some("BUDGET_EXHAUSTED".into()),
            message: error.to_string(),
            correlation_id: None,
            retry_after: Some(*retry_after),
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn contract(name: &str) -> Vec<u8> {
        let path = crate::contracts::path("hubspot/api").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn classifies_contract_error_bodies() {
        let e = HubSpotError::from_response(
            "update",
            400,
            &contract("error_400_validation.json"),
            None,
            None,
        );
        assert_eq!(e.kind, ErrorKind::Validation);
        assert!(!e.is_transient());
        assert_eq!(e.category.as_deref(), Some("VALIDATION_ERROR"));
        assert_eq!(
            e.correlation_id.as_deref(),
            Some("1d6b3c9e-5f2a-4e8b-8c70-3a9d2e1f4b55")
        );
        assert!(e.to_string().contains("PROPERTY_DOESNT_EXIST"), "{e}");
        assert!(e.to_string().contains("1d6b3c9e"), "{e}");

        let e = HubSpotError::from_response(
            "create_property",
            409,
            &contract("error_409_property_exists.json"),
            None,
            None,
        );
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert_eq!(e.category.as_deref(), Some("OBJECT_ALREADY_EXISTS"));

        let e = HubSpotError::from_response(
            "search",
            429,
            &contract("error_429_rate_limit.json"),
            None,
            Some(Duration::from_secs(1)),
        );
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert!(e.is_transient());
        assert_eq!(e.category.as_deref(), Some("TEN_SECONDLY_ROLLING"));
        assert_eq!(
            e.correlation_id.as_deref(),
            Some("c033cdaa-2c40-4a64-ae48-b4cec88dad24")
        );
    }

    #[test]
    fn non_json_bodies_and_statuses() {
        let e = HubSpotError::from_response(
            "get_deal",
            502,
            b"<html>Bad Gateway</html>",
            Some("hdr".into()),
            None,
        );
        assert_eq!(e.kind, ErrorKind::Server);
        assert!(e.is_transient());
        assert_eq!(e.message, "<html>Bad Gateway</html>");
        assert_eq!(e.correlation_id.as_deref(), Some("hdr"));
        assert_eq!(ErrorKind::from_status(401), ErrorKind::Auth);
        assert_eq!(ErrorKind::from_status(403), ErrorKind::Auth);
        assert_eq!(ErrorKind::from_status(404), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_status(422), ErrorKind::Validation);
        let e = HubSpotError::from_response("get_deal", 404, b"", None, None);
        assert!(e.is_not_found());
        assert_eq!(e.message, "HTTP 404 without a body");
    }
}
