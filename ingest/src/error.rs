//! The one error type every ingest handler answers with: a status code and a JSON body
//! `{"error": "<code>", "detail": "<what was wrong>"}` that tells the sender what to fix.
//!
//! Beside the code the sender sees, each error carries a finer `reason` for the operator (a
//! stale timestamp and a wrong secret are both `invalid_signature` on the wire, but need
//! different fixes); the rejection log and metric use it (`crate::rejections`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shared::signature::{self, SignatureError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    /// Why, for logs and metrics: `bad_signature`, `stale_timestamp`, `malformed`, `too_large`…
    /// (a fixed vocabulary, so it is safe as a metric label).
    pub reason: &'static str,
    pub detail: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    detail: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: code,
            detail: detail.into(),
        }
    }

    /// The same error with a finer reason for the operator.
    pub fn because(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }

    /// A refused signature, with the reason its variant names.
    pub fn signature(e: &SignatureError) -> Self {
        let reason = match e {
            SignatureError::MissingHeader(signature::HUBSPOT_TIMESTAMP) => "missing_timestamp",
            SignatureError::MissingHeader(_) => "missing_signature",
            SignatureError::MalformedHeader(_) => "malformed_signature_header",
            SignatureError::Stale => "stale_timestamp",
            SignatureError::VersionNotAccepted(_) => "signature_version_not_accepted",
            SignatureError::Mismatch => "bad_signature",
        };
        Self::unauthorized(e.to_string()).because(reason)
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_signature", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(Body {
                error: self.code,
                detail: &self.detail,
            }),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Senders that honour it (HubSpot retries anyway) come back when the broker may be up.
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "too_large",
                "request body exceeds ingest.max_body_bytes",
            )
        } else {
            ApiError::new(status, "malformed", r.body_text())
        }
    }
}
