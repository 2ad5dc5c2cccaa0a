//! The running simulated portal: the state every handler shares (data, rate budgets, faults,
//! call statistics, webhook outbox) and the operations that span several of them — a write that
//! changes the store and then queues webhook events, a reset of everything.
//!
//! Locks are `std::sync::Mutex`es held only for in-memory work, never across an `.await`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::config::{HubSpotSimConfig, RateLimitConfig};
use super::rate_limit::RateLimiter;
use super::state::{Change, Store};
use super::webhooks::{ChangeSource, Webhooks};
use crate::sim::faults::{FaultConfig, Faults};

/// Call statistics (`GET /_sim/calls`), what tests assert API budgets and "zero 429s" on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallStats {
    /// Requests per endpoint, ids folded: `GET /crm/v3/objects/deals/{id}`.
    pub calls: BTreeMap<String, u64>,
    /// Sum of `calls`.
    pub total: u64,
    /// Answers per HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// 429s because a client exceeded its budget (what "zero 429s" means).
    pub throttled: u64,
    /// Every 429 answered: `throttled` plus injected bursts.
    pub too_many_requests: u64,
    /// Injected faults by kind (`error`, `timeout`, `429`), from the fault injector.
    pub injected: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Stats {
    statuses: BTreeMap<u16, u64>,
    throttled: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Handlers never panic while holding these locks in a way that corrupts plain data; a
    // simulator keeps serving rather than cascading a test's panic into every other request.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
pub struct Portal {
    store: Mutex<Store>,
    pub faults: Faults,
    /// The fault configuration at start, restored by `reset`.
    initial_faults: FaultConfig,
    limiter: Mutex<RateLimiter>,
    tokens: RwLock<Vec<String>>,
    pub webhooks: Webhooks,
    stats: Mutex<Stats>,
    pub unset_as_null: bool,
    /// Cancelled on shutdown: hangs, latencies and webhook retries stop waiting.
    pub cancel: CancellationToken,
}

impl Portal {
    pub fn new(config: &HubSpotSimConfig, webhooks: Webhooks, cancel: CancellationToken) -> Self {
        let first_id = config.first_object_id.unwrap_or_else(|| {
            // Ten-digit-plus ids that differ between runs (seconds since 2020 × 1000).
            let secs = chrono::Utc::now()
                .timestamp()
                .saturating_sub(1_577_836_800)
                .max(0);
            10_000_000_000 + u64::try_from(secs).unwrap_or(0) * 1_000
        });
        Self {
            store: Mutex::new(Store::new(first_id)),
            faults: Faults::new(config.faults.clone()),
            initial_faults: config.faults.clone(),
            limiter: Mutex::new(RateLimiter::new(config.rate_limits.clone())),
            tokens: RwLock::new(config.tokens.clone()),
            webhooks,
            stats: Mutex::new(Stats::default()),
            unset_as_null: config.unset_properties_as_null,
            cancel,
        }
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub fn limiter(&self) -> MutexGuard<'_, RateLimiter> {
        lock(&self.limiter)
    }

    pub fn set_rate_limits(&self, config: RateLimitConfig) {
        self.limiter().set_config(config);
    }

    pub fn token_accepted(&self, token: &str) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|t| t == token)
    }

    pub fn set_tokens(&self, tokens: Vec<String>) {
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = tokens;
    }

    pub fn record_status(&self, status: u16) {
        *lock(&self.stats).statuses.entry(status).or_default() += 1;
    }

    pub fn record_throttled(&self) {
        lock(&self.stats).throttled += 1;
    }

    pub fn call_stats(&self) -> CallStats {
        let calls = self.faults.calls();
        let stats = lock(&self.stats);
        CallStats {
            total: calls.values().sum(),
            calls,
            statuses: stats.statuses.clone(),
            throttled: stats.throttled,
            too_many_requests: stats.statuses.get(&429).copied().unwrap_or(0),
            injected: self.faults.injected(),
        }
    }

    pub fn reset_calls(&self) {
        self.faults.reset_counters();
        *lock(&self.stats) = Stats::default();
    }

    /// Queue the webhook events the subscriptions ask for.
    pub fn emit(&self, changes: Vec<Change>, source: ChangeSource) {
        if !changes.is_empty() {
            self.webhooks.emit(changes, source);
        }
    }

    /// Back to an empty portal: data, custom properties, counters, budgets, the initial fault
    /// configuration, the webhook log. Webhook configuration and tokens stay; ids keep counting.
    pub fn reset(&self) {
        self.store().reset();
        self.limiter().reset();
        self.faults.set(self.initial_faults.clone());
        self.reset_calls();
        self.webhooks.clear_log();
    }
}
