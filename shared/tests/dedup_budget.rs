//! Redis dedup markers and the shared HubSpot rate budget against the real Redis (and, for outage
//! tests, a private `redis-server` this test starts and stops, or a port nothing listens on).
//! Every test uses its own namespace and deletes its keys.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use shared::budget::{Bucket, BudgetError, BudgetLimits, Rate, RateBudget, TryAcquire};
use shared::config::BudgetConfig;
use shared::dedup::{Dedup, LeaseResult, ReleaseResult, SeenResult};
use shared::names::Names;

const REDIS_URL: &str = "redis://127.0.0.1:6379";
const UNREACHABLE: &str = "redis://127.0.0.1:1";

/// A unique namespace; [`Ns::cleanup`] deletes its Redis keys (SCAN + DEL) at the end of a test.
struct Ns {
    names: Names,
}

impl Ns {
    fn new() -> Self {
        Self {
            names: Names::new(format!("t{}", uuid::Uuid::now_v7().simple())),
        }
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(REDIS_URL)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("the test Redis runs on 127.0.0.1:6379")
    }

    async fn keys(&self) -> Vec<String> {
        let mut conn = self.raw().await;
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.names.namespace()))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("scan");
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    async fn cleanup(&self) {
        let keys = self.keys().await;
        if !keys.is_empty() {
            let mut conn = self.raw().await;
            let _: () = conn.del(keys).await.expect("del");
        }
        assert!(self.keys().await.is_empty(), "namespace cleaned up");
    }

    fn dedup(&self) -> Dedup {
        Dedup::connect(REDIS_URL, self.names.clone()).expect("lazy connect")
    }

    fn budget(&self, url: &str, limits: BudgetLimits) -> RateBudget {
        RateBudget::connect(url, self.names.clone(), "62515", limits).expect("lazy connect")
    }
}

/// R requests per `period` for both rolling buckets, no daily cap.
fn limits(limit: u32, period: Duration) -> BudgetLimits {
    BudgetLimits {
        general: Rate::new(limit, period),
        search: Rate::new(limit, period),
        daily: None,
        ..BudgetLimits::from_config(&BudgetConfig::default())
    }
}

async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// dedup

