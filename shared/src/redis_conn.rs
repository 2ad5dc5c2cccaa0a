//! The Redis connection that [`crate::dedup`] and [`crate::budget`] share, and how they degrade when
//! Redis is away.
//!
//! Redis is a fast path in lead2ledger, never the truth (DESIGN §5, §6): a process must start and keep
//! working while Redis is down. So the connection is *lazy* — [`connect`] never touches the network
//! and cannot fail on an unreachable server — and `redis::aio::ConnectionManager` re-establishes it
//! on the next command after an I/O error. Each command is additionally bounded by the caller's own
//! short timeout, because a black-holed server would otherwise hold a worker for the whole
//! reconnect backoff.
//!
//! [`LogThrottle`] keeps "Redis unavailable" from flooding the log: one line per interval, with the
//! number of suppressed repeats.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Per-command response timeout and per-attempt connect timeout inside the connection manager.
/// The callers' own timeouts are shorter; these only stop orphaned futures from living forever.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A lazily connecting, self-reconnecting Redis connection. Fails only on a malformed URL.
///
/// Reconnect attempts are few and short (two tries, at most 1 s apart): a failed reconnect is
/// simply retried on the next command, and a long internal retry would make every caller wait.
pub fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// Lets one message through per `every`; counts the ones it holds back.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    every: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new(ThrottleState::default()),
        }
    }

    /// `Some(suppressed since the last logged one)` when the caller should log now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        match s.last {
            Some(last) if now.duration_since(last) < self.every => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_interval() {
        let t = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        let t0 = LogThrottle::new(Duration::ZERO);
        assert_eq!(t0.allow(), Some(0));
        assert_eq!(t0.allow(), Some(0));
    }

    #[test]
    fn connect_is_lazy_and_only_rejects_bad_urls() {
        // Nothing listens on port 1; construction must still succeed.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            assert!(connect("redis://127.0.0.1:1").is_ok());
            assert!(connect("not a url").is_err());
        });
    }
}
