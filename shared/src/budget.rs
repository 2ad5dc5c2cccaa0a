//! HubSpot's rate limits as one budget per portal, shared by every replica of every binary through
//! Redis (DESIGN §6).
//!
//! # Algorithm
//! `General` and `Search` are GCRA limiters (a token bucket kept as one timestamp, the *theoretical
//! arrival time*). HubSpot counts requests in a **rolling** window ("100 per 10 s"), which a plain
//! token bucket of capacity R and rate R/period would exceed (a full burst plus a period of refill
//! is almost 2R in one window). So a limit of R per period becomes a burst of `b = max(1, R/20)`
//! and a steady rate of `R - b` per period: no window of length `period` ever holds more than R
//! grants (R - 1 when `b > 1`, leaving a request of headroom for network jitter), and a saturated
//! budget still uses `(R - b)/R` of it (95 % for R = 20 or 100; 3 of 4 for search's 4/s).
//! When `b = 1` there is no tolerance to absorb a caller that wakes a few milliseconds late, and
//! every late grant would push all later ones back (measured: ~8 % of the budget lost on a loaded
//! machine); half an interval of catch-up slack fixes that at the cost of the headroom request.
//!
//! `Daily` is a counter per fixed UTC day (per `period` since the epoch): HubSpot resets its daily
//! cap at midnight, not on a rolling basis. A `General` or `Search` request also takes a `Daily`
//! token; both are checked and taken in the same script, so a request refused by one bucket never
//! consumes the other.
//!
//! Everything happens in ONE Lua script (EVALSHA) that reads the clock with Redis `TIME`, so any
//! number of processes share the budget atomically and their clock skew does not matter. The
//! script never sleeps; it answers "granted" or "retry in N µs", and [`RateBudget::acquire`] sleeps
//! that long in the caller.
//!
//! # 429s
//! [`RateBudget::penalize`] pushes a bucket's next-allowed time `retry_after` into the future in
//! Redis, so after one 429 every process slows down, not just the one that was told.
//!
//! # Redis unavailable
//! The budget falls back to an in-process limiter with each rate divided by
//! [`BudgetLimits::fallback_divisor`] (a guess at the number of replicas; HubSpot's own 429s remain
//! the backstop), logs (at most every 30 s), counts `l2l_budget_fallback_total`, and re-tries Redis
//! after a second. A wait longer than [`BudgetLimits::max_wait`] (a daily cap used up, a long
//! penalty) is returned as [`BudgetError::Exhausted`] instead of blocking, so the caller can put the
//! message on its retry ladder.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::config::BudgetConfig;
use crate::names::Names;
use crate::redis_conn::{self, LogThrottle};

/// Histogram, label `bucket`: time spent in [`RateBudget::acquire`] (seconds).
pub const METRIC_WAIT: &str = "l2l_budget_wait_seconds";
/// Counter, label `bucket`: requests granted.
pub const METRIC_ACQUIRED: &str = "l2l_budget_acquired_total";
/// Counter, label `bucket`: penalties after a 429.
pub const METRIC_PENALTIES: &str = "l2l_budget_penalties_total";
/// Counter, label `bucket`: decisions made by the local fallback because Redis did not answer.
pub const METRIC_FALLBACK: &str = "l2l_budget_fallback_total";
/// Counter, label `bucket`: acquisitions given up because the wait exceeded `max_wait`.
pub const METRIC_EXHAUSTED: &str = "l2l_budget_exhausted_total";

/// After a Redis failure, decide locally for this long before asking Redis again, so a
/// black-holed Redis does not cost every request a timeout.
const REDIS_RECHECK: Duration = Duration::from_secs(1);

