//! The reliability suite (DESIGN §10): N won deals, every webhook delivered twice, while one kind
//! of fault at a time — and then all of them together — hits the pipeline: writers SIGKILLed at
//! random moments and restarted, broker connections cut and closed by `rabbitmqctl`, Redis
//! connections cut, ERPNext 5xx and timeouts, HubSpot 429 bursts, inserts that ERPNext commits
//! after the client gave up (late commits), and Redis forgetting everything. At the end: exactly N Sales
//! Orders with the right lines, every deal showing its Sales Order, one Customer per company,
//! nothing in a dead-letter queue, and every service draining to exit 0 on SIGTERM.
//!
//! The services run as child processes of the real binaries with a config file, as in production.
//! `CHAOS_SEED` replays a run (the seed is printed); `CHAOS_DEALS` sets N (default 200),
//! `CHAOS_SECONDS` how long faults are injected (default 20) and `CHAOS_GAP_MS` the longest pause
//! between two of them (default 800). A long run spreads its faults over most of the run:
//! `CHAOS_DEALS=5000 CHAOS_SECONDS=900 CHAOS_GAP_MS=8000 cargo nextest run --profile soak
//! -p l2l-tests --test reliability every_fault_at_once --no-capture`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use l2l_tests::sim::faults::FaultConfig;
use l2l_tests::sim::hubspot::{RateLimitConfig, WebhookUpdate};
use l2l_tests::stack::{SeededDeal, Stack, StackOptions};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shared::names::WorkQueue;
use shared::testkit::{TcpProxy, amqp_addr, close_broker_connections, queue_len};

const LINES: &[(&str, u32, f64)] = &[
    ("SKU-WIDGET", 2, 25.0),
    ("SKU-GADGET", 1, 40.0),
    ("SKU-SERVICE", 4, 150.0),
];

/// The services' retry ladder: short, so a run converges in seconds after the faults stop.
const CHAOS_TIERS_MS: [u64; 4] = [200, 1_000, 3_000, 5_000];

/// The service binaries Cargo built beside this test's own.
fn binary(name: &str) -> PathBuf {
    let demo = PathBuf::from(env!("CARGO_BIN_EXE_l2l-demo"));
    let path = demo
        .parent()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    assert!(
        path.exists(),
        "{} not built; run the suite with `cargo nextest run --workspace`",
        path.display()
    );
    path
}

/// One service child process, restartable.
struct Service {
    name: &'static str,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    kills: u32,
}

impl Service {
    fn new(name: &'static str, bin: &str, env: Vec<(String, String)>, logs: &Path) -> Self {
        Self {
            name,
            binary: binary(bin),
            env,
            log: logs.join(format!("{name}.log")),
            child: None,
            kills: 0,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.binary)
            .arg("run")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Warnings, plus what explains a slow drain: connection generations, the consumer
            // stopping, rate-budget penalties and 429s.
            .env(
                "RUST_LOG",
                "warn,shared::runtime::consumer=info,shared::shutdown=info,shared::budget=info,\
                 shared::hubspot=info",
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.kills += 1;
        }
    }

