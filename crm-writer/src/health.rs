//! `/healthz`, `/readyz` and `/metrics` of crm-writer, on `worker.metrics_listen` when set.
//!
//! Ready means the broker connection is up. Redis is not part of readiness: without it
//! crm-writer keeps writing (without the ordering guard, see [`crate::ordering`]) and the shared
//! budget falls back to a local limiter, so restarting the pod would not help.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::broker::Broker;

pub fn router(broker: Broker) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async { shared::telemetry::prometheus().render() }),
        )
        .with_state(broker)
}

async fn readyz(State(broker): State<Broker>) -> (StatusCode, Json<Value>) {
    let ready = broker.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "broker": if ready { "connected" } else { "down" },
        })),
    )
}
