//! The AMQP side of every binary: one connection kept alive by a supervisor task, the topology
//! of DESIGN §3 declared on every (re)connect, and publishing that is only done when the broker
//! has confirmed it.
//!
//! Why a supervisor and not lapin's auto-recovery: on reconnect we must redeclare the topology
//! (a broker restart without persistence loses it) and tell consumers and `/readyz` that the
//! connection changed; a `watch` channel carrying the connection generation does both.
//!
//! What this module deliberately does not do: consume. The consumer runtime builds on
//! [`Broker::channel`] and [`Broker::subscribe`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event, ExchangeKind,
};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::redact_url;
use crate::envelope::Envelope;
use crate::names::{self, Exchange, Names, WorkQueue};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable")]
    Unavailable,
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker did not confirm the message (nack)")]
    Nacked,
    #[error("broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error(
        "message was unroutable: no queue bound for exchange {exchange:?} routing key {routing_key:?}"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("cannot encode message: {0}")]
    Encode(#[from] serde_json::Error),
}

impl BrokerError {
    /// Whether trying again later may succeed (connection trouble) or not (a routing bug).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BrokerError::Unavailable
                | BrokerError::Amqp(_)
                | BrokerError::Nacked
                | BrokerError::ConfirmTimeout(_)
        )
    }
}

/// The `x-delivery-limit` of every dead-letter queue: in effect, none. A DLQ is only ever read by
/// the `dlq` commands, which take letters with `basic.get` and give back the ones they keep, and
/// every give-back counts as a delivery on RabbitMQ 3.10 and 4.x alike (nack, reject, a closed
/// channel; measured). Without an explicit limit, 4.x applies its default of 20 and then drops a
/// letter (a DLQ has no dead-letter target), so an operator looking at a letter twenty times
/// would destroy it. `-1` means "unlimited" only on 4.x: 3.10 accepts it and drops the letter at
/// its first return. This value means the same on both. See docs/design.md, "RabbitMQ 3.10
/// and 4".
pub const DLQ_DELIVERY_LIMIT: u32 = i32::MAX as u32;

/// The `x-delivery-limit` of every work queue: the broker's backstop, the same whatever the
/// configuration says. `amqp.delivery_limit` (at most this) is enforced by the consumer runtime
/// from `x-delivery-count`, so changing it never changes a queue's arguments, and a changed
/// argument would make every redeclare fail (`PRECONDITION_FAILED - inequivalent arg`). See
/// docs/design.md, "Queue arguments never follow the configuration".
pub const WORK_QUEUE_DELIVERY_LIMIT: u32 = 1000;

/// How long [`Broker::publish_all`] waits for the broker's confirms; they take milliseconds on a
/// healthy broker. Past it (a blocked or wedged broker) the publish fails as transient instead of
/// holding its caller, e.g. a delivery and its concurrency permit, for good.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// What the topology and its consumers need beyond names: the poison budget the runtime
/// enforces and the retry ladder (one queue per tier, named for its duration).
#[derive(Debug, Clone)]
pub struct TopologySpec {
    pub delivery_limit: u32,
    pub retry_tiers: Vec<Duration>,
}

impl TopologySpec {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            delivery_limit: settings.amqp.delivery_limit,
            retry_tiers: settings.worker.retry_tiers.clone(),
        }
    }
}

/// One message ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

impl Outgoing {
    /// An envelope with the AMQP properties of DESIGN §2: persistent, JSON, `message_id`,
    /// `timestamp`, and headers `x-l2l-attempt`, `x-l2l-correlation-id`, `traceparent`.
    pub fn envelope<P: Serialize>(
        exchange: String,
        routing_key: String,
        envelope: &Envelope<P>,
        attempt: u32,
    ) -> Result<Self, serde_json::Error> {
        let mut headers = FieldTable::default();
        headers.insert(names::HEADER_ATTEMPT.into(), AMQPValue::LongUInt(attempt));
        headers.insert(
            names::HEADER_CORRELATION_ID.into(),
            AMQPValue::LongString(envelope.correlation_id.clone().into()),
        );
        headers.insert(
            names::HEADER_TRACEPARENT.into(),
            AMQPValue::LongString(crate::telemetry::traceparent(&envelope.correlation_id).into()),
        );
        let properties = BasicProperties::default()
            .with_message_id(envelope.id.to_string().into())
            .with_correlation_id(envelope.correlation_id.clone().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
            .with_type(envelope.kind.as_str().into())
            .with_headers(headers);
        Ok(Self {
            exchange,
            routing_key,
            body: envelope.to_json()?,
            properties,
        })
    }
}

#[derive(Clone)]
struct Live {
    conn: Arc<Connection>,
    publisher: Channel,
    generation: u64,
}

struct Inner {
    url: String,
    names: Names,
    spec: TopologySpec,
    max_delay: Duration,
    live: RwLock<Option<Live>>,
    /// `Some(generation)` while connected; every reconnect bumps the generation.
    status: watch::Sender<Option<u64>>,
    /// Wakes the supervisor early when a user of the connection saw it fail.
    kick: Notify,
    /// Queues that exist with other arguments than this version declares, as found by the last
    /// declare: `/readyz` shows them, and the `dlq` commands protect the letters of such DLQs.
    drift: RwLock<Vec<Drift>>,
}

/// Handle to the supervised connection. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &redact_url(&self.inner.url))
            .field("namespace", &self.inner.names.namespace())
            .field("connected", &self.is_ready())
            .finish()
    }
}

