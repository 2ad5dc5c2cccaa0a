//! Logging and metrics set-up for every binary (DESIGN §9).
//!
//! Tracing goes to stderr as text or JSON (`telemetry.log_format`); `RUST_LOG` wins over
//! `telemetry.log_level`. Metrics are recorded with the `metrics` crate into one process-wide
//! Prometheus recorder whose handle renders `/metrics`. Both set-ups are idempotent because tests
//! start several services in one process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

/// Install the global tracing subscriber. A second call (tests) is a no-op.
pub fn init_tracing(cfg: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// W3C `traceparent` derived from a correlation ID, so every hop of one webhook shares a trace ID.
pub fn traceparent(correlation_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(correlation_id.as_bytes());
    let trace = hex::encode(&digest[..16]);
    let span = hex::encode(&uuid::Uuid::now_v7().as_bytes()[8..16]);
    format!("00-{trace}-{span}-01")
}

#[cfg(test)]
mod tests {
    #[test]
    fn traceparent_shares_trace_id_per_correlation() {
        let a = super::traceparent("abc");
        let b = super::traceparent("abc");
        assert_eq!(a.len(), 55);
        assert_eq!(a[3..35], b[3..35]);
        assert_ne!(super::traceparent("abd")[3..35], a[3..35]);
    }
}
