//! Rejected webhook deliveries, told to the operator: a WARN line with the source and the
//! reason, and a counter.
//!
//! Why: a refused delivery is the only sign of a misconfiguration on the sender's side or ours.
//! After a webhook secret rotation that never reached ERPNext, every Frappe delivery was
//! answered 401, and the only trace was a counter nobody watched. Now each (source, reason)
//! gets a line.
//!
//! Why rate-limited: the same fault repeats for every delivery, and anyone on the internet can
//! post garbage at a public webhook URL. So at most one line per (source, reason) per
//! [`WINDOW`]; the next line after a quiet spell says how many were left out
//! (`suppressed`), and `l2l_webhooks_rejected_total{source, reason}` counts every one. The keys
//! are a fixed vocabulary (never taken from the request), so neither the map nor the metric can
//! grow with what a sender chooses to send.
//!
//! What a line never holds: secrets, signatures, the body. The detail is the error text ingest
//! answers the sender with (which holds none of those), escaped and cut short.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::ApiError;
use crate::metrics;

/// At most one line per source and reason this often.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Longest detail logged, in characters.
const MAX_DETAIL: usize = 200;

/// Where the rate limit stands for one (source, reason).
#[derive(Debug, Clone, Copy)]
struct Slot {
    last_logged_ms: i64,
    suppressed: u64,
}

/// The rejection log of one ingest; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Rejections {
    window_ms: i64,
    slots: Mutex<HashMap<(&'static str, &'static str), Slot>>,
}

impl Default for Rejections {
    fn default() -> Self {
        Self::new(WINDOW)
    }
}

impl Rejections {
    pub fn new(window: Duration) -> Self {
        Self {
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Count a refused delivery from `source`; log it unless its (source, reason) was logged
    /// less than a window ago by `clock`.
    pub fn record(&self, clock: &Clock, source: &'static str, err: &ApiError) {
        metrics::rejected(source, err.reason);
        let now = clock.now_ms();
        let suppressed = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get_mut(&(source, err.reason)) {
                // A clock that went back (NTP) counts as a new window rather than a silence.
                Some(slot)
                    if now >= slot.last_logged_ms && now - slot.last_logged_ms < self.window_ms =>
                {
                    slot.suppressed += 1;
                    return;
                }
                Some(slot) => {
                    let suppressed = slot.suppressed;
                    *slot = Slot {
                        last_logged_ms: now,
                        suppressed: 0,
                    };
                    suppressed
                }
                None => {
                    slots.insert(
                        (source, err.reason),
                        Slot {
                            last_logged_ms: now,
                            suppressed: 0,
                        },
                    );
                    0
                }
            }
        };
        let detail: String = err.detail.chars().take(MAX_DETAIL).collect();
        tracing::warn!(
            source = %source,
            reason = %err.reason,
            status = err.status.as_u16(),
            detail = ?detail,
            suppressed,
            hint = hint(source, err.reason),
            "webhook delivery rejected"
        );
    }
}

/// What to look at first, for the reasons an operator can fix.
fn hint(source: &str, reason: &str) -> &'static str {
    match (source, reason) {
        ("erpnext", "bad_signature") => {
            "ERPNext signs with the secret in its Webhooks; if erpnext.webhook_secret was changed, run `erp-writer setup` to write it there"
        }
        ("hubspot", "bad_signature") => {
            "check hubspot.client_secret (the app's client secret) and that ingest.public_url / ingest.hubspot_public_url is the URL HubSpot calls"
        }
        (_, "stale_timestamp") => {
            "older than ingest.signature_max_age: a replay, or this host's clock is off"
        }
        (_, "missing_signature" | "missing_timestamp") => {
            "unsigned request: not from the sender's webhook, or a proxy strips headers"
        }
        (_, "signature_version_not_accepted") => {
            "HubSpot v1/v2 signatures are refused unless ingest.accept_v1_v2 = true"
        }
        (_, "too_large") => "raise ingest.max_body_bytes if such bodies are legitimate",
        (_, "no_secret_configured") => {
            "set hubspot.client_secret / erpnext.webhook_secret; the sender retries meanwhile"
        }
        (_, "broker_unavailable") => "RabbitMQ is unreachable; the sender retries",
        _ => "",
    }
}
