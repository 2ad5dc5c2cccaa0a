//! One module per endpoint family.

pub mod erpnext;
pub mod hubspot;

use shared::broker::{BrokerError, Outgoing};

use crate::app::AppState;
use crate::error::ApiError;
use crate::metrics;

/// Account for one finished request from `source`: latency, the received counter, and for a
/// refusal the rejection log.
pub(crate) fn finish<T>(
    state: &AppState,
    source: &'static str,
    started: std::time::Instant,
    result: &Result<T, ApiError>,
) {
    metrics::latency(source, started.elapsed().as_secs_f64());
    metrics::webhook(
        source,
        result.as_ref().map_or_else(|e| e.code, |_| "accepted"),
    );
    if let Err(e) = result {
        state.rejections.record(&state.clock, source, e);
    }
}

/// Publish every message of one webhook request; `Ok` only when the broker confirmed them all.
pub(crate) async fn publish(state: &AppState, messages: &[Outgoing]) -> Result<(), ApiError> {
    state
        .broker
        .publish_all(messages)
        .await
        .map_err(|e| match e {
            BrokerError::Unavailable => {
                ApiError::unavailable("message broker unavailable; retry later")
                    .because("broker_unavailable")
            }
            BrokerError::Unroutable { .. } => {
                tracing::error!(error = %e, "event unroutable: topology missing?");
                ApiError::unavailable("message broker cannot route events; retry later")
                    .because("broker_unroutable")
            }
            other => {
                tracing::warn!(error = %other, "publish failed");
                ApiError::unavailable("message broker did not confirm; retry later")
                    .because("broker_unconfirmed")
            }
        })
}
