//! `/healthz`, `/readyz` and `/metrics` of the mapper, on `worker.metrics_listen` when set.
//! Ready means the broker connection is up: without it no event arrives and no command leaves.

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
        Json(json!({"ready": ready, "broker": if ready { "connected" } else { "down" }})),
    )
}
