//! `/healthz`, `/readyz` and `/metrics` for every binary.
//!
//! Healthy means the process answers. Ready means the broker connection is up — without it no
//! message arrives or leaves — and no binary-specific check reports a problem (erp-writer: ERPNext
//! refused our credentials, so every command would dead-letter). Redis is deliberately not part
//! of readiness: every binary carries on without it, so restarting would not help. Neither is a
//! queue that exists with other arguments than this version declares: it is used as it is, and
//! `/readyz` lists it under `topology` with the broker's words and the fix.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// A readiness check beyond the broker: `Some(problem)` makes `/readyz` answer 503.
pub type Check = Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Clone)]
struct HealthState {
    broker: Broker,
    check: Option<Check>,
}

/// The three routes, for merging into a binary's own router (ingest) or serving alone.
pub fn router(broker: Broker, check: Option<Check>) -> Router {
    // Install the recorder now, so metrics recorded before the first scrape are kept.
    let prometheus = crate::telemetry::prometheus();
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(move || async move { prometheus.render() }))
        .with_state(HealthState { broker, check })
}

async fn readyz(State(state): State<HealthState>) -> (StatusCode, Json<Value>) {
    let broker = state.broker.is_ready();
    let problem = state.check.as_ref().and_then(|c| c());
    let ready = broker && problem.is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "broker": if broker { "connected" } else { "disconnected" },
    });
    if let Some(p) = problem {
        body["problem"] = Value::String(p);
    }
    // Queues used with other arguments than this version declares: ready all the same (they
    // work), but the operator should see why and what to do.
    let drift = state.broker.drift();
    if !drift.is_empty() {
        body["topology"] = json!(drift);
    }
    (status, Json(body))
}

/// Serve the health routes on `addr` (a worker's `worker.metrics_listen`) until `shutdown`.
/// Binding fails loudly; a failure later is logged.
pub async fn spawn(
    addr: Option<SocketAddr>,
    broker: Broker,
    check: Option<Check>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Even without a listener, install the recorder so in-process metrics are consistent.
    let app = router(broker, check);
    let Some(addr) = addr else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding worker.metrics_listen {addr}"))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::warn!(error = %e, "health server stopped");
        }
    });
    Ok(())
}