impl Broker {
    /// Start the supervisor; it connects in the background and keeps reconnecting until
    /// `shutdown` is cancelled. The broker being down at start is not an error: ingest must come
    /// up and answer 503 rather than crash-loop.
    pub fn start(
        url: &str,
        names: Names,
        spec: TopologySpec,
        max_delay: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let (status, _) = watch::channel(None);
        let broker = Broker {
            inner: Arc::new(Inner {
                url: url.to_string(),
                names,
                spec,
                max_delay,
                live: RwLock::new(None),
                status,
                kick: Notify::new(),
                drift: RwLock::new(Vec::new()),
            }),
        };
        let supervisor = broker.clone();
        tokio::spawn(async move { supervisor.supervise(shutdown).await });
        broker
    }

    /// [`Broker::start`] with the URL, namespace, topology and reconnect cap of `settings`.
    pub fn from_settings(settings: &crate::config::Settings, shutdown: CancellationToken) -> Self {
        Self::start(
            &settings.amqp.url,
            settings.names(),
            TopologySpec::from_settings(settings),
            settings.amqp.reconnect_max_delay,
            shutdown,
        )
    }

    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    pub fn is_ready(&self) -> bool {
        self.inner.status.borrow().is_some()
    }

    /// Connection generation changes: `None` while down.
    pub fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.inner.status.subscribe()
    }

    /// Wait until connected, up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(Option::is_some))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn live(&self) -> Option<Live> {
        self.inner
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The topology this broker declares (delivery limit, retry tiers).
    pub fn topology(&self) -> &TopologySpec {
        &self.inner.spec
    }

    /// Whether dead-letter queue `name` was found with other arguments than
    /// [`DLQ_DELIVERY_LIMIT`] (declared by an older version): on RabbitMQ 4 the default limit of
    /// 20 may apply to it.
    pub fn dlq_lacks_limit(&self, name: &str) -> bool {
        self.drift().iter().any(|d| d.queue == name)
    }

    /// The queues the last declare found with other arguments than this version declares (they
    /// are used as they are; see [`Drift`]).
    pub fn drift(&self) -> Vec<Drift> {
        self.inner
            .drift
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Tell the supervisor that an operation failed; it checks the connection at once.
    pub fn report_failure(&self) {
        self.inner.kick.notify_one();
    }

    /// A new channel with publisher confirms on the live connection, for a consumer.
    pub async fn channel(&self) -> Result<(Channel, u64), BrokerError> {
        let live = self.live().ok_or(BrokerError::Unavailable)?;
        let channel = live
            .conn
            .create_channel()
            .await
            .inspect_err(|_| self.report_failure())?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((channel, live.generation))
    }

    /// Publish and wait for the broker's confirm.
    pub async fn publish(&self, message: &Outgoing) -> Result<(), BrokerError> {
        self.publish_all(std::slice::from_ref(message)).await
    }

    /// Publish every message, then wait for every confirm (pipelined: one round trip, not N).
    /// `Ok` means the broker has taken responsibility for all of them. Bounded: `Unavailable` as
    /// soon as the connection it started on is gone (its confirms can never come; some messages
    /// may have landed), `ConfirmTimeout` after [`CONFIRM_TIMEOUT`].
    pub async fn publish_all(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        let live = self.live().ok_or(BrokerError::Unavailable)?;
        let mut status = self.subscribe();
        let generation = live.generation;
        let gone = async move {
            let _ = status.wait_for(|g| *g != Some(generation)).await;
        };
        let result = tokio::select! {
            biased;
            r = tokio::time::timeout(CONFIRM_TIMEOUT, publish_on(&live.publisher, messages)) => {
                r.unwrap_or(Err(BrokerError::ConfirmTimeout(CONFIRM_TIMEOUT)))
            }
            () = gone => Err(BrokerError::Unavailable),
        };
        if let Err(BrokerError::Amqp(_) | BrokerError::ConfirmTimeout(_)) = &result {
            self.report_failure();
        }
        result
    }

    /// Publish an envelope to an exchange with a confirm.
    pub async fn publish_envelope<P: Serialize>(
        &self,
        exchange: Exchange,
        routing_key: &str,
        envelope: &Envelope<P>,
    ) -> Result<(), BrokerError> {
        let msg = Outgoing::envelope(
            self.inner.names.exchange(exchange),
            routing_key.to_string(),
            envelope,
            0,
        )?;
        self.publish(&msg).await
    }

    async fn supervise(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        let mut generation: u64 = 0;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            match self.connect_once(generation + 1).await {
                Ok(live) => {
                    generation += 1;
                    failures = 0;
                    tracing::info!(generation, url = %redact_url(&self.inner.url), "connected to broker");
                    let mut events = live.conn.events_listener();
                    *self.inner.live.write().unwrap_or_else(|e| e.into_inner()) =
                        Some(live.clone());
                    self.inner.status.send_replace(Some(generation));
                    metrics::gauge!("l2l_broker_connected").set(1.0);
                    let mut tick = tokio::time::interval(Duration::from_millis(500));
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            ev = events.next() => match ev {
                                Some(Event::Error(e)) => {
                                    tracing::warn!(error = %e, "broker connection error");
                                    break;
                                }
                                Some(_) => {}
                                None => break,
                            },
                            _ = tick.tick() => {}
                            _ = self.inner.kick.notified() => {}
                        }
                        if !live.conn.status().connected() || !live.publisher.status().connected() {
                            break;
                        }
                    }
                    *self.inner.live.write().unwrap_or_else(|e| e.into_inner()) = None;
                    self.inner.status.send_replace(None);
                    metrics::gauge!("l2l_broker_connected").set(0.0);
                    if shutdown.is_cancelled() {
                        let _ = live.conn.close(200, "shutdown".into()).await;
                        break;
                    }
                    tracing::warn!(generation, "lost broker connection; reconnecting");
                    metrics::counter!("l2l_broker_reconnects_total").increment(1);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(error = %e, failures, "cannot connect to broker");
                    }
                }
            }
            // Capped, jittered linear backoff (svix: 300 ms × failures, max a few seconds).
            let base = Duration::from_millis(300).saturating_mul(failures.max(1));
            let delay = base.min(self.inner.max_delay);
            let jitter = rand::random_range(0..=delay.as_millis() as u64 / 4 + 1);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay + Duration::from_millis(jitter)) => {}
            }
        }
    }

    async fn connect_once(&self, generation: u64) -> Result<Live, BrokerError> {
        // The name shows in the management UI and lets operators (and tests) find this process's
        // connection: `<namespace>/<pid>`.
        let props = ConnectionProperties::default().with_connection_name(
            format!("{}/{}", self.inner.names.namespace(), std::process::id()).into(),
        );
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(&self.inner.url, props),
        )
        .await
        .map_err(|_| BrokerError::Unavailable)??;
        let drift = declare(&conn, &self.inner.names, &self.inner.spec).await?;
        *self.inner.drift.write().unwrap_or_else(|e| e.into_inner()) = drift;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Live {
            conn: Arc::new(conn),
            publisher: channel,
            generation,
        })
    }
}