#[tokio::test]
async fn seen_marks_first_and_drops_repeats() {
    let ns = Ns::new();
    let d = ns.dedup();
    let ttl = Duration::from_secs(60);
    assert_eq!(
        d.seen("mapper", "hubspot:1:2", ttl).await.expect("ok"),
        SeenResult::New
    );
    assert_eq!(
        d.seen("mapper", "hubspot:1:2", ttl).await.expect("ok"),
        SeenResult::Duplicate
    );
    assert_eq!(
        d.seen("other", "hubspot:1:2", ttl).await.expect("ok"),
        SeenResult::New,
        "per consumer"
    );
    assert_eq!(
        d.seen("mapper", "hubspot:1:3", ttl).await.expect("ok"),
        SeenResult::New
    );

    let key = ns.names.seen_key("mapper", "hubspot:1:2");
    let ttl_left: i64 = ns.raw().await.ttl(&key).await.expect("ttl");
    assert!((55..=60).contains(&ttl_left), "EX ttl set: {ttl_left}");

    assert_eq!(
        d.forget("mapper", "hubspot:1:2").await.expect("ok"),
        Some(true)
    );
    assert_eq!(
        d.forget("mapper", "hubspot:1:2").await.expect("ok"),
        Some(false)
    );
    assert_eq!(
        d.seen("mapper", "hubspot:1:2", ttl).await.expect("ok"),
        SeenResult::New,
        "after forget"
    );
    assert!(
        d.seen("mapper", "", ttl).await.is_err(),
        "empty key is a caller bug"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn seen_by_lets_the_same_message_through_again() {
    let ns = Ns::new();
    let d = ns.dedup();
    let ttl = Duration::from_secs(60);
    assert_eq!(
        d.seen_by("mapper", "k", "msg-1", ttl).await.expect("ok"),
        SeenResult::New
    );
    assert_eq!(
        d.seen_by("mapper", "k", "msg-1", ttl).await.expect("ok"),
        SeenResult::New,
        "a retry of the same message is not its own duplicate"
    );
    assert_eq!(
        d.seen_by("mapper", "k", "msg-2", ttl).await.expect("ok"),
        SeenResult::Duplicate
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn lease_is_exclusive_and_released_only_by_its_holder() {
    let ns = Ns::new();
    let a = ns.dedup();
    let b = ns.dedup();
    let ttl = Duration::from_secs(30);
    let LeaseResult::Acquired(lease) = a.acquire_lease("cmd-1", "worker-a", ttl).await.expect("ok")
    else {
        panic!("first lease is acquired");
    };
    assert!(lease.value().starts_with("worker-a/"));
    let busy = b.acquire_lease("cmd-1", "worker-b", ttl).await.expect("ok");
    assert_eq!(
        busy,
        LeaseResult::Busy {
            holder: Some(lease.value().to_string())
        }
    );
    let pttl: i64 = ns
        .raw()
        .await
        .pttl(ns.names.lease_key("cmd-1"))
        .await
        .expect("pttl");
    assert!(pttl > 25_000 && pttl <= 30_000, "PX ttl set: {pttl}");

    // A second lease of the same worker id (another task) must not release the first.
    let LeaseResult::Acquired(other) = a.acquire_lease("cmd-2", "worker-a", ttl).await.expect("ok")
    else {
        panic!("other key is free");
    };
    let forged = match b.acquire_lease("cmd-2", "worker-a", ttl).await.expect("ok") {
        LeaseResult::Busy { .. } => other.clone(),
        r => panic!("unexpected {r:?}"),
    };
    assert_eq!(
        a.release_lease(&forged).await.expect("ok"),
        ReleaseResult::Released
    );
    assert_eq!(
        a.release_lease(&forged).await.expect("ok"),
        ReleaseResult::NotHeld
    );

    assert_eq!(
        a.release_lease(&lease).await.expect("ok"),
        ReleaseResult::Released
    );
    assert!(matches!(
        b.acquire_lease("cmd-1", "worker-b", ttl).await.expect("ok"),
        LeaseResult::Acquired(_)
    ));
    // `a`'s lease is gone; releasing it again must not delete `b`'s.
    assert_eq!(
        a.release_lease(&lease).await.expect("ok"),
        ReleaseResult::NotHeld
    );
    let holder: Option<String> = ns
        .raw()
        .await
        .get(ns.names.lease_key("cmd-1"))
        .await
        .expect("get");
    assert!(holder.is_some_and(|h| h.starts_with("worker-b/")));
    ns.cleanup().await;
}

#[tokio::test]
async fn lease_expires_on_its_own() {
    let ns = Ns::new();
    let d = ns.dedup();
    assert!(matches!(
        d.acquire_lease("k", "w1", Duration::from_millis(200))
            .await
            .expect("ok"),
        LeaseResult::Acquired(_)
    ));
    assert!(matches!(
        d.acquire_lease("k", "w2", Duration::from_millis(200))
            .await
            .expect("ok"),
        LeaseResult::Busy { .. }
    ));
    let started = Instant::now();
    eventually(Duration::from_secs(3), "the lease to expire", || async {
        matches!(
            d.acquire_lease("k", "w2", Duration::from_secs(5))
                .await
                .expect("ok"),
            LeaseResult::Acquired(_)
        )
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "it did not vanish early"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn done_marker_roundtrip() {
    let ns = Ns::new();
    let d = ns.dedup();
    assert_eq!(d.done("cmd-9").await.expect("ok"), None);
    assert!(
        d.mark_done("cmd-9", "SO-0001", Duration::from_secs(60))
            .await
            .expect("ok")
    );
    assert_eq!(
        d.done("cmd-9").await.expect("ok").as_deref(),
        Some("SO-0001")
    );
    let ttl: i64 = ns
        .raw()
        .await
        .ttl(ns.names.done_key("cmd-9"))
        .await
        .expect("ttl");
    assert!((55..=60).contains(&ttl), "{ttl}");
    ns.cleanup().await;
}

#[tokio::test]
async fn dedup_answers_unknown_quickly_when_redis_is_unreachable() {
    let d =
        Dedup::connect(UNREACHABLE, Names::new("tdown")).expect("construction does not need Redis");
    let started = Instant::now();
    let ttl = Duration::from_secs(60);
    assert_eq!(
        d.seen("mapper", "k", ttl).await.expect("ok"),
        SeenResult::Unknown
    );
    assert_eq!(
        d.seen_by("mapper", "k", "m", ttl).await.expect("ok"),
        SeenResult::Unknown
    );
    assert_eq!(
        d.acquire_lease("k", "w", ttl).await.expect("ok"),
        LeaseResult::Unavailable
    );
    assert!(!d.mark_done("k", "r", ttl).await.expect("ok"));
    assert_eq!(d.done("k").await.expect("ok"), None);
    assert_eq!(d.forget("mapper", "k").await.expect("ok"), None);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "six calls bounded by the 500 ms timeout, took {:?}",
        started.elapsed()
    );
}

/// A private `redis-server` on a free port, so the test can take Redis away and bring it back.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn dedup_works_through_redis_outages() {
    let mut redis = PrivateRedis {
        port: PrivateRedis::free_port(),
        child: None,
    };
    let d = Dedup::connect(&redis.url(), Names::new("tout")).expect("starts while Redis is down");
    let ttl = Duration::from_secs(60);
    assert_eq!(
        d.seen("mapper", "a", ttl).await.expect("ok"),
        SeenResult::Unknown
    );

    redis.start();
    eventually(
        Duration::from_secs(10),
        "dedup to reach Redis once it is up",
        || async { d.seen("mapper", "b", ttl).await.expect("ok") == SeenResult::New },
    )
    .await;
    assert_eq!(
        d.seen("mapper", "b", ttl).await.expect("ok"),
        SeenResult::Duplicate
    );

    redis.stop();
    let started = Instant::now();
    assert_eq!(
        d.seen("mapper", "c", ttl).await.expect("ok"),
        SeenResult::Unknown
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    redis.start();
    eventually(Duration::from_secs(10), "dedup to reconnect", || async {
        d.seen("mapper", "c", ttl).await.expect("ok") == SeenResult::New
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// rate budget

/// Most grants in any half-open window `[t, t + period)`.
fn max_in_window(times_us: &mut [u128], period: Duration) -> usize {
    times_us.sort_unstable();
    let p = period.as_micros();
    let mut best = 0;
    let mut j = 0;
    for i in 0..times_us.len() {
        while j < times_us.len() && times_us[j] < times_us[i] + p {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

const R: u32 = 20;
const PERIOD: Duration = Duration::from_secs(2);
const RUN: Duration = Duration::from_secs(6);

fn assert_shared_budget(times: &mut [u128], start_us: u128, clients: usize) {
    let end_us = start_us + RUN.as_micros();
    let used = times
        .iter()
        .filter(|t| **t >= start_us && **t < end_us)
        .count();
    let peak = max_in_window(times, PERIOD);
    let capacity = R as usize * (RUN.as_micros() / PERIOD.as_micros()) as usize;
    println!(
        "{clients} clients: {used} grants in {RUN:?} (capacity {capacity}), peak {peak} per {PERIOD:?}"
    );
    assert!(
        peak <= R as usize,
        "{peak} grants within one {PERIOD:?} window exceed {R}"
    );
    assert!(
        used * 10 >= capacity * 9,
        "only {used} of {capacity} used under saturation"
    );
}

#[tokio::test]
async fn three_tasks_with_own_connections_share_one_budget() {
    let ns = Ns::new();
    let start_us = unix_us() + 200_000;
    let mut handles = Vec::new();
    for _ in 0..3 {
        // Each task has its own connection: sharing happens in Redis only.
        let budget = ns.budget(REDIS_URL, limits(R, PERIOD));
        handles.push(tokio::spawn(async move {
            let mut times = Vec::new();
            tokio::time::sleep(Duration::from_micros((start_us - unix_us()) as u64)).await;
            while unix_us() < start_us + RUN.as_micros() {
                budget
                    .acquire(Bucket::General)
                    .await
                    .expect("granted within max_wait");
                times.push(unix_us());
            }
            times
        }));
    }
    let mut all = Vec::new();
    let mut per_task = Vec::new();
    for h in handles {
        let t = h.await.expect("task");
        per_task.push(t.len());
        all.extend(t);
    }
    assert!(
        per_task.iter().all(|n| *n >= 5),
        "every task got a share: {per_task:?}"
    );
    assert_shared_budget(&mut all, start_us, 3);
    ns.cleanup().await;
}

/// The child process of the multi-process test: a `[[bin]]` of this package, which Cargo builds
/// for every integration test run.
fn budget_client_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_l2l-budget-test-client"))
}

#[tokio::test]
async fn three_processes_share_one_budget() {
    let ns = Ns::new();
    let exe = budget_client_exe();
    let start_us = unix_us() + 1_000_000;
    let children: Vec<Child> = (0..3)
        .map(|_| {
            Command::new(&exe)
                .args([
                    REDIS_URL,
                    ns.names.namespace(),
                    "62515",
                    &R.to_string(),
                    &PERIOD.as_millis().to_string(),
                    &start_us.to_string(),
                    &RUN.as_millis().to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn budget_client")
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("join");
    let mut all = Vec::new();
    for out in outputs {
        assert!(
            out.status.success(),
            "budget_client failed: {:?}",
            out.status
        );
        let times: Vec<u128> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().expect("timestamp line"))
            .collect();
        assert!(
            times.len() >= 5,
            "every process got a share: {}",
            times.len()
        );
        all.extend(times);
    }
    assert_shared_budget(&mut all, start_us, 3);
    ns.cleanup().await;
}

#[tokio::test]
async fn penalize_slows_every_client() {
    let ns = Ns::new();
    let a = ns.budget(REDIS_URL, limits(R, PERIOD));
    let b = ns.budget(REDIS_URL, limits(R, PERIOD));
    a.acquire(Bucket::General).await.expect("first");
    b.penalize(Bucket::General, Duration::from_millis(1500))
        .await;
    b.penalize(Bucket::General, Duration::from_millis(100))
        .await; // never moves backwards
    match a.try_acquire(Bucket::General).await {
        TryAcquire::Wait(w) => assert!(w > Duration::from_millis(1300), "{w:?}"),
        TryAcquire::Granted => panic!("a penalized bucket granted at once"),
    }
    let started = Instant::now();
    a.acquire(Bucket::General).await.expect("after the penalty");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );
    // The search bucket is separate and unaffected.
    assert_eq!(a.try_acquire(Bucket::Search).await, TryAcquire::Granted);
    ns.cleanup().await;
}

#[tokio::test]
async fn daily_cap_blocks_without_consuming_the_rolling_bucket() {
    let ns = Ns::new();
    let lim = BudgetLimits {
        daily: Some(Rate::new(3, Duration::from_secs(24 * 3600))),
        ..limits(100, Duration::from_secs(10))
    };
    let budget = ns.budget(REDIS_URL, lim);
    for _ in 0..3 {
        assert_eq!(
            budget.try_acquire(Bucket::General).await,
            TryAcquire::Granted
        );
    }
    let mut raw = ns.raw().await;
    let tat_before: Option<String> = raw.get(budget.key(Bucket::General)).await.expect("get");
    assert!(matches!(
        budget.try_acquire(Bucket::General).await,
        TryAcquire::Wait(_)
    ));
    assert!(
        matches!(
            budget.try_acquire(Bucket::Search).await,
            TryAcquire::Wait(_)
        ),
        "search counts too"
    );
    let tat_after: Option<String> = raw.get(budget.key(Bucket::General)).await.expect("get");
    assert_eq!(tat_before, tat_after, "a refused request consumes nothing");
    match budget.try_acquire(Bucket::General).await {
        TryAcquire::Wait(w) => assert!(
            w > Duration::ZERO && w <= Duration::from_secs(24 * 3600),
            "{w:?}"
        ),
        TryAcquire::Granted => panic!("granted past the daily cap"),
    }
    let err = tokio::time::timeout(
        Duration::from_secs(2),
        RateBudget::with_limits(
            redis_conn(),
            ns.names.clone(),
            "62515",
            BudgetLimits {
                max_wait: Duration::from_millis(100),
                ..budget.limits().clone()
            },
        )
        .acquire(Bucket::General),
    )
    .await
    .expect("gives up instead of blocking");
    assert!(matches!(
        err,
        Err(BudgetError::Exhausted {
            bucket: Bucket::General,
            ..
        })
    ));
    ns.cleanup().await;
}

fn redis_conn() -> redis::aio::ConnectionManager {
    shared::redis_conn::connect(REDIS_URL).expect("url")
}

#[tokio::test]
async fn unreachable_redis_falls_back_to_a_slow_local_limit() {
    let recorder = shared::telemetry::prometheus();
    let ns = Ns::new();
    let budget = ns.budget(UNREACHABLE, limits(R, PERIOD));
    let started = Instant::now();
    for _ in 0..4 {
        tokio::time::timeout(Duration::from_secs(5), budget.acquire(Bucket::General))
            .await
            .expect("never blocks forever")
            .expect("granted locally");
    }
    let took = started.elapsed();
    // Local rate = (R - 1) / PERIOD / 4 = one per ~421 ms: the 3 waits take ≥ 1.2 s.
    assert!(
        took >= Duration::from_millis(1200),
        "fallback is slower than the shared rate: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "but still grants: {took:?}");
    let rendered = recorder.render();
    assert!(
        rendered.contains("l2l_budget_fallback_total"),
        "fallback is counted"
    );
}
