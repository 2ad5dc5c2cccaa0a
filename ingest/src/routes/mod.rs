//! One module per endpoint family.

pub mod erpnext;
pub mod hubspot;

use shared::broker::{BrokerError, Outgoing};

use crate::app::AppState;
use crate::error::ApiError;

/// Publish every message of one webhook request; `Ok` only when the broker confirmed them all.
pub(crate) async fn publish(state: &AppState, messages: &[Outgoing]) -> Result<(), ApiError> {
    state
        .broker
        .publish_all(messages)
        .await
        .map_err(|e| match e {
            BrokerError::Unavailable => {
                ApiError::unavailable("message broker unavailable; retry later")
            }
            BrokerError::Unroutable { .. } => {
                tracing::error!(error = %e, "event unroutable: topology missing?");
                ApiError::unavailable("message broker cannot route events; retry later")
            }
            other => {
                tracing::warn!(error = %other, "publish failed");
                ApiError::unavailable("message broker did not confirm; retry later")
            }
        })
}