/// The one script. KEYS are bucket keys; ARGV[1] is `acquire` or `penalize`; then per key four
/// values: kind (`gcra` | `window`) and three parameters:
/// - `gcra`: emission interval T (µs), tolerance τ (µs), catch-up slack (µs); state: TAT (µs) as a
///   string. The slack lets a grant that comes a little late (the caller woke up late) keep its
///   place in the schedule instead of pushing every later grant back;
/// - `window`: limit (count), window length (µs), unused; state: hash {w: window index, n: count,
///   b: blocked-until µs}.
///
/// `penalize` takes one key plus ARGV[6] = delay (µs). Returns `{granted, wait_us, now_us}`.
/// Numbers are formatted with `%.0f`: Lua's default formatting would write 1.7e+15.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function int(x) return string.format('%.0f', x) end
local function ttl_ms(until_us) return int(math.max(1, math.ceil((until_us - now) / 1000)) + 1000) end

if ARGV[1] == 'penalize' then
  local kind, b, delay = ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[6])
  if kind == 'gcra' then
    local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
    local pushed = now + delay + b
    if pushed > tat then
      redis.call('SET', KEYS[1], int(pushed), 'PX', ttl_ms(pushed))
    end
  else
    local blocked = tonumber(redis.call('HGET', KEYS[1], 'b') or '0') or 0
    local untl = now + delay
    if untl > blocked then
      redis.call('HSET', KEYS[1], 'b', int(untl))
      redis.call('PEXPIRE', KEYS[1], ttl_ms(math.max(untl, (math.floor(now / b) + 1) * b)))
    end
  end
  return {1, 0, now}
end

local wait = 0
local st = {}
for i = 1, #KEYS do
  local base = 2 + (i - 1) * 4
  local kind, a, b, c = ARGV[base], tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  if kind == 'gcra' then
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
    if tat < now - c then tat = now - c end
    local allow_at = tat - b
    if allow_at - now > wait then wait = allow_at - now end
    st[i] = {tat + a}
  else
    local h = redis.call('HMGET', KEYS[i], 'w', 'n', 'b')
    local w = math.floor(now / b)
    local n = 0
    if tonumber(h[1]) == w then n = tonumber(h[2]) or 0 end
    local blocked = tonumber(h[3] or '0') or 0
    if blocked - now > wait then wait = blocked - now end
    if n >= a and (w + 1) * b - now > wait then wait = (w + 1) * b - now end
    st[i] = {w, n + 1, math.max((w + 1) * b, blocked)}
  end
end
if wait > 0 then
  return {0, wait, now}
end
for i = 1, #KEYS do
  if ARGV[2 + (i - 1) * 4] == 'gcra' then
    redis.call('SET', KEYS[i], int(st[i][1]), 'PX', ttl_ms(st[i][1]))
  else
    redis.call('HSET', KEYS[i], 'w', int(st[i][1]), 'n', int(st[i][2]))
    redis.call('PEXPIRE', KEYS[i], ttl_ms(st[i][3]))
  end
end
return {1, 0, now}
";

/// One of HubSpot's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Every non-search request (`per_10s` per 10 s).
    General,
    /// The CRM search endpoints (`search_per_second` per second).
    Search,
    /// Requests per day; taken together with `General` and `Search`.
    Daily,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::General => "general",
            Bucket::Search => "search",
            Bucket::Daily => "daily",
        }
    }
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `limit` requests per rolling `period` (or per fixed period, for `Daily`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

impl Rate {
    pub fn new(limit: u32, period: Duration) -> Self {
        Self { limit, period }
    }
}

/// The budget's shape. [`BudgetLimits::from_config`] gives HubSpot's real periods; tests build
/// their own with short periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetLimits {
    pub general: Rate,
    pub search: Rate,
    /// `None`: no daily cap.
    pub daily: Option<Rate>,
    /// The local fallback grants `1/fallback_divisor` of each rate (assumes that many replicas).
    pub fallback_divisor: u32,
    /// Longest total wait [`RateBudget::acquire`] accepts before returning [`BudgetError::Exhausted`].
    pub max_wait: Duration,
    /// Bound on one Redis round trip.
    pub redis_timeout: Duration,
}

