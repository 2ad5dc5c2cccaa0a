//! HubSpot's rate limits, per token: a rolling window (`per_10s` requests per 10 s), a separate
//! per-second budget for search, and a daily cap. Over budget the answer is 429 with the body of
//! `error_429_rate_limit.json` and the `X-HubSpot-RateLimit-*` headers (README §8); the headers
//! also ride on every answer of a non-search endpoint, as HubSpot's do.
//!
//! Rejected requests do not consume budget, so a client that backs off recovers once the oldest
//! accepted request leaves the window.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::config::RateLimitConfig;

/// Which limit was hit: HubSpot's `policyName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    TenSecondlyRolling,
    Secondly,
    Daily,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Self::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
            Self::Secondly => "SECONDLY",
            Self::Daily => "DAILY",
        }
    }
}

/// The numbers the `X-HubSpot-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max: u64,
    pub remaining: u64,
    pub interval_ms: u64,
    /// `None` when no daily cap is configured.
    pub daily: Option<(u64, u64)>,
    /// Whether this is the search budget (reported as `-Secondly`).
    pub search: bool,
}

impl Budget {
    /// Write the headers onto a response.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let mut put = |name: &'static str, value: u64| {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        };
        if self.search {
            put("x-hubspot-ratelimit-secondly", self.max);
            put("x-hubspot-ratelimit-secondly-remaining", self.remaining);
        }
        put("x-hubspot-ratelimit-max", self.max);
        put("x-hubspot-ratelimit-remaining", self.remaining);
        put(
            "x-hubspot-ratelimit-interval-milliseconds",
            self.interval_ms,
        );
        if let Some((daily, left)) = self.daily {
            put("x-hubspot-ratelimit-daily", daily);
            put("x-hubspot-ratelimit-daily-remaining", left);
        }
    }
}

/// The 429 answer: HubSpot's rate-limit body (`errorType`, `policyName`, `groupName`) and headers.
pub fn too_many_requests(policy: Policy, budget: &Budget, group: &str) -> Response {
    let window = match policy {
        Policy::TenSecondlyRolling => "ten_secondly_rolling",
        Policy::Secondly => "secondly",
        Policy::Daily => "daily",
    };
    let body = json!({
        "status": "error",
        "message": format!("You have reached your {window} limit."),
        "errorType": "RATE_LIMIT",
        "correlationId": uuid::Uuid::now_v7().to_string(),
        "policyName": policy.name(),
        "groupName": group,
    });
    let mut response = super::error::with_correlation_id(StatusCode::TOO_MANY_REQUESTS, body);
    budget.apply(response.headers_mut());
    response
}

#[derive(Debug, Default)]
struct TokenUsage {
    general: VecDeque<Instant>,
    search: VecDeque<Instant>,
    daily_used: u64,
}

/// Budgets of every token.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    tokens: HashMap<String, TokenUsage>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            tokens: HashMap::new(),
        }
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// New limits; usage so far is kept.
    pub fn set_config(&mut self, config: RateLimitConfig) {
        self.config = config;
    }

    /// Forget all usage.
    pub fn reset(&mut self) {
        self.tokens.clear();
    }

    /// Admit one request of `token` at `now` (consuming budget) or say which limit it hit.
    pub fn admit(
        &mut self,
        token: &str,
        search: bool,
        now: Instant,
    ) -> Result<Budget, (Policy, Budget)> {
        let c = self.config.clone();
        let usage = self.tokens.entry(token.to_string()).or_default();
        let (limit, window_ms, queue, policy) = if search {
            (
                u64::from(c.search_per_second),
                c.search_window_ms,
                &mut usage.search,
                Policy::Secondly,
            )
        } else {
            (
                u64::from(c.per_10s),
                c.window_ms,
                &mut usage.general,
                Policy::TenSecondlyRolling,
            )
        };
        let window = Duration::from_millis(window_ms);
        while queue
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            queue.pop_front();
        }
        let used = queue.len() as u64;
        let daily = (c.daily > 0).then_some(c.daily);
        let budget = |remaining: u64, daily_used: u64| Budget {
            max: limit,
            remaining,
            interval_ms: window_ms,
            daily: daily.map(|d| (d, d.saturating_sub(daily_used))),
            search,
        };
        if daily.is_some_and(|d| usage.daily_used >= d) {
            return Err((
                Policy::Daily,
                budget(limit.saturating_sub(used), usage.daily_used),
            ));
        }
        if limit > 0 && used >= limit {
            return Err((policy, budget(0, usage.daily_used)));
        }
        queue.push_back(now);
        usage.daily_used += 1;
        Ok(budget(limit.saturating_sub(used + 1), usage.daily_used))
    }

    /// The budget as it stands, without consuming any (for injected 429s: remaining 0).
    pub fn exhausted(&self, search: bool) -> Budget {
        let c = &self.config;
        Budget {
            max: u64::from(if search {
                c.search_per_second
            } else {
                c.per_10s
            }),
            remaining: 0,
            interval_ms: if search {
                c.search_window_ms
            } else {
                c.window_ms
            },
            daily: (c.daily > 0).then_some((c.daily, c.daily)),
            search,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per: u32, search: u32, daily: u64) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            per_10s: per,
            window_ms: 1_000,
            search_per_second: search,
            search_window_ms: 100,
            daily,
        })
    }

    #[test]
    fn rolling_window_refuses_then_recovers() {
        let mut l = limiter(3, 1, 0);
        let t0 = Instant::now();
        let remaining: Vec<u64> = (0..3)
            .map(|i| {
                l.admit("t", false, t0 + Duration::from_millis(i))
                    .expect("ok")
                    .remaining
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let (policy, b) = l
            .admit("t", false, t0 + Duration::from_millis(500))
            .expect_err("full");
        assert_eq!(
            (policy, b.remaining, b.max),
            (Policy::TenSecondlyRolling, 0, 3)
        );
        assert!(l.admit("other", false, t0).is_ok(), "budgets are per token");
        assert!(
            l.admit("t", false, t0 + Duration::from_millis(1_000))
                .is_ok(),
            "oldest left the window"
        );
    }

    #[test]
    fn search_has_its_own_budget_and_daily_caps_everything() {
        let mut l = limiter(10, 1, 3);
        let t0 = Instant::now();
        assert!(l.admit("t", true, t0).is_ok());
        assert_eq!(
            l.admit("t", true, t0).expect_err("secondly").0,
            Policy::Secondly
        );
        assert!(
            l.admit("t", false, t0).is_ok(),
            "search does not use the 10 s budget"
        );
        assert!(l.admit("t", true, t0 + Duration::from_millis(100)).is_ok());
        let (policy, b) = l
            .admit("t", false, t0 + Duration::from_millis(100))
            .expect_err("daily");
        assert_eq!(policy, Policy::Daily);
        assert_eq!(b.daily, Some((3, 0)));
    }
}
