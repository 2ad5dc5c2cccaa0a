//! HubSpot's error responses: one type that renders the `{status, message, correlationId,
//! category, …}` body of contracts/hubspot/api/README.md §8 with the matching HTTP status, plus
//! the `StandardError` entries of 207 batch answers and a JSON body extractor whose rejections
//! look like HubSpot's rather than axum's plain-text ones.
//!
//! The 429 body differs (`errorType`, `policyName`) and lives in `rate_limit`.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::model::ObjectType;

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub category: &'static str,
    pub sub_category: Option<String>,
    pub message: String,
    pub context: Option<BTreeMap<String, Vec<String>>>,
}

impl ApiError {
    fn new(status: StatusCode, category: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            category,
            sub_category: None,
            message: message.into(),
            context: None,
        }
    }

    fn with_context(mut self, key: &str, values: Vec<String>) -> Self {
        self.context
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), values);
        self
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    pub fn not_found(ty: ObjectType, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            format!("resource not found: no {} with id {id}", ty.upper()),
        )
        .with_context("id", vec![id.to_string()])
    }

    pub fn route_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "resource not found",
        )
    }

    pub fn unauthenticated(token_present: bool) -> Self {
        let message = if token_present {
            "Authentication credentials not found. The access token is invalid or has been revoked."
        } else {
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
        };
        Self::new(StatusCode::UNAUTHORIZED, "INVALID_AUTHENTICATION", message)
    }

    pub fn property_exists(name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "OBJECT_ALREADY_EXISTS",
            format!("Property named '{name}' already exists."),
        )
        .with_context("name", vec![name.to_string()])
    }

    /// An injected server error (faults). HubSpot's own 5xx bodies carry this category.
    pub fn injected(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(
            status,
            "INTERNAL_ERROR",
            "internal error (injected by the simulator)",
        )
    }

    /// The body of a single-error response.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "status": "error",
            "message": self.message,
            "correlationId": uuid::Uuid::now_v7().to_string(),
            "category": self.category,
        });
        if let Some(sub) = &self.sub_category {
            body["subCategory"] = json!(sub);
        }
        if let Some(ctx) = &self.context {
            body["context"] = json!(ctx);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        with_correlation_id(self.status, self.body())
    }
}

/// The header HubSpot puts on every API answer; on an error it repeats the body's
/// `correlationId`.
pub const CORRELATION_HEADER: &str = "x-hubspot-correlation-id";

/// An error answer whose `X-HubSpot-Correlation-Id` header is its body's `correlationId`.
pub fn with_correlation_id(status: axum::http::StatusCode, body: Value) -> Response {
    let id = body["correlationId"].as_str().map(str::to_string);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(value) = id.and_then(|id| axum::http::HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}

/// One `StandardError` of a 207 batch answer (README §2): required `status, category, message,
/// context, errors, links`.
pub fn standard_error(
    category: &str,
    sub_category: Option<&str>,
    message: String,
    context: Value,
) -> Value {
    let mut e = json!({
        "status": "error",
        "category": category,
        "message": message,
        "context": context,
        "errors": [],
        "links": {},
    });
    if let Some(sub) = sub_category {
        e["subCategory"] = json!(sub);
    }
    e
}

/// A JSON request body, refused with HubSpot's 400 `VALIDATION_ERROR` body when it does not parse.
#[derive(Debug)]
pub struct HsJson<T>(pub T);

impl<S, T> FromRequest<S> for HsJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::validation(format!("Could not read the request body: {e}")))?;
        serde_json::from_slice(&bytes).map(HsJson).map_err(|e| {
            ApiError::validation(format!(
                "Invalid input JSON on line {}, column {}: {e}",
                e.line(),
                e.column()
            ))
        })
    }
}
