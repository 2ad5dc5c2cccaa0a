//! `POST /webhooks/erpnext/{doctype}/{event}`: verify Frappe's `X-Frappe-Webhook-Signature`
//! (base64 HMAC-SHA256 of the raw body), then one message.
//!
//! Frappe sends no event name and, unless configured, no Content-Type, so the doctype and event
//! come from the path the Webhook doc was created with (`erp-writer setup`), and the body is
//! parsed as JSON whatever its declared type.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chrono::Utc;
use serde_json::{Value, json};
use shared::broker::Outgoing;
use shared::envelope::{Envelope, Kind, Source};
use shared::events::ErpNextEvent;
use shared::names::{Exchange, routing};
use shared::signature;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::metrics;

pub async fn receive(
    State(state): State<AppState>,
    Path((doctype, event)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let started = std::time::Instant::now();
    let result = handle(&state, doctype, event, &headers, body).await;
    super::finish(&state, "erpnext", started, &result);
    result
}

/// Doctype names are words and spaces (`Sales Invoice`); events are snake_case (`on_change`).
fn valid_doctype(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '_')
}

fn valid_event(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

async fn handle(
    state: &AppState,
    doctype: String,
    event: String,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    if !valid_doctype(&doctype) || !valid_event(&event) {
        return Err(ApiError::malformed(format!(
            "path must be /webhooks/erpnext/<DocType>/<event>, got doctype {doctype:?} event {event:?}"
        )));
    }
    let Some(secret) = state.erpnext_secret.as_deref() else {
        return Err(
            ApiError::unavailable("ingest has no erpnext.webhook_secret configured")
                .because("no_secret_configured"),
        );
    };
    let sig = headers
        .get(signature::FRAPPE_SIGNATURE)
        .and_then(|v| v.to_str().ok());
    signature::verify_frappe(secret, &body, sig).map_err(|e| ApiError::signature(&e))?;
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::malformed(format!("body is not JSON: {e}")))?;
    if !doc.is_object() {
        return Err(ApiError::malformed(
            "body must be a JSON object (the webhook's JSON template)",
        ));
    }
    let payload = ErpNextEvent {
        site: state.erpnext_site.clone(),
        doctype,
        event,
        doc,
    };
    let idempotency_key = payload.idempotency_key().ok_or_else(|| {
        ApiError::malformed(
            "body must carry the document's \"name\" and \"modified\" (see erp-writer setup)",
        )
    })?;
    let correlation_id = Uuid::now_v7().to_string();
    tracing::Span::current().record("correlation_id", correlation_id.as_str());
    let now = Utc::now();
    let routing_key = routing::erpnext_event(&payload.doctype, &payload.event);
    let envelope = Envelope {
        id: Uuid::now_v7(),
        kind: Kind::ErpNextEvent,
        idempotency_key,
        correlation_id: correlation_id.clone(),
        occurred_at: now,
        received_at: now,
        source: Source::Erpnext,
        payload,
    };
    let msg = Outgoing::envelope(
        state.names.exchange(Exchange::Events),
        routing_key,
        &envelope,
        0,
    )
    .map_err(|e| ApiError::malformed(format!("cannot encode event: {e}")))?;
    super::publish(state, std::slice::from_ref(&msg)).await?;
    metrics::published("erpnext", &msg.routing_key, 1);
    tracing::info!(%correlation_id, routing_key = %msg.routing_key, "erpnext webhook accepted");
    Ok(Json(
        json!({"accepted": 1, "correlation_id": correlation_id}),
    ))
}