impl BudgetLimits {
    pub fn from_config(cfg: &BudgetConfig) -> Self {
        Self {
            general: Rate::new(cfg.per_10s, Duration::from_secs(10)),
            search: Rate::new(cfg.search_per_second, Duration::from_secs(1)),
            daily: (cfg.daily > 0).then(|| Rate::new(cfg.daily, Duration::from_secs(24 * 3600))),
            fallback_divisor: 4,
            max_wait: Duration::from_secs(60),
            redis_timeout: Duration::from_millis(250),
        }
    }

    fn rate(&self, bucket: Bucket) -> Option<Rate> {
        match bucket {
            Bucket::General => Some(self.general),
            Bucket::Search => Some(self.search),
            Bucket::Daily => self.daily,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The budget cannot grant within `max_wait`; nothing was consumed. Transient.
    #[error("HubSpot {bucket} budget exhausted; next slot in {retry_after:?}")]
    Exhausted {
        bucket: Bucket,
        retry_after: Duration,
    },
}

/// Answer of [`RateBudget::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryAcquire {
    Granted,
    /// Nothing was taken; ask again after this long.
    Wait(Duration),
}

/// How one bucket is limited, in the units the script takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algo {
    Gcra {
        interval_us: u64,
        tolerance_us: u64,
        slack_us: u64,
    },
    Window {
        limit: u64,
        window_us: u64,
    },
}

