//! Test support shared by every crate's integration tests (feature `testkit`, enabled only as a
//! dev-dependency): a unique namespace per test on the real broker and Redis, cleaned up on
//! request, and condition polling instead of sleeps.
//!
//! # Which broker
//! Every suite runs against the broker of `L2L_TEST_AMQP_URL` (default: the machine's RabbitMQ on
//! 5672); `deploy/test.sh` runs the broker-facing suites a second time on RabbitMQ 4 (5673). So
//! nothing in a test names a broker address or calls `rabbitmqctl` itself: [`amqp_url`],
//! [`amqp_addr`], [`amqp_url_in_vhost`] and [`rabbitmqctl`] (which honours
//! `L2L_TEST_RABBITMQCTL`, e.g. `deploy/rabbitmqctl4`) always reach the same node.

use std::future::Future;
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::{Connection, ConnectionProperties};

use crate::broker::{TopologySpec, delete_namespace};
use crate::config::Settings;
use crate::names::Names;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The test broker: `L2L_TEST_AMQP_URL`, else [`AMQP_URL`].
pub fn amqp_url() -> String {
    std::env::var("L2L_TEST_AMQP_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| AMQP_URL.into())
}

/// `host:port` of the test broker, e.g. for a [`TcpProxy`] in front of it.
pub fn amqp_addr() -> String {
    let url = amqp_url();
    match url::Url::parse(&url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("127.0.0.1"),
            u.port().unwrap_or(5672)
        ),
        Err(e) => panic!("L2L_TEST_AMQP_URL {url:?} is not a URL: {e}"),
    }
}

/// The test broker's URL for another virtual host.
pub fn amqp_url_in_vhost(vhost: &str) -> String {
    let url = amqp_url();
    let Ok(mut u) = url::Url::parse(&url) else {
        panic!("L2L_TEST_AMQP_URL {url:?} is not a URL");
    };
    u.set_path(&format!("/{}", vhost.replace('/', "%2f")));
    u.to_string()
}

/// `rabbitmqctl <args>` for the test broker's node, bounded by `timeout 30` (rabbitmqctl waits
/// forever on a wedged broker). `L2L_TEST_RABBITMQCTL` replaces `rabbitmqctl` with a command
/// line (split on whitespace), e.g. `deploy/rabbitmqctl4` for the RabbitMQ 4 node. Every test
/// that acts on the broker as an operator goes through here.
///
/// # Panics
/// When `L2L_TEST_AMQP_URL` names another port than the default broker's but
/// `L2L_TEST_RABBITMQCTL` is not set: `rabbitmqctl` would act on another node than the tests use.
pub fn rabbitmqctl(args: &[&str]) -> std::process::Command {
    let custom = std::env::var("L2L_TEST_RABBITMQCTL")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let ctl: Vec<String> = match custom {
        Some(c) => c.split_whitespace().map(str::to_string).collect(),
        None => {
            let addr = amqp_addr();
            assert!(
                addr.ends_with(":5672"),
                "the test broker is {addr} (L2L_TEST_AMQP_URL) but L2L_TEST_RABBITMQCTL is not \
                 set: plain rabbitmqctl would act on the machine's default node; set it, e.g. to \
                 deploy/rabbitmqctl4 for RabbitMQ 4"
            );
            vec!["rabbitmqctl".into()]
        }
    };
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("30").args(ctl).args(args);
    cmd
}

/// A unique namespace (`t<uuid>`) and settings pointing at it, with millisecond retry tiers.
#[derive(Debug, Clone)]
pub struct TestNamespace {
    pub settings: Settings,
}

impl TestNamespace {
    pub fn new() -> Self {
        let mut settings = Settings::default();
        settings.amqp.namespace = format!("t{}", uuid::Uuid::now_v7().simple());
        settings.amqp.url = amqp_url();
        settings.redis.url =
            std::env::var("L2L_TEST_REDIS_URL").unwrap_or_else(|_| REDIS_URL.into());
        settings.amqp.reconnect_max_delay = Duration::from_millis(500);
        settings.worker.retry_tiers = vec![Duration::from_millis(50), Duration::from_millis(100)];
        settings.worker.quick_attempts = 1;
        settings.worker.quick_base_delay = Duration::from_millis(5);
        Self { settings }
    }

    pub fn names(&self) -> Names {
        self.settings.names()
    }

    pub fn topology(&self) -> TopologySpec {
        TopologySpec {
            delivery_limit: self.settings.amqp.delivery_limit,
            retry_tiers: self.settings.worker.retry_tiers.clone(),
        }
    }

    /// Delete the namespace's queues, exchanges and Redis keys.
    pub async fn cleanup(&self) {
        let _ = bounded(
            "deleting the test namespace",
            delete_namespace(&self.settings.amqp.url, &self.names(), &self.topology()),
        )
        .await;
        self.cleanup_redis().await;
    }