/// Publish on a confirm-mode channel and wait for every confirm.
pub async fn publish_on(channel: &Channel, messages: &[Outgoing]) -> Result<(), BrokerError> {
    let mut pending = Vec::with_capacity(messages.len());
    for m in messages {
        let confirm = channel
            .basic_publish(
                ShortString::from(m.exchange.as_str()),
                ShortString::from(m.routing_key.as_str()),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &m.body,
                m.properties.clone(),
            )
            .await?;
        pending.push((m, confirm));
    }
    for (m, confirm) in pending {
        match confirm.await? {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_)) => {
                return Err(BrokerError::Unroutable {
                    exchange: m.exchange.clone(),
                    routing_key: m.routing_key.clone(),
                });
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => return Err(BrokerError::Nacked),
        }
    }
    Ok(())
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A queue that exists with other arguments than this version declares: an older version made
/// it (a queue's arguments can never change), or an operator did. It is used as it is: the
/// service comes up ready and consumes, logs one warning naming the fix, and `/readyz` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub queue: String,
    /// The broker's own words (`inequivalent arg 'x-delivery-limit' … received … but current
    /// is …`), which name the argument and both values.
    pub broker_says: String,
    /// What the operator can do about it.
    pub fix: String,
}

/// Declares queues on one connection, replacing the channel a refused declare closes.
struct Declarer<'a> {
    conn: &'a Connection,
    channel: Channel,
    drift: Vec<Drift>,
}