impl Algo {
    fn for_bucket(bucket: Bucket, rate: Rate) -> Self {
        let period_us = u64::try_from(rate.period.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let limit = u64::from(rate.limit.max(1));
        match bucket {
            Bucket::Daily => Algo::Window {
                limit,
                window_us: period_us,
            },
            Bucket::General | Bucket::Search => {
                let burst = (limit / 20).max(1);
                let steady = limit.saturating_sub(burst).max(1);
                let interval_us = period_us.div_ceil(steady);
                let tolerance_us = (burst - 1) * interval_us;
                Algo::Gcra {
                    interval_us,
                    tolerance_us,
                    // With a tolerance, a late caller already keeps its place; without one (R < 40)
                    // half an interval of catch-up costs the one request of headroom, no more.
                    slack_us: if tolerance_us == 0 {
                        interval_us / 2
                    } else {
                        0
                    },
                }
            }
        }
    }

    /// The same limit at `1/divisor` of the rate, no burst: what one process may take alone.
    fn divided(self, divisor: u32) -> Self {
        let d = u64::from(divisor.max(1));
        match self {
            Algo::Gcra { interval_us, .. } => Algo::Gcra {
                interval_us: interval_us.saturating_mul(d),
                tolerance_us: 0,
                slack_us: 0,
            },
            Algo::Window { limit, window_us } => Algo::Window {
                limit: (limit / d).max(1),
                window_us,
            },
        }
    }

    fn args(self) -> (&'static str, u64, u64, u64) {
        match self {
            Algo::Gcra {
                interval_us,
                tolerance_us,
                slack_us,
            } => ("gcra", interval_us, tolerance_us, slack_us),
            Algo::Window { limit, window_us } => ("window", limit, window_us, 0),
        }
    }
}

/// A shared HubSpot rate budget for one portal. Cheap to clone; clones share the fallback state.
#[derive(Clone)]
pub struct RateBudget {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    names: Names,
    portal: String,
    limits: BudgetLimits,
    script: redis::Script,
    /// Until when to skip Redis after a failure.
    redis_down_until: Mutex<Option<Instant>>,
    local: Mutex<LocalLimiter>,
    log: LogThrottle,
}

impl std::fmt::Debug for RateBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateBudget")
            .field("namespace", &self.inner.names.namespace())
            .field("portal", &self.inner.portal)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl RateBudget {
    /// HubSpot's limits from the configuration.
    pub fn new(
        conn: ConnectionManager,
        names: Names,
        portal: impl Into<String>,
        cfg: &BudgetConfig,
    ) -> Self {
        Self::with_limits(conn, names, portal, BudgetLimits::from_config(cfg))
    }

    pub fn with_limits(
        conn: ConnectionManager,
        names: Names,
        portal: impl Into<String>,
        limits: BudgetLimits,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn,
                names,
                portal: portal.into(),
                limits,
                script: redis::Script::new(SCRIPT),
                redis_down_until: Mutex::new(None),
                local: Mutex::new(LocalLimiter::new()),
                log: LogThrottle::new(Duration::from_secs(30)),
            }),
        }
    }

    /// Connect lazily (succeeds while Redis is down). Must be called inside a Tokio runtime.
    pub fn connect(
        url: &str,
        names: Names,
        portal: impl Into<String>,
        limits: BudgetLimits,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self::with_limits(
            redis_conn::connect(url)?,
            names,
            portal,
            limits,
        ))
    }

    pub fn limits(&self) -> &BudgetLimits {
        &self.inner.limits
    }

    pub fn portal(&self) -> &str {
        &self.inner.portal
    }

    /// The Redis key of one bucket.
    pub fn key(&self, bucket: Bucket) -> String {
        self.inner
            .names
            .budget_key(&self.inner.portal, bucket.as_str())
    }

    /// Wait until `bucket` (and the daily cap) grants one request, then take it. Gives up with
    /// [`BudgetError::Exhausted`] when the total wait would pass `max_wait`; never blocks longer.
    /// Cancel-safe: nothing is taken until the moment it returns `Ok`.
    pub async fn acquire(&self, bucket: Bucket) -> Result<(), BudgetError> {
        let started = Instant::now();
        loop {
            match self.try_acquire(bucket).await {
                TryAcquire::Granted => {
                    metrics::histogram!(METRIC_WAIT, "bucket" => bucket.as_str())
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!(METRIC_ACQUIRED, "bucket" => bucket.as_str()).increment(1);
                    return Ok(());
                }
                TryAcquire::Wait(wait) => {
                    if started.elapsed() + wait > self.inner.limits.max_wait {
                        metrics::counter!(METRIC_EXHAUSTED, "bucket" => bucket.as_str())
                            .increment(1);
                        return Err(BudgetError::Exhausted {
                            bucket,
                            retry_after: wait,
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Take one request from `bucket` (and the daily cap) if it is available now; otherwise take
    /// nothing and say how long to wait.
    pub async fn try_acquire(&self, bucket: Bucket) -> TryAcquire {
        let plan = self.plan(bucket);
        if plan.is_empty() {
            return TryAcquire::Granted;
        }
        let mut invocation = self.inner.script.prepare_invoke();
        invocation.arg("acquire");
        for (b, algo) in &plan {
            let (kind, p1, p2, p3) = algo.args();
            invocation
                .key(self.key(*b))
                .arg(kind)
                .arg(p1)
                .arg(p2)
                .arg(p3);
        }
        if let Some(reply) = self.call_redis(&invocation, "acquire").await {
            return match reply.first() {
                Some(1) => TryAcquire::Granted,
                _ => TryAcquire::Wait(Duration::from_micros(
                    reply.get(1).copied().unwrap_or(1000).clamp(1, i64::MAX) as u64,
                )),
            };
        }
        metrics::counter!(METRIC_FALLBACK, "bucket" => bucket.as_str()).increment(1);
        let divisor = self.inner.limits.fallback_divisor;
        let local: Vec<(Bucket, Algo)> = plan
            .into_iter()
            .map(|(b, a)| (b, a.divided(divisor)))
            .collect();
        let mut limiter = self.inner.local.lock().unwrap_or_else(|p| p.into_inner());
        match limiter.acquire(&local) {
            0 => TryAcquire::Granted,
            wait_us => TryAcquire::Wait(Duration::from_micros(wait_us)),
        }
    }

    /// After a 429: no process may use `bucket` for `retry_after` (from now, by Redis's clock).
    /// Never lets the next-allowed time move backwards.
    pub async fn penalize(&self, bucket: Bucket, retry_after: Duration) {
        let Some(rate) = self.inner.limits.rate(bucket) else {
            return;
        };
        metrics::counter!(METRIC_PENALTIES, "bucket" => bucket.as_str()).increment(1);
        tracing::info!(bucket = bucket.as_str(), retry_after = ?retry_after, "HubSpot rate budget penalized");
        let algo = Algo::for_bucket(bucket, rate);
        let delay_us = u64::try_from(retry_after.as_micros()).unwrap_or(u64::MAX);
        let (kind, p1, p2, p3) = algo.args();
        let mut invocation = self.inner.script.prepare_invoke();
        invocation
            .arg("penalize")
            .key(self.key(bucket))
            .arg(kind)
            .arg(p1)
            .arg(p2)
            .arg(p3)
            .arg(delay_us);
        // Slow this process down too, in case Redis is (or goes) away.
        self.inner
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .penalize(
                bucket,
                algo.divided(self.inner.limits.fallback_divisor),
                delay_us,
            );
        let _ = self.call_redis(&invocation, "penalize").await;
    }

    /// Which buckets one request of `bucket` takes, with their limits.
    fn plan(&self, bucket: Bucket) -> Vec<(Bucket, Algo)> {
        let limits = &self.inner.limits;
        let mut plan = Vec::with_capacity(2);
        if let Some(rate) = limits.rate(bucket) {
            plan.push((bucket, Algo::for_bucket(bucket, rate)));
        }
        if bucket != Bucket::Daily
            && let Some(daily) = limits.daily
        {
            plan.push((Bucket::Daily, Algo::for_bucket(Bucket::Daily, daily)));
        }
        plan
    }

    async fn call_redis(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        op: &'static str,
    ) -> Option<Vec<i64>> {
        {
            let down = self
                .inner
                .redis_down_until
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if down.is_some_and(|until| Instant::now() < until) {
                return None;
            }
        }
        let mut conn = self.inner.conn.clone();
        let timeout = self.inner.limits.redis_timeout;
        let error =
            match tokio::time::timeout(timeout, invocation.invoke_async::<Vec<i64>>(&mut conn))
                .await
            {
                Ok(Ok(reply)) => {
                    *self
                        .inner
                        .redis_down_until
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = None;
                    return Some(reply);
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {timeout:?}"),
            };
        *self
            .inner
            .redis_down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + REDIS_RECHECK);
        if let Some(suppressed) = self.inner.log.allow() {
            tracing::warn!(
                operation = op,
                error = %error,
                suppressed,
                divisor = self.inner.limits.fallback_divisor,
                "Redis unavailable for the HubSpot rate budget; limiting locally at a fraction of the rate"
            );
        }
        None
    }
}

/// The script's algorithm in process memory, for when Redis is away. Times are µs since `epoch`.
#[derive(Debug)]
struct LocalLimiter {
    epoch: Instant,
    gcra_tat: std::collections::HashMap<Bucket, u64>,
    /// (window index, count, blocked until)
    windows: std::collections::HashMap<Bucket, (u64, u64, u64)>,
}

impl LocalLimiter {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            gcra_tat: Default::default(),
            windows: Default::default(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// 0 when granted (and taken), else the wait in µs (nothing taken).
    fn acquire(&mut self, plan: &[(Bucket, Algo)]) -> u64 {
        let now = self.now_us();
        let mut wait = 0u64;
        for (bucket, algo) in plan {
            match *algo {
                Algo::Gcra { tolerance_us, .. } => {
                    let tat = self.gcra_tat.get(bucket).copied().unwrap_or(now);
                    wait = wait.max(tat.saturating_sub(tolerance_us).saturating_sub(now));
                }
                Algo::Window { limit, window_us } => {
                    let w = now / window_us;
                    let (win, n, blocked) = self.windows.get(bucket).copied().unwrap_or((w, 0, 0));
                    let n = if win == w { n } else { 0 };
                    wait = wait.max(blocked.saturating_sub(now));
                    if n >= limit {
                        wait = wait.max((w + 1) * window_us - now);
                    }
                }
            }
        }
        if wait > 0 {
            return wait;
        }
        for (bucket, algo) in plan {
            match *algo {
                Algo::Gcra {
                    interval_us,
                    slack_us,
                    ..
                } => {
                    let tat = self
                        .gcra_tat
                        .get(bucket)
                        .copied()
                        .unwrap_or(now)
                        .max(now.saturating_sub(slack_us));
                    self.gcra_tat.insert(*bucket, tat + interval_us);
                }
                Algo::Window { window_us, .. } => {
                    let w = now / window_us;
                    let entry = self.windows.entry(*bucket).or_insert((w, 0, 0));
                    if entry.0 != w {
                        *entry = (w, 0, entry.2);
                    }
                    entry.1 += 1;
                }
            }
        }
        0
    }

    fn penalize(&mut self, bucket: Bucket, algo: Algo, delay_us: u64) {
        let now = self.now_us();
        match algo {
            Algo::Gcra { tolerance_us, .. } => {
                let tat = self.gcra_tat.entry(bucket).or_insert(0);
                *tat = (*tat).max(now.saturating_add(delay_us).saturating_add(tolerance_us));
            }
            Algo::Window { window_us, .. } => {
                let entry = self
                    .windows
                    .entry(bucket)
                    .or_insert((now / window_us, 0, 0));
                entry.2 = entry.2.max(now.saturating_add(delay_us));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grant k after the first can come no earlier than `t0 - slack - τ + k·T`, so a window of
    /// one period holds at most `ceil((P + slack + τ) / T)` grants: never more than R, and at
    /// least 90 % of R when saturated (R ≥ 20).
    #[test]
    fn gcra_parameters_respect_the_rolling_window() {
        for limit in [4u32, 20, 39, 40, 100, 190, 250] {
            let period = Duration::from_secs(10);
            let Algo::Gcra {
                interval_us,
                tolerance_us,
                slack_us,
            } = Algo::for_bucket(Bucket::General, Rate::new(limit, period))
            else {
                panic!("general is GCRA");
            };
            let period_us = period.as_micros() as u64;
            let peak = (period_us + slack_us + tolerance_us).div_ceil(interval_us);
            assert!(
                peak <= u64::from(limit),
                "limit {limit}: {peak} in a window"
            );
            if tolerance_us > 0 {
                assert!(
                    peak < u64::from(limit),
                    "limit {limit}: one request of headroom"
                );
            }
            let steady = period_us / interval_us;
            if limit >= 20 {
                assert!(
                    steady * 10 >= u64::from(limit) * 9,
                    "limit {limit}: only {steady}"
                );
            }
        }
    }

    #[test]
    fn local_limiter_spaces_and_penalizes() {
        let mut l = LocalLimiter::new();
        let plan = [(
            Bucket::General,
            Algo::Gcra {
                interval_us: 1_000_000,
                tolerance_us: 0,
                slack_us: 0,
            },
        )];
        assert_eq!(l.acquire(&plan), 0);
        let wait = l.acquire(&plan);
        assert!(wait > 900_000 && wait <= 1_000_000, "{wait}");
        l.penalize(Bucket::General, plan[0].1, 5_000_000);
        assert!(l.acquire(&plan) > 4_900_000);

        let daily = [(
            Bucket::Daily,
            Algo::Window {
                limit: 2,
                window_us: 3_600_000_000,
            },
        )];
        assert_eq!(l.acquire(&daily), 0);
        assert_eq!(l.acquire(&daily), 0);
        assert!(l.acquire(&daily) > 0);
    }

    #[test]
    fn fallback_divides_the_rate() {
        let a = Algo::Gcra {
            interval_us: 100,
            tolerance_us: 300,
            slack_us: 50,
        };
        assert_eq!(
            a.divided(4),
            Algo::Gcra {
                interval_us: 400,
                tolerance_us: 0,
                slack_us: 0,
            }
        );
        let w = Algo::Window {
            limit: 10,
            window_us: 5,
        };
        assert_eq!(
            w.divided(4),
            Algo::Window {
                limit: 2,
                window_us: 5
            }
        );
    }
}
