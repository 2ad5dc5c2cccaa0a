//! The consumer runtime against the real RabbitMQ: retry ladder, dead letters and the `dlq`
//! commands, undecodable and unknown messages, duplicate deliveries, a SIGKILLed worker process,
//! broker-closed connections, poison messages and the graceful drain.
//!
//! Every test has its own namespace (and the connection test its own vhost) and removes it.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use lapin::BasicProperties;
use shared::broker::{Broker, Outgoing};
use shared::config::{Settings, WorkerConfig};
use shared::envelope::{Envelope, Kind, Source};
use shared::names::{self, Exchange, WorkQueue};
use shared::runtime::dlq;
use shared::runtime::{
    DeadLetterKind, DlqCommand, Handler, HandlerError, Incoming, Outcome, RuntimeError, Worker,
};
use shared::testkit::{self, TestNamespace, eventually, queue_len};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const QUEUE: WorkQueue = WorkQueue::ErpWriter;
const ROUTING_KEY: &str = "erp.sync_deal";

/// One test's namespace, broker connection and cleanup.
struct TestEnv {
    ns: TestNamespace,
    broker: Broker,
    _guard: Guard,
}

/// Removes the namespace (or vhost) even when the test panics.
struct Guard {
    ns: TestNamespace,
    broker: Broker,
    broker_stop: CancellationToken,
    vhost: Option<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.broker_stop.cancel();
        let ns = self.ns.clone();
        let broker = self.broker.clone();
        let vhost = self.vhost.take();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                // The supervisor must not redeclare what we are about to delete.
                let deadline = Instant::now() + Duration::from_secs(5);
                while broker.is_ready() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                match vhost {
                    Some(v) => rabbitmqctl(&["delete_vhost", &v]),
                    None => ns.cleanup().await,
                }
            });
        })
        .join();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let status = testkit::rabbitmqctl(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "rabbitmqctl {args:?} failed: {status:?}"
    );
}

impl TestEnv {
    async fn start(tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::start_in(TestNamespace::new(), tweak, None).await
    }

    async fn start_in(
        mut ns: TestNamespace,
        tweak: impl FnOnce(&mut Settings),
        vhost: Option<String>,
    ) -> Self {
        tweak(&mut ns.settings);
        // `TEST_LOG=1` (with `RUST_LOG`) shows the runtime's logs.
        if std::env::var_os("TEST_LOG").is_some() {
            shared::telemetry::init_tracing(&ns.settings.telemetry);
        }
        let broker_stop = CancellationToken::new();
        let broker = Broker::start(
            &ns.settings.amqp.url,
            ns.names(),
            ns.topology(),
            ns.settings.amqp.reconnect_max_delay,
            broker_stop.clone(),
        );
        let guard = Guard {
            ns: ns.clone(),
            broker: broker.clone(),
            broker_stop,
            vhost,
        };
        assert!(
            broker.wait_ready(Duration::from_secs(10)).await,
            "broker not ready"
        );
        Self {
            ns,
            broker,
            _guard: guard,
        }
    }

    fn url(&self) -> &str {
        &self.ns.settings.amqp.url
    }

    fn worker_config(&self) -> WorkerConfig {
        self.ns.settings.worker.clone()
    }

    fn queue(&self) -> String {
        self.ns.names().queue(QUEUE)
    }

    fn dlq(&self) -> String {
        self.ns.names().dead_letter_queue(QUEUE)
    }

    async fn publish(&self, envelope: &Envelope) {
        if let Err(e) = self
            .broker
            .publish_envelope(Exchange::Commands, ROUTING_KEY, envelope)
            .await
        {
            panic!("publish: {e}");
        }
    }

    async fn publish_all(&self, envelopes: &[Envelope]) {
        let exchange = self.ns.names().exchange(Exchange::Commands);
        let messages: Vec<Outgoing> = envelopes
            .iter()
            .map(|e| {
                Outgoing::envelope(exchange.clone(), ROUTING_KEY.into(), e, 0).expect("encodes")
            })
            .collect();
        for chunk in messages.chunks(200) {
            if let Err(e) = self.broker.publish_all(chunk).await {
                panic!("publish: {e}");
            }
        }
    }

    async fn publish_raw(&self, body: &[u8]) {
        let message = Outgoing {
            exchange: self.ns.names().exchange(Exchange::Commands),
            routing_key: ROUTING_KEY.into(),
            body: body.to_vec(),
            properties: BasicProperties::default().with_delivery_mode(2),
        };
        if let Err(e) = self.broker.publish(&message).await {
            panic!("publish: {e}");
        }
    }

    fn spawn<H: Handler>(&self, cfg: WorkerConfig, handler: H) -> Running {
        let token = CancellationToken::new();
        let worker = Worker::new(self.broker.clone(), QUEUE, cfg, handler);
        let handle = tokio::spawn(worker.run(token.clone()));
        Running { token, handle }
    }

    async fn dlq_cli(&self, args: &[&str]) -> String {
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            dlq: DlqCommand,
        }
        let cli = Cli::try_parse_from(std::iter::once("erp-writer").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let mut out = Vec::new();
        if let Err(e) = dlq::run_dlq_to(cli.dlq, &self.broker, QUEUE, &mut out).await {
            panic!("dlq {args:?}: {e:#}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn dead_letters(&self) -> Vec<shared::runtime::dead_letter::DeadLetter> {
        dlq::list(&self.broker, QUEUE).await.expect("dlq list")
    }

    async fn wait_dlq_len(&self, n: u32) {
        let (url, dlq) = (self.url().to_string(), self.dlq());
        eventually(
            Duration::from_secs(10),
            &format!("{n} message(s) in the DLQ"),
            || {
                let (url, dlq) = (url.clone(), dlq.clone());
                async move { (queue_len(&url, &dlq).await == n).then_some(()) }
            },
        )
        .await;
    }
}

struct Running {
    token: CancellationToken,
    handle: JoinHandle<Result<(), RuntimeError>>,
}

impl Running {
    /// Shut down and wait for the drain.
    async fn stop(self) {
        self.token.cancel();
        match tokio::time::timeout(Duration::from_secs(10), self.handle).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("worker did not stop cleanly: {other:?}"),
        }
    }

    fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }
}

fn envelope(key: &str) -> Envelope {
    let now = Utc::now();
    Envelope {
        id: Uuid::now_v7(),
        kind: Kind::ErpSyncDeal,
        idempotency_key: key.to_string(),
        correlation_id: format!("corr-{key}"),
        occurred_at: now,
        received_at: now,
        source: Source::Mapper,
        payload: serde_json::json!({ "deal": key }),
    }
}