impl<'a> Declarer<'a> {
    async fn new(conn: &'a Connection) -> Result<Self, lapin::Error> {
        Ok(Self {
            conn,
            channel: conn.create_channel().await?,
            drift: Vec::new(),
        })
    }

    /// Declare durable queue `name` with `args`. When it exists with other arguments, declare it
    /// passively instead (which succeeds whatever they are), record the [`Drift`] and warn once
    /// per connect with `fix`.
    async fn queue(
        &mut self,
        name: &str,
        args: FieldTable,
        fix: impl FnOnce() -> String,
    ) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        match self.channel.queue_declare(name.into(), durable, args).await {
            Ok(_) => Ok(()),
            Err(e) if is_precondition_failed(&e) => {
                // The refusal closed the channel; the queue exists, so a passive declare on a
                // new one tells us it is still there.
                self.channel = self.conn.create_channel().await?;
                self.channel
                    .queue_declare(
                        name.into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..durable
                        },
                        FieldTable::default(),
                    )
                    .await?;
                let drift = Drift {
                    queue: name.to_string(),
                    broker_says: e.to_string(),
                    fix: fix(),
                };
                tracing::warn!(
                    queue = name,
                    broker_says = %drift.broker_says,
                    "queue {name} exists with other arguments than this version declares; it is \
                     used as it is. {}",
                    drift.fix
                );
                self.drift.push(drift);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn finish(self) -> Vec<Drift> {
        let _ = self.channel.close(200, "topology declared".into()).await;
        self.drift
    }
}

/// Declare the whole topology of DESIGN §3 for `names`. Idempotent: every binary calls it on
/// every connect. Returns the queues found with other arguments (see [`Drift`]): none of them
/// depends on the configuration (retry queues are named for their TTL, the delivery limits are
/// constants), so only a queue made by an older version or by hand can differ.
pub async fn declare(
    conn: &Connection,
    names: &Names,
    spec: &TopologySpec,
) -> Result<Vec<Drift>, lapin::Error> {
    let mut declarer = Declarer::new(conn).await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for ex in [Exchange::Events, Exchange::Commands] {
        declarer
            .channel
            .exchange_declare(
                names.exchange(ex).into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
    }
    for q in WorkQueue::ALL {
        let work = names.queue(q);
        let dlq = names.dead_letter_queue(q);
        declare_dead_letter_queue(&mut declarer, names, &dlq).await?;
        // Quorum: replicated, and the only type with a delivery limit. The runtime dead-letters
        // a message at `amqp.delivery_limit` itself; the broker's constant limit is the backstop
        // (dead-lettered to the DLQ, at-least-once so that hop cannot lose it either).
        declarer
            .queue(
                &work,
                table(&[
                    ("x-queue-type", text("quorum")),
                    (
                        "x-delivery-limit",
                        AMQPValue::LongUInt(WORK_QUEUE_DELIVERY_LIMIT),
                    ),
                    ("x-dead-letter-exchange", text("")),
                    ("x-dead-letter-routing-key", text(&dlq)),
                    ("x-dead-letter-strategy", text("at-least-once")),
                    ("x-overflow", text("reject-publish")),
                ]),
                || {
                    format!(
                        "lead2ledger enforces amqp.delivery_limit = {} itself; the broker keeps \
                         the queue's own x-delivery-limit as an extra backstop (a lower one \
                         parks messages earlier). To give it this version's arguments, re-create \
                         it while it is empty: stop the workers of {work}, wait for 0 messages, \
                         `rabbitmqctl delete_queue {work}`, start them again (producers' \
                         publishes fail and are retried meanwhile; nothing is lost)",
                        spec.delivery_limit
                    )
                },
            )
            .await?;
        let (exchange, patterns) = q.bindings();
        for pattern in patterns {
            declarer
                .channel
                .queue_bind(
                    work.as_str().into(),
                    names.exchange(exchange).into(),
                    (*pattern).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        // One queue per tier, each with a queue-wide TTL that dead-letters back to the work queue:
        // no head-of-line blocking as with per-message TTLs in one queue.
        for tier in &spec.retry_tiers {
            let retry = names.retry_queue(q, *tier);
            declarer
                .queue(
                    &retry,
                    table(&[
                        ("x-queue-type", text("quorum")),
                        (
                            "x-message-ttl",
                            AMQPValue::LongLongInt(tier.as_millis() as i64),
                        ),
                        ("x-dead-letter-exchange", text("")),
                        ("x-dead-letter-routing-key", text(&work)),
                        ("x-dead-letter-strategy", text("at-least-once")),
                        ("x-overflow", text("reject-publish")),
                    ]),
                    || {
                        format!(
                            "Its messages still return to {work} when their time is up. To give \
                             it this version's arguments, delete it once it is empty \
                             (`rabbitmqctl delete_queue {retry}`); the next start re-creates it"
                        )
                    },
                )
                .await?;
        }
    }
    // Migration: remove the bindings an older version made (the mapper's queue bound to `#`)
    // only now that every queue and its new bindings exist, so no event is unroutable in
    // between. Unbinding a binding that does not exist succeeds, so this is idempotent. Outcomes
    // already queued in the mapper's main queue are still handled there (same handler); new ones
    // go to the outcome queue only, never to both. See docs/design.md, "Outcomes have their own
    // queue".
    for q in WorkQueue::ALL {
        let (exchange, _) = q.bindings();
        for pattern in q.retired_bindings() {
            declarer
                .channel
                .queue_unbind(
                    names.queue(q).into(),
                    names.exchange(exchange).into(),
                    (*pattern).into(),
                    FieldTable::default(),
                )
                .await?;
        }
    }
    Ok(declarer.finish().await)
}

/// Declare dead-letter queue `name` (quorum) with [`DLQ_DELIVERY_LIMIT`].
///
/// An existing DLQ without that limit cannot safely be re-created: quorum queues refuse
/// `queue.delete` with `if-empty` (`NOT_IMPLEMENTED`, on 3.10 and 4.0), so between moving its
/// letters out and deleting it a new dead letter could arrive and be deleted with it. So it is
/// kept as it is ([`Drift`]), the warning tells the operator how to give it the limit (a policy,
/// which applies to an existing queue), and meanwhile the `dlq` commands refresh its letters
/// before RabbitMQ 4's default limit of 20 can drop them.
async fn declare_dead_letter_queue(
    declarer: &mut Declarer<'_>,
    names: &Names,
    name: &str,
) -> Result<(), lapin::Error> {
    declarer
        .queue(
            name,
            table(&[
                ("x-queue-type", text("quorum")),
                ("x-delivery-limit", AMQPValue::LongUInt(DLQ_DELIVERY_LIMIT)),
            ]),
            || {
                let pattern = format!(r"^{}\.[^.]+\.dlq$", names.namespace().replace('.', r"\."));
                format!(
                    "Without an explicit x-delivery-limit (an older lead2ledger) RabbitMQ 4 \
                     applies a default limit of 20 to it; the dlq commands refresh its letters \
                     before they reach it. To lift the limit for good, apply a policy: \
                     rabbitmqctl set_policy --apply-to queues {namespace}-dlq-limit '{pattern}' \
                     '{{\"delivery-limit\":{DLQ_DELIVERY_LIMIT}}}'",
                    namespace = names.namespace(),
                )
            },
        )
        .await
}

/// The broker refused a declare because the entity exists with other properties.
fn is_precondition_failed(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
    )
}

/// Delete everything [`declare`] created for `names` (tests clean up after themselves).
pub async fn delete_namespace(
    url: &str,
    names: &Names,
    spec: &TopologySpec,
) -> Result<(), lapin::Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    for q in WorkQueue::ALL {
        let mut queues = vec![names.queue(q), names.dead_letter_queue(q)];
        queues.extend(spec.retry_tiers.iter().map(|t| names.retry_queue(q, *t)));
        for name in queues {
            channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
    }
    for ex in [Exchange::Events, Exchange::Commands] {
        channel
            .exchange_delete(names.exchange(ex).into(), Default::default())
            .await?;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
