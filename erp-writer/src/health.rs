//! `/healthz`, `/readyz` and `/metrics` of the writer, on `worker.metrics_listen` when set.
//!
//! Ready means: the broker connection is up, and ERPNext has not answered our last call with
//! 401/403 — a wrong secret or a missing role would dead-letter every command, so an
//! orchestrator should see the writer as not ready rather than watch the DLQ fill.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::broker::Broker;
use shared::erpnext::ErpNextClient;

#[derive(Clone)]
pub struct HealthState {
    pub broker: Broker,
    pub erpnext: ErpNextClient,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async { shared::telemetry::prometheus().render() }),
        )
        .with_state(state)
}

async fn readyz(State(state): State<HealthState>) -> (StatusCode, Json<Value>) {
    let broker = state.broker.is_ready();
    let erpnext = state.erpnext.configuration_problem();
    let ready = broker && erpnext.is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "broker": if broker { "connected" } else { "down" },
            "erpnext": erpnext.unwrap_or_else(|| "ok".into()),
        })),
    )
}