fn keys(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Retry ladder

/// Fails transiently on its first `fail_first` calls, recording each call's attempt.
struct Flaky {
    fail_first: usize,
    calls: Mutex<Vec<(u32, String)>>,
    done: AtomicUsize,
}

impl Handler for Flaky {
    async fn handle(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        let n = {
            let mut calls = self.calls.lock().expect("lock");
            calls.push((msg.attempt, msg.routing_key.clone()));
            calls.len()
        };
        if n <= self.fail_first {
            return Err(HandlerError::transient(format!(
                "503 from ERPNext (call {n})"
            )));
        }
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(Outcome::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_climb_the_ladder_until_success() {
    let env = TestEnv::start(|s| {
        s.worker.retry_tiers = vec![
            Duration::from_millis(50),
            Duration::from_millis(100),
            Duration::from_millis(150),
        ];
        s.worker.quick_attempts = 1;
    })
    .await;
    // quick_attempts = 1: two calls per delivery. Five failures: two on attempt 0, two on
    // attempt 1 (after tier 0), one on attempt 2 (after tier 1), then success.
    let handler = Arc::new(Flaky {
        fail_first: 5,
        calls: Mutex::new(Vec::new()),
        done: AtomicUsize::new(0),
    });
    let worker = env.spawn(env.worker_config(), handler.clone());
    env.publish(&envelope("ladder-1")).await;

    eventually(Duration::from_secs(10), "the handler to succeed", || {
        let h = handler.clone();
        async move { (h.done.load(Ordering::SeqCst) == 1).then_some(()) }
    })
    .await;
    worker.stop().await;

    let calls = handler.calls.lock().expect("lock").clone();
    let attempts: Vec<u32> = calls.iter().map(|(a, _)| *a).collect();
    assert_eq!(attempts, vec![0, 0, 1, 1, 2, 2]);
    assert!(
        calls.iter().all(|(_, rk)| rk == ROUTING_KEY),
        "retried messages keep their routing key: {calls:?}"
    );
    assert_eq!(queue_len(env.url(), &env.queue()).await, 0);
    assert_eq!(queue_len(env.url(), &env.dlq()).await, 0);
    for tier in &env.ns.settings.worker.retry_tiers {
        assert_eq!(
            queue_len(env.url(), &env.ns.names().retry_queue(QUEUE, *tier)).await,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_past_the_last_tier_are_dead_lettered_as_exhausted() {
    let env = TestEnv::start(|s| {
        s.worker.retry_tiers = vec![Duration::from_millis(50), Duration::from_millis(100)];
        s.worker.quick_attempts = 1;
    })
    .await;
    let handler = Arc::new(Flaky {
        fail_first: usize::MAX,
        calls: Mutex::new(Vec::new()),
        done: AtomicUsize::new(0),
    });
    let worker = env.spawn(env.worker_config(), handler.clone());
    env.publish(&envelope("always-503")).await;
    env.wait_dlq_len(1).await;
    worker.stop().await;

    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(l.kind, Some(DeadLetterKind::Exhausted));
    assert_eq!(l.attempts, Some(3), "deliveries: first + two tiers");
    assert!(
        l.error
            .as_deref()
            .is_some_and(|e| e.contains("503 from ERPNext")),
        "{l:?}"
    );
    assert!(l.first_failed_at < l.last_failed_at, "{l:?}");
    assert_eq!(l.routing_key.as_deref(), Some(ROUTING_KEY));
    let attempts: Vec<u32> = handler
        .calls
        .lock()
        .expect("lock")
        .iter()
        .map(|(a, _)| *a)
        .collect();
    assert_eq!(attempts, vec![0, 0, 1, 1, 2, 2]);
}

// ---------------------------------------------------------------------------------------------
// Permanent failures, the DLQ and its commands

/// Fails permanently while `broken`; counts applied effects per idempotency key.
struct Fixable {
    broken: AtomicBool,
    effects: Mutex<HashMap<String, usize>>,
    attempts: Mutex<Vec<u32>>,
}

impl Handler for Fixable {
    async fn handle(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        self.attempts.lock().expect("lock").push(msg.attempt);
        if self.broken.load(Ordering::SeqCst) {
            return Err(HandlerError::permanent(
                "HubSpot SKU 'W-9' has no ERPNext Item; add it or map it under [items] in config",
            ));
        }
        let mut effects = self.effects.lock().expect("lock");
        let n = effects
            .entry(msg.envelope.idempotency_key.clone())
            .or_default();
        if *n > 0 {
            return Ok(Outcome::Duplicate);
        }
        *n += 1;
        Ok(Outcome::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_are_dead_lettered_replayed_once_and_purged() {
    let env = TestEnv::start(|_| {}).await;
    let handler = Arc::new(Fixable {
        broken: AtomicBool::new(true),
        effects: Mutex::new(HashMap::new()),
        attempts: Mutex::new(Vec::new()),
    });
    let worker = env.spawn(env.worker_config(), handler.clone());
    let (a, b) = (envelope("perm-a"), envelope("perm-b"));
    env.publish(&a).await;
    env.publish(&b).await;
    env.wait_dlq_len(2).await;
    assert_eq!(
        handler.attempts.lock().expect("lock").len(),
        2,
        "permanent: no retries"
    );

    // `show` prints every failure header and the untouched body.
    let id_a = a.id.to_string();
    let detail = dlq::show(&env.broker, QUEUE, &id_a)
        .await
        .expect("show")
        .expect("found");
    let header = |name: &str| {
        detail
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("header {name} missing: {:?}", detail.headers))
    };
    assert_eq!(header(names::HEADER_ERROR_KIND), "permanent");
    assert!(header(names::HEADER_ERROR).contains("has no ERPNext Item"));
    assert_eq!(header(names::HEADER_ROUTING_KEY), ROUTING_KEY);
    assert_eq!(header(names::HEADER_CORRELATION_ID), "corr-perm-a");
    assert!(header(names::HEADER_ATTEMPTS).contains('1'));
    for at in [names::HEADER_FIRST_FAILED_AT, names::HEADER_LAST_FAILED_AT] {
        assert!(
            DateTime::parse_from_rfc3339(&header(at)).is_ok(),
            "{at}: {}",
            header(at)
        );
    }
    assert_eq!(detail.body, a.to_json().expect("encodes"));
    assert_eq!(detail.letter.correlation_id.as_deref(), Some("corr-perm-a"));

    let table = env.dlq_cli(&["list"]).await;
    assert!(
        table.contains(&id_a) && table.contains("permanent"),
        "{table}"
    );
    let json = env.dlq_cli(&["list", "--json"]).await;
    assert_eq!(json.lines().count(), 2, "{json}");
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert_eq!(v["kind"], "permanent");
        assert_eq!(v["routing_key"], ROUTING_KEY);
    }
    let shown = env.dlq_cli(&["show", &id_a]).await;
    assert!(
        shown.contains("perm-a") && shown.contains(names::HEADER_FIRST_FAILED_AT),
        "{shown}"
    );
    // Listing and showing took nothing away.
    assert_eq!(queue_len(env.url(), &env.dlq()).await, 2);

    // Fix the handler and replay one: applied exactly once, the other stays.
    handler.broken.store(false, Ordering::SeqCst);
    let out = env.dlq_cli(&["replay", "--id", &id_a]).await;
    assert_eq!(out.trim(), "replayed 1 of 2 dead letters");
    eventually(
        Duration::from_secs(10),
        "the replayed message to be applied",
        || {
            let h = handler.clone();
            async move { (h.effects.lock().expect("lock").get("perm-a") == Some(&1)).then_some(()) }
        },
    )
    .await;
    assert_eq!(queue_len(env.url(), &env.dlq()).await, 1);
    let left = env.dead_letters().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id.as_deref(), Some(b.id.to_string().as_str()));
    assert_eq!(
        handler.attempts.lock().expect("lock").last(),
        Some(&0),
        "replay resets the attempt count"
    );

    // Purge by kind removes the rest; purge --all empties whatever comes later.
    let out = env.dlq_cli(&["purge", "--error-kind", "permanent"]).await;
    assert_eq!(out.trim(), "purged 1 of 1 dead letters");
    assert_eq!(queue_len(env.url(), &env.dlq()).await, 0);
    handler.broken.store(true, Ordering::SeqCst);
    env.publish(&envelope("perm-c")).await;
    env.wait_dlq_len(1).await;
    let out = env.dlq_cli(&["purge", "--all"]).await;
    assert_eq!(out.trim(), "purged 1 of 1 dead letters");
    assert_eq!(queue_len(env.url(), &env.dlq()).await, 0);

    worker.stop().await;
    let effects = handler.effects.lock().expect("lock").clone();
    assert_eq!(effects, HashMap::from([("perm-a".to_string(), 1)]));
    assert_eq!(queue_len(env.url(), &env.queue()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_by_kind_and_since_selects_only_matching_dead_letters() {
    let env = TestEnv::start(|_| {}).await;
    let handler = Arc::new(Fixable {
        broken: AtomicBool::new(true),
        effects: Mutex::new(HashMap::new()),
        attempts: Mutex::new(Vec::new()),
    });
    let worker = env.spawn(env.worker_config(), handler.clone());
    env.publish_raw(b"garbage").await;
    env.publish(&envelope("sel-1")).await;
    env.wait_dlq_len(2).await;
    let later = Utc::now() + chrono::Duration::hours(1);
    handler.broken.store(false, Ordering::SeqCst);

    let out = env
        .dlq_cli(&["replay", "--since", &later.to_rfc3339()])
        .await;
    assert_eq!(out.trim(), "replayed 0 of 2 dead letters");
    let out = env.dlq_cli(&["replay", "--error-kind", "permanent"]).await;
    assert_eq!(out.trim(), "replayed 1 of 2 dead letters");
    eventually(
        Duration::from_secs(10),
        "the replayed message to be applied",
        || {
            let h = handler.clone();
            async move {
                h.effects
                    .lock()
                    .expect("lock")
                    .contains_key("sel-1")
                    .then_some(())
            }
        },
    )
    .await;
    let left = env.dead_letters().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].kind, Some(DeadLetterKind::Undecodable));
    worker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Messages a handler never sees

/// Records every key it is called with.
#[derive(Default)]
struct Recorder {
    keys: Mutex<Vec<String>>,
}

impl Handler for Recorder {
    async fn handle(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        self.keys
            .lock()
            .expect("lock")
            .push(msg.envelope.idempotency_key);
        Ok(Outcome::Done)
    }
}

/// Run `dlq list` and `dlq show <id>` `times` times each (as an operator would, through the
/// CLI) and check after every run that the DLQ holds exactly `expected` (ids, in this order)
/// with `expected[0]`'s body intact.
async fn inspect_many_times(env: &TestEnv, expected: &[&Envelope], times: usize) {
    let ids: Vec<String> = expected.iter().map(|e| e.id.to_string()).collect();
    let first = expected[0];
    for round in 0..times {
        let json = env.dlq_cli(&["list", "--json"]).await;
        let listed: Vec<String> = json
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["id"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        assert_eq!(listed, ids, "dlq list #{}", round + 1);
        let shown = env.dlq_cli(&["show", &ids[0]]).await;
        assert!(
            shown.contains(&first.idempotency_key) && shown.contains("permanent"),
            "dlq show #{}: {shown}",
            round + 1
        );
    }
    let detail = dlq::show(&env.broker, QUEUE, &ids[0])
        .await
        .expect("show")
        .expect("still there");
    assert_eq!(
        detail.body,
        first.to_json().expect("encodes"),
        "body intact"
    );
    assert_eq!(detail.letter.kind, Some(DeadLetterKind::Permanent));
    assert_eq!(
        detail.letter.correlation_id.as_deref(),
        Some(first.correlation_id.as_str())
    );
}

/// Issue 15: RabbitMQ 4 gives quorum queues a default delivery limit of 20 and drops a message
/// past it; every `dlq` inspection gives the letters back (a delivery each). The DLQ's explicit
/// limit keeps them, in order, on 3.10 and 4.x alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_survive_fifty_lists_and_fifty_shows_and_are_replayed_once() {
    let env = TestEnv::start(|_| {}).await;
    assert!(
        !env.broker.dlq_lacks_limit(&env.dlq()),
        "a new DLQ gets its explicit delivery limit"
    );
    let handler = Arc::new(Fixable {
        broken: AtomicBool::new(true),
        effects: Mutex::new(HashMap::new()),
        attempts: Mutex::new(Vec::new()),
    });
    let worker = env.spawn(env.worker_config(), handler.clone());
    let letters = [envelope("kept-a"), envelope("kept-b"), envelope("kept-c")];
    for (n, e) in (1..).zip(&letters) {
        // One at a time, so the DLQ order is known.
        env.publish(e).await;
        env.wait_dlq_len(n).await;
    }

    inspect_many_times(&env, &letters.iter().collect::<Vec<_>>(), 50).await;

    handler.broken.store(false, Ordering::SeqCst);
    let id_a = letters[0].id.to_string();
    assert_eq!(
        env.dlq_cli(&["replay", "--id", &id_a]).await.trim(),
        "replayed 1 of 3 dead letters"
    );
    eventually(
        Duration::from_secs(10),
        "the replayed letter applied",
        || {
            let h = handler.clone();
            async move { (h.effects.lock().expect("lock").get("kept-a") == Some(&1)).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        env.dlq_cli(&["replay", "--id", &id_a]).await.trim(),
        "replayed 0 of 2 dead letters",
        "a replayed letter is gone from the DLQ"
    );
    let left: Vec<Option<String>> = env.dead_letters().await.into_iter().map(|l| l.id).collect();
    assert_eq!(
        left,
        vec![
            Some(letters[1].id.to_string()),
            Some(letters[2].id.to_string())
        ]
    );
    worker.stop().await;
    assert_eq!(
        handler.effects.lock().expect("lock").clone(),
        HashMap::from([("kept-a".to_string(), 1)]),
        "applied exactly once"
    );
}

/// A DLQ declared by an older version (no `x-delivery-limit`) cannot be given one by a
/// redeclare: the service still comes up, and the `dlq` commands refresh its letters before
/// RabbitMQ 4's default limit of 20 can drop them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_queue_declared_without_a_limit_still_keeps_its_letters() {
    let ns = TestNamespace::new();
    let dlq_name = ns.names().dead_letter_queue(QUEUE);
    let letters = [envelope("old-a"), envelope("old-b"), envelope("old-c")];
    {
        // What lead2ledger before issue 15 declared, holding three dead letters.
        let conn = lapin::Connection::connect(&ns.settings.amqp.url, Default::default())
            .await
            .expect("connect");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .confirm_select(Default::default())
            .await
            .expect("confirms");
        let mut args = lapin::types::FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        channel
            .queue_declare(
                dlq_name.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .expect("legacy DLQ");
        for e in &letters {
            let mut headers = lapin::types::FieldTable::default();
            for (k, v) in [
                (names::HEADER_ERROR_KIND, "permanent"),
                (names::HEADER_ERROR, "HubSpot SKU 'W-9' has no ERPNext Item"),
                (names::HEADER_ROUTING_KEY, ROUTING_KEY),
                (names::HEADER_LAST_FAILED_AT, "2025-01-01T00:00:00.000Z"),
            ] {
                headers.insert(k.into(), lapin::types::AMQPValue::LongString(v.into()));
            }
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(e.id.to_string().into())
                .with_correlation_id(e.correlation_id.clone().into())
                .with_headers(headers);
            let confirm = channel
                .basic_publish(
                    "".into(),
                    dlq_name.as_str().into(),
                    Default::default(),
                    &e.to_json().expect("encodes"),
                    props,
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(confirm.is_ack(), "{confirm:?}");
        }
        let _ = conn.close(200, "legacy DLQ ready".into()).await;
    }

    let env = TestEnv::start_in(ns, |_| {}, None).await;
    assert!(
        env.broker.dlq_lacks_limit(&env.dlq()),
        "the old DLQ is recognised as one without a limit"
    );
    // More inspections than RabbitMQ 4's default limit of 20 allows without a refresh.
    inspect_many_times(&env, &letters.iter().collect::<Vec<_>>(), 30).await;

    let handler = Arc::new(Fixable {
        broken: AtomicBool::new(false),
        effects: Mutex::new(HashMap::new()),
        attempts: Mutex::new(Vec::new()),
    });
    let worker = env.spawn(env.worker_config(), handler.clone());
    assert_eq!(
        env.dlq_cli(&["replay", "--all"]).await.trim(),
        "replayed 3 of 3 dead letters"
    );
    eventually(
        Duration::from_secs(10),
        "every replayed letter applied",
        || {
            let h = handler.clone();
            async move { (h.effects.lock().expect("lock").len() == 3).then_some(()) }
        },
    )
    .await;
    worker.stop().await;
    assert!(
        handler
            .effects
            .lock()
            .expect("lock")
            .values()
            .all(|n| *n == 1),
        "each applied once"
    );
    assert_eq!(queue_len(env.url(), &env.dlq()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kinds_and_garbage_bodies_are_dead_lettered_and_the_worker_keeps_going() {
    let env = TestEnv::start(|_| {}).await;
    let handler = Arc::new(Recorder::default());
    let worker = env.spawn(env.worker_config(), handler.clone());

    env.publish_raw(b"\x00 definitely not json").await;
    let mut unknown = envelope("from-the-future");
    unknown.kind = Kind::Unknown("erp.teleport_deal".into());
    env.publish(&unknown).await;
    env.publish(&envelope("fine")).await;

    env.wait_dlq_len(2).await;
    eventually(Duration::from_secs(10), "the good message", || {
        let h = handler.clone();
        async move { (!h.keys.lock().expect("lock").is_empty()).then_some(()) }
    })
    .await;
    assert!(worker.is_running());
    worker.stop().await;
    assert_eq!(
        *handler.keys.lock().expect("lock"),
        vec!["fine".to_string()]
    );

    let letters = env.dead_letters().await;
    let kinds: HashSet<_> = letters.iter().filter_map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        HashSet::from([DeadLetterKind::Undecodable, DeadLetterKind::UnknownKind])
    );
    let unknown_letter = letters
        .iter()
        .find(|l| l.kind == Some(DeadLetterKind::UnknownKind))
        .expect("unknown-kind letter");
    assert!(
        unknown_letter
            .error
            .as_deref()
            .is_some_and(|e| e.contains("erp.teleport_deal"))
    );
    assert_eq!(
        unknown_letter.idempotency_key.as_deref(),
        Some("from-the-future")
    );
    assert_eq!(queue_len(env.url(), &env.queue()).await, 0);
}

// ---------------------------------------------------------------------------------------------
// At-least-once delivery, exactly-once effects

/// Counts deliveries, applies each idempotency key once.
#[derive(Default)]
struct Idempotent {
    deliveries: AtomicUsize,
    effects: AtomicUsize,
    seen: Mutex<HashSet<String>>,
}

impl Handler for Idempotent {
    async fn handle(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        if !self
            .seen
            .lock()
            .expect("lock")
            .insert(msg.envelope.idempotency_key)
        {
            return Ok(Outcome::Duplicate);
        }
        self.effects.fetch_add(1, Ordering::SeqCst);
        Ok(Outcome::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_published_twice_is_applied_once() {
    let env = TestEnv::start(|s| {
        s.worker.prefetch = 64;
        s.worker.concurrency = 16;
    })
    .await;
    let originals: Vec<Envelope> = keys(1000, "dup").iter().map(|k| envelope(k)).collect();
    // The second copy is a redelivery as HubSpot makes them: same key, new message id.
    let copies: Vec<Envelope> = originals
        .iter()
        .map(|e| Envelope {
            id: Uuid::now_v7(),
            ..e.clone()
        })
        .collect();
    env.publish_all(&originals).await;
    env.publish_all(&copies).await;

    let handler = Arc::new(Idempotent::default());
    let started = Instant::now();
    let worker = env.spawn(env.worker_config(), handler.clone());
    eventually(Duration::from_secs(20), "2,000 deliveries", || {
        let h = handler.clone();
        async move { (h.deliveries.load(Ordering::SeqCst) >= 2000).then_some(()) }
    })
    .await;
    let elapsed = started.elapsed();
    worker.stop().await;
    eprintln!(
        "2,000 deliveries in {elapsed:?} ({:.0}/s)",
        2000.0 / elapsed.as_secs_f64()
    );

    assert_eq!(handler.deliveries.load(Ordering::SeqCst), 2000);
    assert_eq!(handler.effects.load(Ordering::SeqCst), 1000);
    assert_eq!(handler.seen.lock().expect("lock").len(), 1000);
    // Stopped: anything unacked would be back in the queue now.
    assert_eq!(queue_len(env.url(), &env.queue()).await, 0);
    assert_eq!(queue_len(env.url(), &env.dlq()).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Crashes and connection loss

fn write_config(dir: &std::path::Path, settings: &Settings) -> std::path::PathBuf {
    let tiers: Vec<String> = settings
        .worker
        .retry_tiers
        .iter()
        .map(|t| format!("\"{}ms\"", t.as_millis()))
        .collect();
    let toml = format!(
        "[amqp]\nurl = \"{}\"\nnamespace = \"{}\"\ndelivery_limit = {}\nreconnect_max_delay = \"500ms\"\n\n\
         [worker]\nprefetch = {}\nconcurrency = {}\nquick_attempts = {}\nquick_base_delay = \"{}ms\"\nretry_tiers = [{}]\n\n\
         [telemetry]\nlog_level = \"warn\"\n",
        settings.amqp.url,
        settings.amqp.namespace,
        settings.amqp.delivery_limit,
        settings.worker.prefetch,
        settings.worker.concurrency,
        settings.worker.quick_attempts,
        settings.worker.quick_base_delay.as_millis(),
        tiers.join(", "),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

/// A worker process that dies with the test, whatever happens to the test.
struct WorkerProcess(Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker_process(
    config: &std::path::Path,
    effects: &std::path::Path,
    delay_ms: u64,
    log: &std::path::Path,
) -> WorkerProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_l2l-runtime-test-worker"))
        .arg(config)
        .arg(effects)
        .arg(delay_ms.to_string())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn test worker");
    WorkerProcess(child)
}

fn effect_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_and_restarted_loses_nothing() {
    let env = TestEnv::start(|s| {
        s.worker.prefetch = 20;
        s.worker.concurrency = 4;
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &env.ns.settings);
    let effects = dir.path().join("effects.log");
    let log = dir.path().join("worker.log");
    let all = keys(300, "kill");
    let envelopes: Vec<Envelope> = all.iter().map(|k| envelope(k)).collect();
    env.publish_all(&envelopes).await;

    let mut child = spawn_worker_process(&config, &effects, 10, &log);
    eventually(
        Duration::from_secs(15),
        "the first worker to handle 60 messages",
        || {
            let n = effect_lines(&effects).len();
            async move { (n >= 60).then_some(()) }
        },
    )
    .await;
    child.0.kill().expect("SIGKILL");
    let _ = child.0.wait();
    let at_kill = effect_lines(&effects).len();
    assert!(
        at_kill < all.len(),
        "the kill must land mid-batch ({at_kill} handled)"
    );

    let mut child = spawn_worker_process(&config, &effects, 10, &log);
    let want: HashSet<String> = all.iter().cloned().collect();
    eventually(
        Duration::from_secs(20),
        "every message handled after the restart",
        || {
            let got: HashSet<String> = effect_lines(&effects).into_iter().collect();
            let done = got == want;
            async move { done.then_some(()) }
        },
    )
    .await;
    // Graceful stop (SIGTERM): the drain acks everything, so the queue must be empty after.
    let pid = child.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.0.wait().expect("wait");
    let worker_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "worker exited with {status}: {worker_log}"
    );
    let lines = effect_lines(&effects).len();
    eprintln!(
        "killed after {at_kill} effects; {lines} effects in total for {} messages ({} redelivered)",
        all.len(),
        lines - all.len()
    );
    assert!(
        lines - all.len() <= 20,
        "at most a prefetch window is redone"
    );
    assert_eq!(queue_len(env.url(), &env.queue()).await, 0);
    assert_eq!(queue_len(env.url(), &env.dlq()).await, 0);
}

/// Holds every call after the first `hold_after` until the gate opens, so the connection close
/// lands with deliveries in flight, deterministically.
struct Gated {
    hold_after: usize,
    gate: tokio::sync::watch::Sender<bool>,
    handled: Mutex<HashSet<String>>,
    calls: AtomicUsize,
}

impl Handler for Gated {
    async fn handle(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n > self.hold_after {
            let mut open = self.gate.subscribe();
            let _ = open.wait_for(|open| *open).await;
        }
        self.handled
            .lock()
            .expect("lock")
            .insert(msg.envelope.idempotency_key);
        Ok(Outcome::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_resumes_after_the_broker_closes_all_connections() {
    // Our own vhost, so `close_all_connections` touches no other test's connections.
    let vhost = format!("t-{}", Uuid::now_v7().simple());
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let mut ns = TestNamespace::new();
    ns.settings.amqp.url = testkit::amqp_url_in_vhost(&vhost);
    let concurrency = 4;
    let env = TestEnv::start_in(
        ns,
        |s| {
            s.worker.prefetch = 10;
            s.worker.concurrency = concurrency;
        },
        Some(vhost.clone()),
    )
    .await;
    let all = keys(500, "conn");
    let envelopes: Vec<Envelope> = all.iter().map(|k| envelope(k)).collect();
    env.publish_all(&envelopes).await;

    let handler = Arc::new(Gated {
        hold_after: 100,
        gate: tokio::sync::watch::channel(false).0,
        handled: Mutex::new(HashSet::new()),
        calls: AtomicUsize::new(0),
    });
    let worker = env.spawn(env.worker_config(), handler.clone());
    eventually(
        Duration::from_secs(10),
        "every permit held by a blocked handler",
        || {
            let h = handler.clone();
            async move { (h.calls.load(Ordering::SeqCst) == 100 + concurrency).then_some(()) }
        },
    )
    .await;
    let generation = *env.broker.subscribe().borrow();
    rabbitmqctl(&[
        "close_all_connections",
        "-p",
        &vhost,
        "test: connections closed by the broker",
    ]);
    let broker = env.broker.clone();
    eventually(Duration::from_secs(10), "the broker to reconnect", || {
        let now = *broker.subscribe().borrow();
        async move { (now.is_some() && now > generation).then_some(()) }
    })
    .await;
    // The held deliveries finish now; their channel is gone, so their acks cannot happen and
    // the broker redelivers them.
    handler.gate.send_replace(true);

    let want: HashSet<String> = all.iter().cloned().collect();
    eventually(
        Duration::from_secs(20),
        "every message handled after the reconnect",
        || {
            let h = handler.clone();
            let done = *h.handled.lock().expect("lock") == want;
            async move { done.then_some(()) }
        },
    )
    .await;
    worker.stop().await;
    let calls = handler.calls.load(Ordering::SeqCst);
    eprintln!(
        "{calls} calls for {} messages across the reconnect",
        all.len()
    );
    assert!(
        calls >= all.len() + concurrency,
        "the {concurrency} deliveries in flight at the close were redelivered ({calls} calls)"
    );
    assert_eq!(queue_len(env.url(), &env.queue()).await, 0);
    assert_eq!(queue_len(env.url(), &env.dlq()).await, 0);
}

/// Slow handler that publishes an outcome through the broker (as the writers do) and records
/// how many calls run at once.
struct SlowOutcomes {
    broker: Broker,
    delay: Duration,
    running: AtomicUsize,
    peak: AtomicUsize,
    done: Mutex<HashSet<String>>,
}

/// Counts a call as running until dropped, whatever way the call ends.
struct RunningCall<'a>(&'a AtomicUsize);

impl Drop for RunningCall<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Handler for SlowOutcomes {
    async fn handle(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        let _running = RunningCall(&self.running);
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.broker
            .publish_envelope(Exchange::Events, "outcome.erp.test_applied", &msg.envelope)
            .await
            .map_err(|e| HandlerError::transient(format!("outcome not published: {e}")))?;
        self.done
            .lock()
            .expect("lock")
            .insert(msg.envelope.idempotency_key);
        Ok(Outcome::Done)
    }
}

/// Issue 15, item 5: twenty connection losses (`rabbitmqctl close_all_connections` and proxy
/// cuts, alternately) while every permit is held by a slow handler that publishes. No delivery
/// may stay stuck holding a permit: afterwards the worker runs at full concurrency again at the
/// expected throughput, and it drains at once on shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_connection_losses_under_slow_handlers_leave_the_worker_at_full_concurrency() {
    // Our own vhost, so `close_all_connections` touches no other test's connections.
    let vhost = format!("t-{}", Uuid::now_v7().simple());
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let proxy = testkit::TcpProxy::start(&testkit::amqp_addr())
        .await
        .expect("proxy");
    let mut ns = TestNamespace::new();
    ns.settings.amqp.url = format!("amqp://guest:guest@{}/{vhost}", proxy.addr());
    let concurrency = 4;
    let delay = Duration::from_millis(100);
    let env = TestEnv::start_in(
        ns,
        |s| {
            s.worker.prefetch = 8;
            s.worker.concurrency = concurrency;
            s.worker.drain_timeout = Duration::from_secs(5);
            // Every loss redelivers what was in flight; this test is not about poison.
            s.amqp.delivery_limit = 100;
        },
        Some(vhost.clone()),
    )
    .await;
    let all: Vec<Envelope> = keys(1_500, "loss").iter().map(|k| envelope(k)).collect();
    env.publish_all(&all).await;
    let handler = Arc::new(SlowOutcomes {
        broker: env.broker.clone(),
        delay,
        running: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        done: Mutex::new(HashSet::new()),
    });
    let worker = env.spawn(env.worker_config(), handler.clone());
    let done = |h: &SlowOutcomes| h.done.lock().expect("lock").len();

    for i in 0..20 {
        // Every permit held by a handler that will publish and then be acked.
        let h = handler.clone();
        eventually(
            Duration::from_secs(15),
            &format!("all {concurrency} permits busy before loss #{}", i + 1),
            || {
                let busy = h.running.load(Ordering::SeqCst) == concurrency;
                async move { busy.then_some(()) }
            },
        )
        .await;
        let generation = *env.broker.subscribe().borrow();
        if i % 2 == 0 {
            rabbitmqctl(&[
                "close_all_connections",
                "-p",
                &vhost,
                "test: connection closed by the broker",
            ]);
        } else {
            proxy.cut();
            proxy.restore();
        }
        let broker = env.broker.clone();
        eventually(
            Duration::from_secs(15),
            &format!("a new connection after loss #{}", i + 1),
            || {
                let now = *broker.subscribe().borrow();
                async move { (now.is_some() && now > generation).then_some(()) }
            },
        )
        .await;
        // Progress on the new connection before the next loss.
        let before = done(&handler);
        let h = handler.clone();
        eventually(
            Duration::from_secs(15),
            &format!("progress after loss #{}", i + 1),
            || {
                let n = done(&h);
                async move { (n >= before + concurrency).then_some(()) }
            },
        )
        .await;
    }

    // Throughput over the next 200 messages, against the ideal of `concurrency` calls per delay.
    handler.peak.store(0, Ordering::SeqCst);
    let (start, t0) = (done(&handler), Instant::now());
    let measured = 200;
    let h = handler.clone();
    eventually(
        Duration::from_secs(30),
        "200 more messages after the losses",
        || {
            let n = done(&h);
            async move { (n >= start + measured).then_some(()) }
        },
    )
    .await;
    let elapsed = t0.elapsed();
    let per_second = measured as f64 / elapsed.as_secs_f64();
    let ideal = concurrency as f64 / delay.as_secs_f64();
    eprintln!(
        "after 20 connection losses: {measured} messages in {elapsed:?} = {per_second:.1}/s \
         (ideal {ideal:.0}/s), peak concurrency {}",
        handler.peak.load(Ordering::SeqCst)
    );
    assert_eq!(
        handler.peak.load(Ordering::SeqCst),
        concurrency,
        "every permit is free again"
    );
    assert!(
        per_second >= ideal * 0.5,
        "throughput {per_second:.1}/s, ideal {ideal:.0}/s"
    );

    // The drain finds nothing stuck: it ends well inside its 5 s bound.
    let stopping = Instant::now();
    worker.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "drain took {:?}: a delivery was stuck",
        stopping.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Poison messages

/// Panics on messages whose payload says so.
#[derive(Default)]
struct Panicky {
    panics: AtomicUsize,
    handled: Mutex<Vec<String>>,
}

impl Handler for Panicky {
    async fn handle(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        if msg.envelope.payload.get("explode").is_some() {
            self.panics.fetch_add(1, Ordering::SeqCst);
            panic!("handler bug on {}", msg.envelope.idempotency_key);
        }
        self.handled
            .lock()
            .expect("lock")
            .push(msg.envelope.idempotency_key);
        Ok(Outcome::Done)
    }
}

/// Issue 15: the handler runs exactly `amqp.delivery_limit` times, then the message is in the
/// DLQ as `poison` with the panic message, on RabbitMQ 3.10 and 4.x alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_ends_in_the_dlq_as_poison_and_the_worker_survives() {
    let env = TestEnv::start(|s| s.amqp.delivery_limit = 3).await;
    let handler = Arc::new(Panicky::default());
    let worker = env.spawn(env.worker_config(), handler.clone());
    let mut poison = envelope("poison-1");
    poison.payload = serde_json::json!({ "explode": true });
    env.publish(&poison).await;
    env.wait_dlq_len(1).await;
    env.publish(&envelope("healthy-1")).await;
    eventually(Duration::from_secs(10), "the next message", || {
        let h = handler.clone();
        async move { (!h.handled.lock().expect("lock").is_empty()).then_some(()) }
    })
    .await;
    assert!(worker.is_running(), "a panic must not take the worker down");
    worker.stop().await;

    assert_eq!(
        handler.panics.load(Ordering::SeqCst),
        3,
        "delivered exactly amqp.delivery_limit times"
    );
    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(l.kind, Some(DeadLetterKind::Poison), "{l:?}");
    let error = l.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("handler bug on poison-1") && error.contains("3 deliveries"),
        "the operator sees the panic: {error}"
    );
    assert_eq!(l.id.as_deref(), Some(poison.id.to_string().as_str()));
    assert_eq!(l.routing_key.as_deref(), Some(ROUTING_KEY));
    assert!(l.last_failed_at.is_some(), "{l:?}");
    let table = env.dlq_cli(&["list"]).await;
    assert!(table.contains("poison"), "{table}");
    // A poison message can be selected and replayed like any other.
    let out = env.dlq_cli(&["purge", "--error-kind", "poison"]).await;
    assert_eq!(out.trim(), "purged 1 of 1 dead letters");
}

/// Publish a message the [`Panicky`] handler panics on and wait until it is in the DLQ; returns
/// how often the handler ran.
async fn panics_until_poison(env: &TestEnv) -> usize {
    let handler = Arc::new(Panicky::default());
    let worker = env.spawn(env.worker_config(), handler.clone());
    let mut poison = envelope("poison-q");
    poison.payload = serde_json::json!({ "explode": true });
    env.publish(&poison).await;
    env.wait_dlq_len(1).await;
    worker.stop().await;
    let letters = env.dead_letters().await;
    assert_eq!(letters[0].kind, Some(DeadLetterKind::Poison), "{letters:?}");
    handler.panics.load(Ordering::SeqCst)
}

/// `/readyz` of `broker`, served as every binary serves it.
async fn readyz(broker: &Broker) -> (u16, serde_json::Value) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = shared::health::router(broker.clone(), None);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let response = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("GET /readyz");
    let status = response.status().as_u16();
    let body = response.json().await.expect("JSON");
    server.abort();
    (status, body)
}

/// Issue 15, item 4: changing `amqp.delivery_limit` and restarting used to make every redeclare
/// fail (`inequivalent arg 'x-delivery-limit'`), so the service never became ready. The queues'
/// arguments no longer follow the configuration: the restart finds nothing to change, and the
/// new limit applies at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_delivery_limit_and_restarting_keeps_the_queues_and_applies_the_new_limit() {
    let ns = TestNamespace::new();
    {
        // What a deployment running with amqp.delivery_limit = 5 declared.
        let conn = lapin::Connection::connect(&ns.settings.amqp.url, Default::default())
            .await
            .expect("connect");
        let mut before = ns.topology();
        before.delivery_limit = 5;
        let drift = shared::broker::declare(&conn, &ns.names(), &before)
            .await
            .expect("declare");
        assert!(drift.is_empty(), "{drift:?}");
        let _ = conn.close(200, "declared".into()).await;
    }
    let env = TestEnv::start_in(ns, |s| s.amqp.delivery_limit = 2, None).await;
    assert!(env.broker.drift().is_empty(), "{:?}", env.broker.drift());
    let (status, body) = readyz(&env.broker).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("topology").is_none(), "{body}");
    assert_eq!(panics_until_poison(&env).await, 2, "the new limit applies");
}

/// Issue 15, item 4: a work queue that exists with other arguments (made by an older version,
/// which put `amqp.delivery_limit` on the queue, or by hand) is used as it is. The service is
/// ready and consumes, `/readyz` names the queue, the broker's words and the fix, and the
/// configured limit still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_queue_with_other_arguments_is_used_as_it_is_and_readyz_says_why() {
    let ns = TestNamespace::new();
    let work = ns.names().queue(QUEUE);
    {
        let conn = lapin::Connection::connect(&ns.settings.amqp.url, Default::default())
            .await
            .expect("connect");
        let channel = conn.create_channel().await.expect("channel");
        let mut args = lapin::types::FieldTable::default();
        for (k, v) in [
            ("x-queue-type", "quorum"),
            ("x-dead-letter-exchange", ""),
            ("x-dead-letter-strategy", "at-least-once"),
            ("x-overflow", "reject-publish"),
        ] {
            args.insert(k.into(), lapin::types::AMQPValue::LongString(v.into()));
        }
        args.insert(
            "x-dead-letter-routing-key".into(),
            lapin::types::AMQPValue::LongString(ns.names().dead_letter_queue(QUEUE).into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            lapin::types::AMQPValue::LongUInt(20),
        );
        channel
            .queue_declare(
                work.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .expect("the old work queue");
        let _ = conn.close(200, "declared".into()).await;
    }
    let env = TestEnv::start_in(ns, |s| s.amqp.delivery_limit = 2, None).await;
    let drift = env.broker.drift();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0].queue, work);
    assert!(
        drift[0].broker_says.contains("x-delivery-limit"),
        "the broker's words name the argument: {drift:?}"
    );
    assert!(
        drift[0]
            .fix
            .contains(&format!("rabbitmqctl delete_queue {work}")),
        "{drift:?}"
    );
    let (status, body) = readyz(&env.broker).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["topology"][0]["queue"], work.as_str(), "{body}");
    assert_eq!(
        panics_until_poison(&env).await,
        2,
        "amqp.delivery_limit applies on the old queue too"
    );
}

/// A message that came back more often than `amqp.delivery_limit` without being settled (the
/// worker died on it each time) is parked as `poison` without running the handler again: the
/// runtime, not the queue argument, keeps the crash budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_returned_more_often_than_the_limit_is_parked_without_running_the_handler() {
    let env = TestEnv::start(|s| s.amqp.delivery_limit = 2).await;
    let crashed = envelope("crashed-on");
    env.publish(&crashed).await;
    {
        // Three deliveries that were never settled: taken and given back, as a dying worker's
        // channel does.
        let conn = lapin::Connection::connect(env.url(), Default::default())
            .await
            .expect("connect");
        let channel = conn.create_channel().await.expect("channel");
        for _ in 0..3 {
            let taken = channel
                .basic_get(env.queue().as_str().into(), Default::default())
                .await
                .expect("basic.get")
                .expect("the message");
            taken
                .delivery
                .nack(lapin::options::BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .expect("nack");
        }
        let _ = conn.close(200, "done".into()).await;
    }
    let handler = Arc::new(Panicky::default());
    let worker = env.spawn(env.worker_config(), handler.clone());
    env.wait_dlq_len(1).await;
    worker.stop().await;
    assert!(
        handler.handled.lock().expect("lock").is_empty(),
        "the handler never ran"
    );
    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].kind, Some(DeadLetterKind::Poison), "{letters:?}");
    let error = letters[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("3 times without being settled"), "{error}");
}

/// Fails transiently on `hiccup-*` messages until they come back from the retry ladder;
/// applies everything else.
#[derive(Default)]
struct FailsUntilRetried {
    calls: Mutex<Vec<(String, u32)>>,
    done: Mutex<HashSet<String>>,
}

impl Handler for FailsUntilRetried {
    async fn handle(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        let key = msg.envelope.idempotency_key;
        self.calls
            .lock()
            .expect("lock")
            .push((key.clone(), msg.attempt));
        if key.starts_with("hiccup") && msg.attempt == 0 {
            return Err(HandlerError::transient("503 from ERPNext"));
        }
        self.done.lock().expect("lock").insert(key);
        Ok(Outcome::Done)
    }
}

/// A broker policy for the test's queues, removed even when the test fails.
struct Policy(String);

impl Policy {
    fn set(name: &str, pattern: &str, definition: &str) -> Self {
        let out = testkit::rabbitmqctl(&[
            "set_policy",
            "--apply-to",
            "queues",
            name,
            pattern,
            definition,
        ])
        .output()
        .expect("rabbitmqctl");
        assert!(out.status.success(), "set_policy: {out:?}");
        Self(name.to_string())
    }

    /// Whether the broker shows the policy on `queue`.
    fn applies_to(&self, queue: &str) -> bool {
        testkit::rabbitmqctl(&["list_queues", "-q", "--no-table-headers", "name", "policy"])
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                    let mut cols = l.split_whitespace();
                    cols.next() == Some(queue) && cols.next() == Some(self.0.as_str())
                })
            })
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = testkit::rabbitmqctl(&["clear_policy", &self.0]).output();
    }
}

/// Issue 15: while the broker refuses the retry copy (a full retry queue that rejects publishes:
/// a `max-length` policy and a message already in it), the worker keeps the delivery and tries
/// again instead of returning the message, so the broker's delivery limit is not used up and
/// the message is not dead-lettered as poison. (The runtime before this returned it after each
/// refusal; with `delivery_limit = 2` the third return made it poison within milliseconds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_refusing_the_retry_copy_does_not_use_up_the_delivery_limit() {
    let env = TestEnv::start(|s| {
        s.amqp.delivery_limit = 2;
        s.worker.quick_attempts = 0;
        // The first tier holds the blocker for 2 s: that long the broker refuses the copy.
        s.worker.retry_tiers = vec![Duration::from_secs(2)];
    })
    .await;
    let names = env.ns.names();
    let first_tier = names.retry_queue(QUEUE, Duration::from_secs(2));
    let policy = Policy::set(
        names.namespace(),
        &format!("^{}$", first_tier.replace('.', "\\.")),
        r#"{"max-length":0}"#,
    );
    eventually(
        Duration::from_secs(10),
        "the policy on the retry queue",
        || {
            let on = policy.applies_to(&first_tier);
            async move { on.then_some(()) }
        },
    )
    .await;
    // An empty queue still takes one message; the next is refused until it has left.
    let blocker = Outgoing::envelope(String::new(), first_tier.clone(), &envelope("blocker"), 0)
        .expect("encodes");
    env.broker.publish(&blocker).await.expect("blocker");
    assert_eq!(queue_len(env.url(), &first_tier).await, 1);

    let handler = Arc::new(FailsUntilRetried::default());
    let worker = env.spawn(env.worker_config(), handler.clone());
    env.publish(&envelope("hiccup-1")).await;
    eventually(Duration::from_secs(15), "both messages applied", || {
        let h = handler.clone();
        async move { (h.done.lock().expect("lock").len() == 2).then_some(()) }
    })
    .await;
    worker.stop().await;
    drop(policy);
    let calls = handler.calls.lock().expect("lock").clone();
    let hiccup: Vec<u32> = calls
        .iter()
        .filter(|(k, _)| k == "hiccup-1")
        .map(|(_, attempt)| *attempt)
        .collect();
    assert_eq!(
        hiccup,
        vec![0, 1],
        "one failing call, then the retry copy once the broker took it"
    );
    assert_eq!(
        queue_len(env.url(), &env.dlq()).await,
        0,
        "nothing is poison"
    );
    assert_eq!(queue_len(env.url(), &env.queue()).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown

/// Slow handler that tracks calls started and finished.
#[derive(Default)]
struct Tracked {
    started: AtomicUsize,
    finished: AtomicUsize,
    done_keys: std::sync::Mutex<Vec<String>>,
}

impl Handler for Tracked {
    async fn handle(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        self.done_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg.envelope.idempotency_key);
        Ok(Outcome::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_and_acks_in_flight_deliveries() {
    let env = TestEnv::start(|s| {
        // Many deliveries in flight when the stop comes: each must be acked, not returned.
        s.worker.prefetch = 60;
        s.worker.concurrency = 50;
    })
    .await;
    let total = 120;
    let envelopes: Vec<Envelope> = keys(total, "drain").iter().map(|k| envelope(k)).collect();
    env.publish_all(&envelopes).await;
    let handler = Arc::new(Tracked::default());
    let worker = env.spawn(env.worker_config(), handler.clone());
    eventually(Duration::from_secs(10), "a handler in flight", || {
        let h = handler.clone();
        async move { (h.started.load(Ordering::SeqCst) >= 1).then_some(()) }
    })
    .await;
    worker.stop().await;

    let started = handler.started.load(Ordering::SeqCst);
    let finished = handler.finished.load(Ordering::SeqCst);
    assert_eq!(started, finished, "every started handler ran to completion");
    assert!(
        finished < total,
        "shutdown stopped taking new work ({finished} of {total})"
    );
    // Every finished delivery was acked (else the channel close would have returned it), and
    // nothing else was lost: what is left is exactly what was never handled.
    let left = shared::testkit::drain(env.url(), &env.queue()).await;
    assert_eq!(left.len(), total - finished);
    let done = handler
        .done_keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for m in &left {
        let e: Envelope = serde_json::from_slice(&m.body).expect("envelope");
        assert!(
            !done.contains(&e.idempotency_key),
            "{} was handled and acked, yet came back",
            e.idempotency_key
        );
    }
}

/// A handler that never finishes (a remote call hanging with no timeout, a budget wait of hours).
#[derive(Default)]
struct Stuck {
    started: AtomicUsize,
}

impl Handler for Stuck {
    async fn handle(&self, _msg: Incoming) -> Result<Outcome, HandlerError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
        Ok(Outcome::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_stuck_delivery_after_the_drain_timeout_and_it_is_redelivered() {
    let env = TestEnv::start(|s| {
        s.worker.drain_timeout = Duration::from_secs(2);
    })
    .await;
    env.publish(&envelope("stuck")).await;
    let handler = Arc::new(Stuck::default());
    let worker = env.spawn(env.worker_config(), handler.clone());
    eventually(Duration::from_secs(10), "the handler in flight", || {
        let h = handler.clone();
        async move { (h.started.load(Ordering::SeqCst) == 1).then_some(()) }
    })
    .await;
    let asked = std::time::Instant::now();
    worker.stop().await;
    let took = asked.elapsed();
    // Once the timeout, not twice (the drain and the final wait must not both wait).
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "stopped after {took:?}, not after the 2 s drain timeout (twice would be 4 s)"
    );
    // Unacked, so the broker has it again: nothing is lost.
    let (url, queue) = (env.url().to_string(), env.queue());
    let back = eventually(
        Duration::from_secs(10),
        "the message back in the queue",
        || {
            let (url, queue) = (url.clone(), queue.clone());
            async move {
                let taken = shared::testkit::drain(&url, &queue).await;
                (!taken.is_empty()).then_some(taken)
            }
        },
    )
    .await;
    assert_eq!(back.len(), 1);
    let e: Envelope = serde_json::from_slice(&back[0].body).expect("envelope");
    assert_eq!(e.idempotency_key, "stuck");
}