    /// The last `n` lines of the service's log, on stderr, to explain a failure.
    fn print_log_tail(&self, n: usize) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(n).collect();
        eprintln!(
            "--- {} (last lines) ---\n{}",
            self.name,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// SIGTERM and wait: a clean drain exits 0.
    fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One kind of fault the suite injects while the deals flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    /// SIGKILL a worker (never ingest: HubSpot would just retry) and restart it.
    SigkillWorker,
    /// Cut every connection through the broker proxy for a moment.
    BrokerCut,
    /// `rabbitmqctl close_connection` on the services' connections (an operator or a node).
    BrokerClose,
    /// Cut every connection through the Redis proxy for a moment.
    RedisCut,
    /// ERPNext answers 5xx and hangs past the client's timeout for a while.
    ErpNextErrors,
    /// HubSpot answers 429 to everything for a moment (the account's limit spent elsewhere).
    HubSpot429,
    /// ERPNext holds the next inserts of a doctype past the client's timeout and commits them
    /// later (gunicorn keeps working after the client gave up): the writer retries meanwhile.
    LateCommits,
    /// Redis forgets the namespace (restarted empty, or a failover without the recent writes):
    /// seen events, done markers, leases and applied times are gone.
    RedisFlush,
}

const EVERY_FAULT: [Fault; 8] = [
    Fault::SigkillWorker,
    Fault::BrokerCut,
    Fault::BrokerClose,
    Fault::RedisCut,
    Fault::ErpNextErrors,
    Fault::HubSpot429,
    Fault::LateCommits,
    Fault::RedisFlush,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_webhook_delivered_twice() {
    survive(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_sigkilled_at_random_and_restarted() {
    survive(&[Fault::SigkillWorker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_connections_cut_and_closed() {
    survive(&[Fault::BrokerCut, Fault::BrokerClose]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_connections_cut() {
    survive(&[Fault::RedisCut]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erpnext_5xx_and_timeouts() {
    survive(&[Fault::ErpNextErrors]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hubspot_429_bursts() {
    survive(&[Fault::HubSpot429]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_at_once() {
    survive(&EVERY_FAULT).await;
}

/// Which deals do not show their Sales Order yet, and when that last changed.
struct Convergence<'a> {
    pending: Vec<&'a SeededDeal>,
    total: usize,
    /// Start of the run: the deals were won then.
    started: Instant,
    last_progress: Instant,
    last_report: Instant,
    /// When the last deal converged, measured from `started`.
    done_after: Option<Duration>,
}

impl<'a> Convergence<'a> {
    fn new(deals: &'a [SeededDeal], started: Instant) -> Self {
        Self {
            pending: deals.iter().collect(),
            total: deals.len(),
            started,
            last_progress: Instant::now(),
            last_report: Instant::now(),
            done_after: None,
        }
    }

    /// Re-check the deals still missing (only those, so a large N does not keep the simulator's
    /// lock busy); returns how many are still missing.
    fn poll(&mut self, stack: &Stack) -> usize {
        let before = self.pending.len();
        self.pending.retain(|d| {
            stack
                .deal_property(&d.deal_id, "erpnext_sales_order")
                .is_none()
        });
        if self.pending.len() < before {
            self.last_progress = Instant::now();
        }
        if self.pending.is_empty() && self.done_after.is_none() {
            self.done_after = Some(self.started.elapsed());
        }
        self.pending.len()
    }

    /// Print progress (`phase: k/N …`), at most once per `every`.
    fn report(&mut self, phase: &str, every: Duration) {
        if self.last_report.elapsed() > every {
            println!(
                "{phase}: {}/{} deals show their Sales Order after {:.0}s",
                self.total - self.pending.len(),
                self.total,
                self.started.elapsed().as_secs_f64()
            );
            self.last_report = Instant::now();
        }
    }
}

/// Win N deals (each webhook delivered twice) while `faults` are injected at random, then check
/// that the pipeline converged to exactly the right state.
async fn survive(faults: &[Fault]) {
    let seed: u64 = env_or("CHAOS_SEED", rand::random());
    let n: usize = env_or("CHAOS_DEALS", 200);
    println!("reliability run {faults:?}: CHAOS_SEED={seed} CHAOS_DEALS={n}");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut stack = Stack::start(StackOptions {
        services: false,
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    // Every webhook twice; HubSpot's limit is not what this suite tests, so give it room.
    stack
        .hubspot
        .set_webhooks(WebhookUpdate {
            duplicate: Some(true),
            ..WebhookUpdate::default()
        })
        .expect("webhooks");
    stack.hubspot.set_rate_limits(RateLimitConfig {
        per_10s: 5_000,
        window_ms: 10_000,
        search_per_second: 50,
        search_window_ms: 1_000,
        daily: 0,
    });

    // The children reach RabbitMQ and Redis through proxies the test can cut.
    let amqp = TcpProxy::start(&amqp_addr()).await.expect("amqp proxy");
    let redis = TcpProxy::start("127.0.0.1:6379")
        .await
        .expect("redis proxy");
    let ingest_addr = stack
        .take_ingest_listener()
        .expect("listener")
        .local_addr()
        .expect("addr");
    let s = &stack.settings;
    let logs = std::env::temp_dir().join(format!("l2l-chaos-{}", s.amqp.namespace));
    std::fs::create_dir_all(&logs).expect("log dir");
    let mut env: Vec<(String, String)> = vec![
        ("L2L_AMQP__URL".into(), amqp.amqp_url()),
        ("L2L_AMQP__NAMESPACE".into(), s.amqp.namespace.clone()),
        ("L2L_AMQP__RECONNECT_MAX_DELAY".into(), "500ms".into()),
        ("L2L_REDIS__URL".into(), format!("redis://{}", redis.addr())),
        ("L2L_REDIS__LEASE_TTL".into(), "3s".into()),
        (
            "L2L_WORKER__RETRY_TIERS".into(),
            format!(
                "[{}]",
                CHAOS_TIERS_MS
                    .iter()
                    .map(|ms| format!("\"{ms}ms\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        ("L2L_WORKER__QUICK_BASE_DELAY".into(), "20ms".into()),
        // Below the 20 s this suite waits for a SIGTERMed service to exit.
        ("L2L_WORKER__DRAIN_TIMEOUT".into(), "10s".into()),
        ("L2L_INGEST__LISTEN".into(), ingest_addr.to_string()),
        ("L2L_INGEST__PUBLIC_URL".into(), stack.ingest_url.clone()),
        (
            "L2L_HUBSPOT__BASE_URL".into(),
            s.hubspot.base_url.to_string(),
        ),
        (
            "L2L_HUBSPOT__ACCESS_TOKEN".into(),
            l2l_tests::stack::HUBSPOT_TOKEN.into(),
        ),
        (
            "L2L_HUBSPOT__CLIENT_SECRET".into(),
            l2l_tests::stack::HUBSPOT_CLIENT_SECRET.into(),
        ),
        ("L2L_HUBSPOT__BUDGET__PER_10S".into(), "4000".into()),
        ("L2L_HUBSPOT__BUDGET__SEARCH_PER_SECOND".into(), "40".into()),
        (
            "L2L_ERPNEXT__BASE_URL".into(),
            s.erpnext.base_url.to_string(),
        ),
        (
            "L2L_ERPNEXT__API_KEY".into(),
            l2l_tests::stack::ERPNEXT_API_KEY.into(),
        ),
        (
            "L2L_ERPNEXT__API_SECRET".into(),
            l2l_tests::stack::ERPNEXT_API_SECRET.into(),
        ),
        (
            "L2L_ERPNEXT__WEBHOOK_SECRET".into(),
            l2l_tests::stack::FRAPPE_WEBHOOK_SECRET.into(),
        ),
        ("L2L_ERPNEXT__TIMEOUT".into(), "1s".into()),
        ("L2L_MAPPING__ORDER__SUBMIT".into(), "true".into()),
    ];
    env.push(("L2L_ERPNEXT__TIME_ZONE".into(), s.erpnext.time_zone.clone()));
    let mut services = vec![
        Service::new("ingest", "ingest", env.clone(), &logs),
        Service::new("mapper", "mapper", env.clone(), &logs),
        Service::new("erp-writer-1", "erp-writer", env.clone(), &logs),
        Service::new("erp-writer-2", "erp-writer", env.clone(), &logs),
        Service::new("crm-writer", "crm-writer", env.clone(), &logs),
    ];
    for svc in &mut services {
        svc.start();
    }

    let deals: Vec<SeededDeal> = (0..n)
        .map(|i| {
            stack
                .seed_deal(i, 1 + i % 2, &LINES[..1 + i % 3])
                .expect("seed")
        })
        .collect();
    let started = Instant::now();
    let mut convergence = Convergence::new(&deals, started);
    for d in &deals {
        stack.win_deal(&d.deal_id).expect("win");
    }

    // Chaos while the deals flow.
    let mut actions: HashMap<Fault, u32> = HashMap::new();
    let mut closed_by_rabbitmqctl = 0;
    let chaos_for = Duration::from_secs(env_or("CHAOS_SECONDS", 20));
    // Pause between two faults: up to 800 ms by default; longer runs spread their faults out.
    let gap_ms: u64 = env_or("CHAOS_GAP_MS", 800_u64).max(101);
    // Every fault once early, in a seeded order, while traffic is heaviest; then at random. The
    // faults that only bite when requests flow (ERPNext errors, HubSpot 429s) come first.
    let mut first_round = faults.to_vec();
    first_round.shuffle(&mut rng);
    first_round.sort_by_key(|f| {
        matches!(
            f,
            Fault::ErpNextErrors | Fault::HubSpot429 | Fault::LateCommits
        )
    });
    // The window lasts at least until every fault has been injected once: a slow first round
    // (an ERPNext error window waiting out a lull, a loaded machine) must not end the run with a
    // fault never tried (seen: "BrokerCut never injected" with seed 15774661702895692655).
    while started.elapsed() < chaos_for || !first_round.is_empty() {
        let next = match first_round.pop() {
            Some(f) => Some(f),
            None => faults
                .get(rng.random_range(0..faults.len().max(1)))
                .copied(),
        };
        let Some(fault) = next else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        match fault {
            Fault::SigkillWorker => {
                let i = rng.random_range(1..services.len());
                services[i].sigkill();
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
                services[i].start();
            }
            Fault::BrokerCut => {
                amqp.cut();
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1200))).await;
                amqp.restore();
            }
            Fault::BrokerClose => {
                closed_by_rabbitmqctl +=
                    close_broker_connections(stack.settings.amqp.namespace.as_str());
            }
            Fault::RedisCut => {
                redis.cut();
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
                redis.restore();
            }
            Fault::ErpNextErrors => {
                stack.erpnext.set_faults(FaultConfig {
                    seed: rng.random(),
                    error_rate: 0.2,
                    timeout_rate: 0.05,
                    hang_ms: 1_500,
                    path_prefix: "/api".into(),
                    ..FaultConfig::default()
                });
                let before: u64 = stack.erpnext.injected().values().sum();
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
                // A window that fell in a lull stays open until it has failed a request (10 s
                // at most), so every window tests something.
                let lull_end = Instant::now() + Duration::from_secs(10);
                while stack.erpnext.injected().values().sum::<u64>() == before
                    && Instant::now() < lull_end
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                stack.erpnext.set_faults(FaultConfig::default());
            }
            Fault::LateCommits => {
                // Past the services' 1 s ERPNext timeout; released even if nothing was held.
                let doctype = ["Address", "Contact", "Sales Order"][rng.random_range(0..3)];
                stack.erpnext.hold_inserts(doctype, rng.random_range(1..4));
                tokio::time::sleep(Duration::from_millis(rng.random_range(1500..3000))).await;
                stack.erpnext.stop_holding_inserts();
                stack.erpnext.release_late_commits();
            }
            Fault::RedisFlush => {
                shared::testkit::TestNamespace {
                    settings: stack.settings.clone(),
                }
                .cleanup_redis()
                .await;
            }
            Fault::HubSpot429 => {
                stack.hubspot.set_faults(FaultConfig {
                    seed: rng.random(),
                    throttle_ms: rng.random_range(500..3000),
                    // And the next request whenever it comes, so a window that falls in a lull
                    // still throttles someone.
                    burst_429: 1,
                    path_prefix: "/crm".into(),
                    ..FaultConfig::default()
                });
            }
        }
        *actions.entry(fault).or_default() += 1;
        convergence.poll(&stack);
        convergence.report("under chaos", Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..gap_ms))).await;
    }
    stack.erpnext.set_faults(FaultConfig::default());
    stack.erpnext.stop_holding_inserts();
    stack.erpnext.release_late_commits();
    stack.hubspot.set_faults(FaultConfig::default());
    amqp.restore();
    redis.restore();
    println!(
        "chaos actions: {actions:?}; connections closed by rabbitmqctl: {closed_by_rabbitmqctl}; \
         late commits (status of each held insert): {:?}",
        stack.erpnext.late_commits()
    );
    // A run that injected nothing would prove nothing.
    for fault in faults {
        assert!(
            actions.contains_key(fault),
            "seed {seed}: {fault:?} never injected"
        );
    }
    if faults.contains(&Fault::BrokerClose) {
        assert!(
            closed_by_rabbitmqctl > 0,
            "seed {seed}: rabbitmqctl closed nothing"
        );
    }
    if faults.contains(&Fault::ErpNextErrors) {
        let injected = stack.erpnext.injected();
        assert!(
            !injected.is_empty(),
            "seed {seed}: ERPNext never failed a request"
        );
        println!("ERPNext faults injected: {injected:?}");
    }

    // Convergence: every deal shows its Sales Order. Judged by progress, not a fixed deadline: the
    // run fails when no deal has converged for `CHAOS_STALL_SECONDS` (default 120), which holds
    // for a debug build on a loaded 2-core machine and for N = 5,000 alike.
    let stall = Duration::from_secs(env_or("CHAOS_STALL_SECONDS", 120));
    // The clock for a stall starts when the faults stop.
    convergence.last_progress = Instant::now();
    loop {
        let missing = convergence.poll(&stack);
        if missing == 0 {
            break;
        }
        convergence.report("converging", Duration::from_secs(30));
        if convergence.last_progress.elapsed() > stall {
            for svc in &services {
                svc.print_log_tail(15);
            }
            panic!(
                "seed {seed}: {missing} of {n} deals never showed their Sales Order \
                 (no progress for {stall:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // During the chaos, or after it.
    let converged = convergence.done_after.unwrap_or_else(|| started.elapsed());

    let orders = stack.erpnext.list("Sales Order");
    assert_eq!(
        orders.len(),
        n,
        "seed {seed}: exactly one Sales Order per won deal"
    );
    // Group once (full documents, items included): per-deal lookups would be O(n²) for large N.
    let mut by_deal: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for so in orders {
        let deal = so["hubspot_deal_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        by_deal.entry(deal).or_default().push(so);
    }
    for (i, d) in deals.iter().enumerate() {
        let mine = by_deal.remove(&d.deal_id).unwrap_or_default();
        assert_eq!(mine.len(), 1, "seed {seed}: deal {}", d.deal_id);
        let so = &mine[0];
        let mut lines: Vec<(String, f64, f64)> = so["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|it| {
                (
                    it["item_code"].as_str().unwrap_or_default().to_string(),
                    it["qty"].as_f64().unwrap_or_default(),
                    it["rate"].as_f64().unwrap_or_default(),
                )
            })
            .collect();
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want: Vec<(String, f64, f64)> = LINES[..1 + i % 3]
            .iter()
            .map(|(s, q, p)| (s.to_string(), f64::from(*q), *p))
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(lines, want, "seed {seed}: lines of deal {}", d.deal_id);
        assert_eq!(
            stack
                .deal_property(&d.deal_id, "erpnext_sales_order")
                .as_deref(),
            so["name"].as_str(),
            "seed {seed}: deal {} shows its own Sales Order",
            d.deal_id
        );
    }
    assert_eq!(
        stack.erpnext.list("Customer").len(),
        n,
        "seed {seed}: one Customer per company"
    );
    let names = stack.settings.names();
    for q in WorkQueue::ALL {
        let dlq = names.dead_letter_queue(q);
        assert_eq!(
            queue_len(&stack.settings.amqp.url, &dlq).await,
            0,
            "seed {seed}: {dlq} is empty"
        );
    }
    let kills: u32 = services.iter().map(|s| s.kills).sum();
    if faults.contains(&Fault::HubSpot429) {
        assert!(
            stack.hubspot.calls().too_many_requests > 0,
            "seed {seed}: HubSpot never answered 429"
        );
    }
    println!(
        "seed {seed}: {n} deals converged in {:.1}s with {kills} SIGKILLs; HubSpot calls {}, 429s {}",
        converged.as_secs_f64(),
        stack.hubspot.calls().total,
        stack.hubspot.calls().too_many_requests
    );
    for svc in &mut services {
        let code = svc.terminate();
        // A drain cut short is allowed (the stragglers are redelivered) but worth seeing.
        let log = std::fs::read_to_string(&svc.log).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("drain_timeout")) {
            println!("{}: {line}", svc.name);
        }
        if code != Some(0) {
            svc.print_log_tail(30);
        }
        assert_eq!(
            code,
            Some(0),
            "seed {seed}: {} drains and exits 0 on SIGTERM",
            svc.name
        );
    }
    let _ = std::fs::remove_dir_all(&logs);
    // The children declared the chaos tiers' retry queues: the clean-up deletes those too.
    stack
        .settings
        .worker
        .retry_tiers
        .extend(CHAOS_TIERS_MS.iter().map(|ms| Duration::from_millis(*ms)));
    stack.stop().await.expect("stop");
}
