//! `POST /webhooks/hubspot`: verify HubSpot's signature, then one message per event.
//!
//! The signature covers the *public* URL HubSpot called (`ingest.hubspot_public_url`, by default
//! `<ingest.public_url>/webhooks/hubspot`, plus the query string as it arrived), not the address
//! this process listens on: TLS usually ends at a proxy, which may also rewrite the path.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use shared::broker::Outgoing;
use shared::envelope::{Envelope, Kind, Source};
use shared::events::HubSpotEvent;
use shared::names::{Exchange, routing};
use shared::signature::{self, SignatureError, V3Request};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::metrics;

pub async fn receive(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let started = std::time::Instant::now();
    let result = handle(&state, &uri, &headers, body).await;
    super::finish(&state, "hubspot", started, &result);
    result
}

async fn handle(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    verify(state, uri, headers, &body)?;
    let events: Vec<HubSpotEvent> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::malformed(format!("body is not a JSON array of HubSpot events: {e}"))
    })?;
    let correlation_id = Uuid::now_v7().to_string();
    tracing::Span::current().record("correlation_id", correlation_id.as_str());
    let received_at = Utc::now();
    let exchange = state.names.exchange(Exchange::Events);
    let mut messages = Vec::with_capacity(events.len());
    for event in &events {
        let (object, name) = event.object_and_event().ok_or_else(|| {
            ApiError::malformed(format!(
                "event {} has subscriptionType {:?}, expected <object>.<event>",
                event.event_id, event.subscription_type
            ))
        })?;
        let routing_key = routing::hubspot_event(object, name);
        let envelope = Envelope {
            id: Uuid::now_v7(),
            kind: Kind::HubSpotEvent,
            idempotency_key: event.idempotency_key(),
            correlation_id: correlation_id.clone(),
            occurred_at: millis(event.occurred_at).unwrap_or(received_at),
            received_at,
            source: Source::Hubspot,
            payload: event,
        };
        let msg = Outgoing::envelope(exchange.clone(), routing_key, &envelope, 0).map_err(|e| {
            ApiError::malformed(format!("cannot encode event {}: {e}", event.event_id))
        })?;
        messages.push(msg);
    }
    super::publish(state, &messages).await?;
    for m in &messages {
        metrics::published("hubspot", &m.routing_key, 1);
    }
    tracing::info!(%correlation_id, events = events.len(), "hubspot webhook accepted");
    Ok(Json(
        json!({"accepted": events.len(), "correlation_id": correlation_id}),
    ))
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn verify(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let Some(secret) = state.hubspot_secret.as_deref() else {
        // Refuse rather than accept unsigned data; 503 makes HubSpot retry once the operator has
        // set the secret, so nothing is lost.
        return Err(
            ApiError::unavailable("ingest has no hubspot.client_secret configured")
                .because("no_secret_configured"),
        );
    };
    let public = public_uri(&state.hubspot_url, uri);
    let result = if headers.contains_key(signature::HUBSPOT_SIGNATURE_V3) {
        let req = V3Request {
            method: "POST",
            uri: &signature::hubspot_v3_uri(&public),
            body,
            timestamp: header(headers, signature::HUBSPOT_TIMESTAMP),
            signature: header(headers, signature::HUBSPOT_SIGNATURE_V3),
        };
        signature::verify_hubspot_v3(
            secret,
            &req,
            state.clock.now_ms(),
            state.signature_max_age_ms,
        )
    } else if let Some(sig) = header(headers, signature::HUBSPOT_SIGNATURE) {
        let version = header(headers, signature::HUBSPOT_SIGNATURE_VERSION).unwrap_or("v1");
        if state.accept_v1_v2 {
            signature::verify_hubspot_v1_v2(secret, version, "POST", &public, body, sig)
        } else {
            Err(SignatureError::VersionNotAccepted(version.to_string()))
        }
    } else {
        Err(SignatureError::MissingHeader(
            signature::HUBSPOT_SIGNATURE_V3,
        ))
    };
    result.map_err(|e| ApiError::signature(&e))
}

/// The URL HubSpot called: the configured public endpoint URL followed by the query string exactly
/// as it arrived (still percent-encoded; [`signature::hubspot_v3_uri`] decodes what HubSpot decodes).
fn public_uri(endpoint: &str, uri: &axum::http::Uri) -> String {
    match uri.query() {
        Some(q) => format!("{endpoint}?{q}"),
        None => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_uri_joins_base_and_path() {
        let uri: axum::http::Uri = "/webhooks/hubspot?x=%3A&b=2".parse().expect("uri");
        assert_eq!(
            public_uri("https://sync.example.com/hubspot/webhook", &uri),
            "https://sync.example.com/hubspot/webhook?x=%3A&b=2"
        );
        let bare: axum::http::Uri = "/webhooks/hubspot".parse().expect("uri");
        assert_eq!(public_uri("https://h/x", &bare), "https://h/x");
    }
}