    /// Delete every Redis key of the namespace (found with `SCAN`, never `KEYS`, which blocks a
    /// shared Redis): what a Redis restarted empty looks like to this namespace.
    pub async fn cleanup_redis(&self) {
        let Ok(client) = redis::Client::open(self.settings.redis.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let pattern = format!("{}:*", self.settings.amqp.namespace);
        let mut cursor: u64 = 0;
        loop {
            let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
            else {
                return;
            };
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

impl Default for TestNamespace {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a test waits for one broker operation before it fails instead of hanging.
const BROKER_OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Await a broker operation, or panic after [`BROKER_OP_TIMEOUT`]: a wedged broker (port open,
/// no answer) must fail the test with a reason, not hang the suite.
async fn bounded<T>(what: &str, op: impl Future<Output = T>) -> T {
    match tokio::time::timeout(BROKER_OP_TIMEOUT, op).await {
        Ok(v) => v,
        Err(_) => panic!(
            "the broker did not answer {what} within {BROKER_OP_TIMEOUT:?}; is it wedged? \
             (`bash deploy/services.sh` restarts a broker that does not answer)"
        ),
    }
}

/// Poll `check` until it returns `Some`, or panic after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message taken off a queue by [`drain`].
#[derive(Debug, Clone)]
pub struct Taken {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: lapin::BasicProperties,
}

impl Taken {
    pub fn header(&self, name: &str) -> Option<String> {
        let headers = self.properties.headers().as_ref()?;
        let value = headers.inner().get(name)?;
        Some(match value {
            lapin::types::AMQPValue::LongString(s) => s.to_string(),
            lapin::types::AMQPValue::ShortString(s) => s.to_string(),
            other => format!("{other:?}"),
        })
    }
}

/// Take (and ack) every message currently in `queue`.
pub async fn drain(url: &str, queue: &str) -> Vec<Taken> {
    bounded(&format!("draining {queue}"), drain_unbounded(url, queue)).await
}

async fn drain_unbounded(url: &str, queue: &str) -> Vec<Taken> {
    let conn = match Connection::connect(url, ConnectionProperties::default()).await {
        Ok(c) => c,
        Err(e) => panic!("test broker unreachable: {e}"),
    };
    let channel = match conn.create_channel().await {
        Ok(c) => c,
        Err(e) => panic!("channel: {e}"),
    };
    let mut out = Vec::new();
    loop {
        match channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
        {
            Ok(Some(msg)) => {
                let _ = msg.delivery.ack(BasicAckOptions::default()).await;
                out.push(Taken {
                    routing_key: msg.delivery.routing_key.to_string(),
                    body: msg.delivery.data.clone(),
                    properties: msg.delivery.properties.clone(),
                });
            }
            Ok(None) => break,
            Err(e) => panic!("basic_get on {queue}: {e}"),
        }
    }
    let _ = conn.close(200, "drained".into()).await;
    out
}

/// Number of ready messages in `queue` (passive declare).
pub async fn queue_len(url: &str, queue: &str) -> u32 {
    bounded(
        &format!("counting {queue}"),
        queue_len_unbounded(url, queue),
    )
    .await
}

async fn queue_len_unbounded(url: &str, queue: &str) -> u32 {
    let conn = match Connection::connect(url, ConnectionProperties::default()).await {
        Ok(c) => c,
        Err(e) => panic!("test broker unreachable: {e}"),
    };
    let channel = match conn.create_channel().await {
        Ok(c) => c,
        Err(e) => panic!("channel: {e}"),
    };
    let q = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    let _ = conn.close(200, "done".into()).await;
    match q {
        Ok(q) => q.message_count(),
        Err(e) => panic!("queue {queue}: {e}"),
    }
}

/// A TCP forwarder in front of a real service (the broker, Redis) that a test can cut and
/// restore, to make "the broker is unreachable" deterministic without touching the shared broker.
#[derive(Debug, Clone)]
pub struct TcpProxy {
    addr: std::net::SocketAddr,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Debug)]
struct ProxyState {
    up: std::sync::atomic::AtomicBool,
    epoch: std::sync::Mutex<tokio_util::sync::CancellationToken>,
}

impl TcpProxy {
    /// Start forwarding a fresh loopback port to `upstream` (e.g. [`amqp_addr`]).
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = std::sync::Arc::new(ProxyState {
            up: std::sync::atomic::AtomicBool::new(true),
            epoch: std::sync::Mutex::new(tokio_util::sync::CancellationToken::new()),
        });
        let upstream = upstream.to_string();
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !st.up.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let token = st.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Ok(Self { addr, state })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `amqp://guest:guest@<proxy>/%2f`
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Cut every open connection and refuse new ones.
    pub fn cut(&self) {
        self.state
            .up
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let mut epoch = self.state.epoch.lock().unwrap_or_else(|e| e.into_inner());
        epoch.cancel();
        *epoch = tokio_util::sync::CancellationToken::new();
    }

    /// Accept connections again.
    pub fn restore(&self) {
        self.state
            .up
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Close the broker connections whose client-provided name contains `needle`, with `rabbitmqctl`
/// (the real operator action). Returns how many were closed.
pub fn close_broker_connections(needle: &str) -> usize {
    let out = rabbitmqctl(&[
        "list_connections",
        "-q",
        "--no-table-headers",
        "pid",
        "client_properties",
    ])
    .output();
    let Ok(out) = out else {
        return 0;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(needle)) {
        let Some(pid) = line.split_whitespace().next() else {
            continue;
        };
        let ok = rabbitmqctl(&["close_connection", pid, "closed by test"])
            .output()
            .is_ok_and(|o| o.status.success());
        closed += usize::from(ok);
    }
    closed
}
