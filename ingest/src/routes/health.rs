//! `/healthz` (the process answers), `/readyz` (the broker is connected) and `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::app::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.broker.is_ready() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "broker": "connected"})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "broker": "disconnected"})),
        )
    }
}

pub async fn metrics(State(state): State<AppState>) -> String {
    state.prometheus.render()
}
