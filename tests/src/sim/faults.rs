//! Fault injection shared by both simulators: latency, 5xx errors, hangs past the client timeout,
//! 429 bursts (a count of requests) and 429 windows (a span of time, as when another app on the
//! same HubSpot account exhausts the shared limit), drawn from one seeded RNG so a failing run
//! can be replayed with its seed.
//!
//! Also counts calls per endpoint, which tests use to assert API-call budgets.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What to inject. Rates are probabilities in `0.0..=1.0` per request; the admin API sets them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Seed of the RNG; the same seed and request sequence give the same faults.
    pub seed: u64,
    /// Added to every request.
    pub latency_ms: u64,
    /// Extra random latency, uniform in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Probability of answering a 5xx (500/502/503 drawn evenly).
    pub error_rate: f64,
    /// Probability of hanging for `hang_ms` before answering (past a client's timeout).
    pub timeout_rate: f64,
    pub hang_ms: u64,
    /// Answer the next N requests with 429 (HubSpot) regardless of the budget.
    pub burst_429: u32,
    /// Answer every request with 429 (HubSpot) for this long after the configuration is set:
    /// a rate-limit window exhausted by someone else. Unlike `burst_429`, a client that backs off
    /// does not prolong it.
    pub throttle_ms: u64,
    /// Only requests whose path starts with this prefix are affected (empty: all but `/_sim`).
    pub path_prefix: String,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Error(u16),
    Hang(Duration),
    TooManyRequests,
}

#[derive(Debug)]
pub struct Faults {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: FaultConfig,
    rng: StdRng,
    /// End of the `throttle_ms` window.
    throttle_until: Option<Instant>,
    calls: BTreeMap<String, u64>,
    injected: BTreeMap<String, u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new(FaultConfig::default())
    }
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Self {
            inner: Mutex::new(Inner {
                rng: StdRng::seed_from_u64(config.seed),
                throttle_until: throttle_until(&config),
                config,
                calls: BTreeMap::new(),
                injected: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counters inconsistent in a way that
        // matters to a simulator; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the configuration and reseed the RNG.
    pub fn set(&self, config: FaultConfig) {
        let mut g = self.lock();
        g.rng = StdRng::seed_from_u64(config.seed);
        g.throttle_until = throttle_until(&config);
        g.config = config;
    }

    pub fn config(&self) -> FaultConfig {
        self.lock().config.clone()
    }

    /// Count a call to `endpoint` (e.g. `POST /crm/v3/objects/deals/batch/read`).
    pub fn count(&self, endpoint: &str) {
        *self.lock().calls.entry(endpoint.to_string()).or_default() += 1;
    }

    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.lock().calls.clone()
    }

    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.lock().injected.clone()
    }

    pub fn reset_counters(&self) {
        let mut g = self.lock();
        g.calls.clear();
        g.injected.clear();
    }

    /// Decide the fault for a request to `path`, plus the latency to add before answering.
    pub fn decide(&self, path: &str) -> (Fault, Duration) {
        let mut g = self.lock();
        if path.starts_with("/_sim") || !path.starts_with(g.config.path_prefix.as_str()) {
            return (Fault::None, Duration::ZERO);
        }
        let c = g.config.clone();
        let jitter = if c.jitter_ms > 0 {
            g.rng.random_range(0..=c.jitter_ms)
        } else {
            0
        };
        let latency = Duration::from_millis(c.latency_ms + jitter);
        let throttled = g.throttle_until.is_some_and(|end| Instant::now() < end);
        let fault = if c.burst_429 > 0 {
            g.config.burst_429 -= 1;
            Fault::TooManyRequests
        } else if throttled {
            Fault::TooManyRequests
        } else if c.timeout_rate > 0.0 && g.rng.random_bool(c.timeout_rate.clamp(0.0, 1.0)) {
            Fault::Hang(Duration::from_millis(c.hang_ms))
        } else if c.error_rate > 0.0 && g.rng.random_bool(c.error_rate.clamp(0.0, 1.0)) {
            Fault::Error([500, 502, 503][g.rng.random_range(0..3)])
        } else {
            Fault::None
        };
        let label = match fault {
            Fault::None => None,
            Fault::Error(_) => Some("error"),
            Fault::Hang(_) => Some("timeout"),
            Fault::TooManyRequests => Some("429"),
        };
        if let Some(label) = label {
            *g.injected.entry(label.to_string()).or_default() += 1;
        }
        (fault, latency)
    }
}

fn throttle_until(config: &FaultConfig) -> Option<Instant> {
    (config.throttle_ms > 0).then(|| Instant::now() + Duration::from_millis(config.throttle_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_faults() {
        let cfg = FaultConfig {
            seed: 42,
            error_rate: 0.3,
            timeout_rate: 0.1,
            hang_ms: 5,
            ..Default::default()
        };
        let a = Faults::new(cfg.clone());
        let b = Faults::new(cfg);
        let run = |f: &Faults| (0..200).map(|_| f.decide("/api/x").0).collect::<Vec<_>>();
        let ra = run(&a);
        assert_eq!(ra, run(&b));
        assert!(ra.iter().any(|f| matches!(f, Fault::Error(_))));
        assert!(ra.iter().any(|f| matches!(f, Fault::Hang(_))));
        assert!(ra.contains(&Fault::None));
    }

    #[test]
    fn bursts_are_counted_down_and_admin_paths_are_exempt() {
        let f = Faults::new(FaultConfig {
            burst_429: 2,
            ..Default::default()
        });
        assert_eq!(f.decide("/_sim/state").0, Fault::None);
        assert_eq!(f.decide("/crm").0, Fault::TooManyRequests);
        assert_eq!(f.decide("/crm").0, Fault::TooManyRequests);
        assert_eq!(f.decide("/crm").0, Fault::None);
        assert_eq!(f.injected().get("429"), Some(&2));
    }

    #[test]
    fn a_throttle_window_answers_429_until_it_ends_however_many_requests() {
        let f = Faults::new(FaultConfig {
            throttle_ms: 150,
            path_prefix: "/crm".into(),
            ..Default::default()
        });
        for _ in 0..50 {
            assert_eq!(f.decide("/crm/v3/objects/deals").0, Fault::TooManyRequests);
        }
        assert_eq!(f.decide("/api/other").0, Fault::None);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(f.decide("/crm/v3/objects/deals").0, Fault::None);
        assert_eq!(f.injected().get("429"), Some(&50));
    }
}
