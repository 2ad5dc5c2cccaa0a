//! The consumer loop every worker runs (DESIGN §3, §4): take deliveries from one work queue,
//! hand them to the [`Handler`], and turn each answer into exactly one ack — after the effect,
//! the retry copy or the dead letter is durable.
//!
//! # Shape
//! - One channel per connection generation, `basic_qos(prefetch)`, `no_ack = false`. Up to
//!   `concurrency` deliveries run at once (a semaphore permit per delivery task, all tasks in one
//!   [`TaskTracker`] so shutdown can wait for them).
//! - When the channel or connection dies, the loop waits for the [`Broker`] supervisor's next
//!   generation and consumes again. Deliveries still running on the dead channel finish but
//!   cannot be acked; the broker redelivers them and handlers are idempotent (DESIGN §5).
//! - Shutdown: stop taking deliveries, wait for every running one to finish and be acked, then
//!   `basic_cancel` and close the channel; deliveries buffered but not started go back to the
//!   queue (acks sent after `basic.cancel` are dropped by quorum queues on RabbitMQ 3.10). The
//!   wait is bounded by `worker.drain_timeout`: past it the channel is closed with the stragglers
//!   unacked (they are redelivered, as after a crash) and the worker returns, logging how many.
//!
//! # Failure paths
//! - Transient error: quick in-process retries (jittered exponential backoff, `backon`,
//!   honouring `retry_after` up to [`MAX_QUICK_RETRY_AFTER`]); then [`classify`] picks the retry
//!   tier from `x-l2l-attempt`; the copy goes to `<q>.retry.<tier>` with a confirm, then the
//!   original is acked. After the last tier: DLQ as `exhausted`.
//! - Permanent error, undecodable body, unknown kind: DLQ with a confirm, then ack.
//! - Handler panic: caught per delivery and treated like a crash of the worker on that message:
//!   the delivery is nacked with requeue, which counts towards the work queue's
//!   `x-delivery-limit`. At the `amqp.delivery_limit`-th delivery (the broker's
//!   `x-delivery-count` + 1) the runtime dead-letters it itself as `poison`, with the panic
//!   message, so a panicking handler runs exactly `delivery_limit` times on RabbitMQ 3.10 and
//!   4.x alike. A worker that really crashes on a message never settles it; the runtime parks it
//!   as `poison` when it arrives with more than `delivery_limit` earlier deliveries (it ran
//!   `delivery_limit + 1` times; both versions count a closed channel like a nack — measured, see
//!   docs/design.md). The work queue's own `x-delivery-limit` is a constant backstop above any
//!   allowed `amqp.delivery_limit`, so changing the configuration never changes a queue. A panic is a bug, not a remote hiccup, so the ladder
//!   (meant for remote systems recovering) would only delay the operator; and the worker keeps
//!   serving other messages instead of crash-looping.
//! - Republishing (a retry copy, a dead letter) that fails for a passing reason (a nack, a
//!   timeout) is tried again in-process for up to [`REPUBLISH_PATIENCE`] while the delivery's
//!   connection lives, instead of returning the message at once: every return would use up one
//!   of its `delivery_limit` deliveries, and enough broker hiccups would turn a healthy message
//!   into `poison`.
//!
//! # Bounded broker operations
//! Every broker operation of the consume path (ack, nack, a republish and its confirm) is
//! bounded by [`BROKER_OP_TIMEOUT`] and abandoned as soon as the delivery's connection
//! generation is gone (after `rabbitmqctl close_connection`, a proxy cut, a broker restart): on a
//! dead connection an ack can never land and the broker redelivers anyway, and an operation
//! waiting for good would hold the delivery's concurrency permit for good. The task then ends and
//! gives its permit back. (Publishes a handler makes itself go through [`Broker::publish_all`],
//! which is bounded the same way.)
//!
//! What this module deliberately does not do: deduplicate. Handlers own their idempotency
//! (Redis markers, the target's unique keys) because only they know what the effect is.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, field};

use crate::broker::{Broker, BrokerError, Outgoing};
use crate::config::WorkerConfig;
use crate::envelope::{Envelope, Kind};
use crate::names::{WorkQueue, tier_label};

use super::dead_letter::{self, Original};
use super::disposition::{DeadLetterKind, Disposition, classify};
use super::handler::{Handler, HandlerError, Incoming, Outcome};
use super::metrics;

/// A `retry_after` longer than this is not waited out in-process (it would hold a prefetch slot
/// and a concurrency permit for that long); the message goes to the retry ladder at once.
pub const MAX_QUICK_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Consecutive failures to start consuming on a healthy connection before `run` gives up: the
/// queue is missing or access is refused, a deployment error that should crash the process.
const MAX_CONSUME_FAILURES: u32 = 5;

/// How long a failing republish (retry copy, dead letter) is tried again in-process before the
/// message goes back to its queue (where the return counts as a delivery).
pub const REPUBLISH_PATIENCE: Duration = Duration::from_secs(30);

/// How long one broker operation of the consume path (an ack, a nack, a publish with its
/// confirm) may take before it is abandoned; they take milliseconds on a live connection.
pub const BROKER_OP_TIMEOUT: Duration = Duration::from_secs(10);

/// The header in which RabbitMQ counts a quorum queue message's earlier deliveries (absent on a
/// first delivery).
const DELIVERY_COUNT: &str = "x-delivery-count";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid worker configuration: {0}")]
    Config(&'static str),
    #[error("cannot consume from queue {queue}: {source}")]
    Consume {
        queue: String,
        #[source]
        source: lapin::Error,
    },
}

/// One consumer of one work queue with one handler.
pub struct Worker<H> {
    broker: Broker,
    queue: WorkQueue,
    cfg: WorkerConfig,
    handler: H,
}

impl<H> std::fmt::Debug for Worker<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// What every delivery task needs; shared, read-only.
struct Ctx<H> {
    broker: Broker,
    queue: WorkQueue,
    handler: H,
    tiers: Vec<Duration>,
    quick_attempts: u32,
    quick_base_delay: Duration,
    /// `amqp.delivery_limit`: a message the handler panicked on this often is poison.
    delivery_limit: u32,
}

/// Why the pump over one channel stopped.
enum PumpEnd {
    Shutdown,
    ChannelLost,
}

/// A failed handler call: an answer, or a panic (never retried in-process).
enum Failure {
    Handler(HandlerError),
    Panic(String),
}

impl<H: Handler> Worker<H> {
    /// `cfg.retry_tiers` must be the tiers the topology was declared with (the same
    /// `worker.retry_tiers` setting): a tier without its queue makes the retry publish unroutable.
    pub fn new(broker: Broker, queue: WorkQueue, cfg: WorkerConfig, handler: H) -> Self {
        Self {
            broker,
            queue,
            cfg,
            handler,
        }
    }

    /// Consume until `shutdown` is cancelled, then drain: every delivery taken is handled and
    /// acked (or left to the broker if its channel died) before this returns `Ok`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RuntimeError> {
        if self.cfg.concurrency == 0 {
            return Err(RuntimeError::Config(
                "worker.concurrency must be at least 1",
            ));
        }
        if self.cfg.prefetch == 0 {
            return Err(RuntimeError::Config(
                "worker.prefetch must be at least 1 (0 means unlimited)",
            ));
        }
        let queue_name = self.broker.names().queue(self.queue);
        let ctx = Arc::new(Ctx {
            broker: self.broker.clone(),
            queue: self.queue,
            handler: self.handler,
            tiers: self.cfg.retry_tiers.clone(),
            quick_attempts: self.cfg.quick_attempts,
            quick_base_delay: self.cfg.quick_base_delay,
            delivery_limit: self.broker.topology().delivery_limit,
        });
        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency));
        let mut status = self.broker.subscribe();
        let mut consume_failures: u32 = 0;
        let mut last_channel: Option<Channel> = None;

        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = status.wait_for(Option::is_some) => r.is_ok(),
            };
            if !connected {
                // The broker handle is gone (cannot happen while we hold a clone); nothing to consume.
                break;
            }
            let (channel, generation) = match self.broker.channel().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "no channel yet; waiting for the connection");
                    if !pause(&shutdown, &mut status, Duration::from_millis(500)).await {
                        break;
                    }
                    continue;
                }
            };
            let consumer = match start_consuming(
                &channel,
                &queue_name,
                self.queue,
                self.cfg.prefetch,
            )
            .await
            {
                Ok(c) => {
                    consume_failures = 0;
                    c
                }
                Err(e) => {
                    consume_failures += 1;
                    tracing::warn!(error = %e, queue = %queue_name, consume_failures, "cannot start consuming");
                    let _ = channel.close(200, "consume failed".into()).await;
                    if consume_failures >= MAX_CONSUME_FAILURES && self.broker.is_ready() {
                        finish_in_flight(&tracker, self.cfg.drain_timeout).await;
                        return Err(RuntimeError::Consume {
                            queue: queue_name,
                            source: e,
                        });
                    }
                    let delay = Duration::from_millis(300).saturating_mul(consume_failures);
                    if !pause(&shutdown, &mut status, delay).await {
                        break;
                    }
                    continue;
                }
            };
            tracing::info!(queue = %queue_name, generation, consumer_tag = %consumer.tag(), "consuming");
            let end = pump(
                &ctx,
                consumer.clone(),
                generation,
                &permits,
                &tracker,
                &mut status,
                &shutdown,
            )
            .await;
            match end {
                PumpEnd::Shutdown => {
                    drain(&channel, &consumer, &tracker, self.cfg.drain_timeout).await;
                    last_channel = Some(channel);
                    break;
                }
                PumpEnd::ChannelLost => {
                    tracing::warn!(queue = %queue_name, generation, "consumer channel lost; unacked deliveries will be redelivered");
                    self.broker.report_failure();
                    if !pause(&shutdown, &mut status, Duration::from_millis(300)).await {
                        break;
                    }
                }
            }
        }

        // A drain already waited (once: a second wait would double the promised bound).
        if last_channel.is_none() {
            finish_in_flight(&tracker, self.cfg.drain_timeout).await;
        }
        if let Some(channel) = last_channel
            && channel.status().connected()
            && let Err(e) = channel.close(200, "shutdown".into()).await
        {
            tracing::debug!(error = %e, "closing the consumer channel failed");
        }
        tracing::info!(queue = %queue_name, "consumer drained and stopped");
        Ok(())
    }
}

/// `basic_qos` then `basic_consume` with a unique tag.
async fn start_consuming(
    channel: &Channel,
    queue_name: &str,
    queue: WorkQueue,
    prefetch: u16,
) -> Result<Consumer, lapin::Error> {
    // Per-consumer prefetch: bounds unacked deliveries (memory, and the work lost to a crash).
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    // Random suffix: several replicas (and several generations of one) must never share a tag.
    let tag = format!(
        "{}-{}-{:016x}",
        queue.base_name(),
        std::process::id(),
        rand::random::<u64>()
    );
    channel
        .basic_consume(
            queue_name.into(),
            tag.into(),
            BasicConsumeOptions {
                // Manual acks: a delivery is acked only after its effect is durable.
                no_ack: false,
                // Replicas compete for the queue.
                exclusive: false,
                no_local: false,
                nowait: false,
            },
            FieldTable::default(),
        )
        .await
}

/// Wait up to `delay`, returning early on a connection change; `false` on shutdown.
async fn pause(
    shutdown: &CancellationToken,
    status: &mut watch::Receiver<Option<u64>>,
    delay: Duration,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = status.changed() => true,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Hand deliveries of one channel to tasks until shutdown or the channel dies.
async fn pump<H: Handler>(
    ctx: &Arc<Ctx<H>>,
    mut consumer: Consumer,
    generation: u64,
    permits: &Arc<Semaphore>,
    tracker: &TaskTracker,
    status: &mut watch::Receiver<Option<u64>>,
    shutdown: &CancellationToken,
) -> PumpEnd {
    loop {
        // Take a permit before the next delivery, so at most `concurrency` run and the rest wait
        // in the client's prefetch buffer.
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return PumpEnd::Shutdown,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return PumpEnd::Shutdown,
            },
        };
        let next = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return PumpEnd::Shutdown,
                changed = status.changed() => {
                    if changed.is_err() || *status.borrow() != Some(generation) {
                        return PumpEnd::ChannelLost;
                    }
                }
                next = consumer.next() => break next,
            }
        };
        match next {
            Some(Ok(delivery)) => spawn_delivery(ctx, tracker, delivery, generation, permit),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer stream failed");
                return PumpEnd::ChannelLost;
            }
            None => return PumpEnd::ChannelLost,
        }
    }
}

/// Finish and ack what is running, then cancel the consumer.
///
/// The order matters: RabbitMQ 3.10 drops acks that arrive after `basic.cancel` on a quorum queue
/// (observed: the deliveries came back with `x-delivery-count` 1 after a clean stop), so in-flight
/// deliveries are finished and acked while the consumer is still registered. Deliveries the client
/// had buffered but not started are not touched; they go back to the queue when the channel
/// closes (one redelivery each, far below the delivery limit).
async fn drain(channel: &Channel, consumer: &Consumer, tracker: &TaskTracker, limit: Duration) {
    if !finish_in_flight(tracker, limit).await {
        // Cancelling now would drop the stragglers' late acks anyway; closing the channel
        // returns them (and the buffered deliveries) to the queue.
        return;
    }
    if let Err(e) = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
    {
        tracing::debug!(error = %e, "basic.cancel failed; the channel close returns buffered deliveries");
    }
}

/// Wait for the running deliveries, at most `limit`; `false` (logged) when some are still running.
async fn finish_in_flight(tracker: &TaskTracker, limit: Duration) -> bool {
    tracker.close();
    if tokio::time::timeout(limit, tracker.wait()).await.is_ok() {
        return true;
    }
    tracing::warn!(
        in_flight = tracker.len(),
        drain_timeout = ?limit,
        "deliveries still running after worker.drain_timeout; stopping without them (they stay \
         unacked and will be redelivered)"
    );
    false
}

fn spawn_delivery<H: Handler>(
    ctx: &Arc<Ctx<H>>,
    tracker: &TaskTracker,
    delivery: Delivery,
    generation: u64,
    permit: OwnedSemaphorePermit,
) {
    let ctx = ctx.clone();
    tracker.spawn(async move {
        let span = tracing::info_span!(
            "delivery",
            queue = ctx.queue.base_name(),
            correlation_id = field::Empty,
            kind = field::Empty,
            idempotency_key = field::Empty,
            attempt = field::Empty,
            message_id = field::Empty,
            redelivered = delivery.redelivered,
        );
        process(&ctx, &delivery, generation).instrument(span).await;
        drop(permit);
    });
}

/// Everything that happens to one delivery (taken on connection `generation`), ending in
/// exactly one ack or nack.
async fn process<H: Handler>(ctx: &Ctx<H>, delivery: &Delivery, generation: u64) {
    metrics::consumed(ctx.queue);
    let original = Original {
        body: &delivery.data,
        properties: &delivery.properties,
        exchange: delivery.exchange.as_str(),
        routing_key: delivery.routing_key.as_str(),
    };
    let attempt = original.attempt();
    let span = tracing::Span::current();
    span.record("attempt", attempt);
    if let Some(id) = original.message_id() {
        span.record("message_id", id.as_str());
    }
    if let Some(c) = original.correlation_id() {
        span.record("correlation_id", c.as_str());
    }

    // A worker that died on this message (a crash, an OOM kill) never settled it; every such
    // return is one delivery. Past the budget it is parked without running the handler again —
    // what the broker's own limit did when it followed the configuration.
    let earlier = earlier_deliveries(delivery);
    if earlier > ctx.delivery_limit {
        let reason = format!(
            "delivered {earlier} times without being settled: the worker stopped (crashed, was \
             killed, lost its connection) while handling it each time \
             (amqp.delivery_limit = {})",
            ctx.delivery_limit
        );
        dead_letter(
            ctx,
            delivery,
            generation,
            &original,
            DeadLetterKind::Poison,
            &reason,
            None,
        )
        .await;
        return;
    }

    let envelope: Envelope = match serde_json::from_slice(&delivery.data) {
        Ok(e) => e,
        Err(e) => {
            let reason = format!("body is not a lead2ledger envelope: {e}");
            dead_letter(
                ctx,
                delivery,
                generation,
                &original,
                DeadLetterKind::Undecodable,
                &reason,
                None,
            )
            .await;
            return;
        }
    };
    span.record("correlation_id", envelope.correlation_id.as_str());
    span.record("kind", envelope.kind.as_str());
    span.record("idempotency_key", envelope.idempotency_key.as_str());
    if let Kind::Unknown(kind) = &envelope.kind {
        let reason = format!(
            "unknown message kind {kind:?}: this build of {} does not handle it (a newer producer?)",
            ctx.queue.base_name()
        );
        dead_letter(
            ctx,
            delivery,
            generation,
            &original,
            DeadLetterKind::UnknownKind,
            &reason,
            None,
        )
        .await;
        return;
    }

    let incoming = Incoming {
        envelope,
        routing_key: original.original_routing_key(),
        attempt,
        redelivered: delivery.redelivered,
    };
    let result = match call_with_quick_retries(ctx, incoming.clone()).await {
        Ok(outcome) => Ok(outcome),
        Err(Failure::Handler(e)) => Err(e),
        Err(Failure::Panic(msg)) => {
            metrics::panicked(ctx.queue);
            let deliveries = earlier_deliveries(delivery).saturating_add(1);
            if deliveries >= ctx.delivery_limit {
                let reason = format!(
                    "the handler panicked on each of {deliveries} deliveries \
                     (amqp.delivery_limit = {}): {msg}",
                    ctx.delivery_limit
                );
                dead_letter(
                    ctx,
                    delivery,
                    generation,
                    &original,
                    DeadLetterKind::Poison,
                    &reason,
                    None,
                )
                .await;
                return;
            }
            tracing::error!(panic = %msg, deliveries, "handler panicked; returning the message (counts towards the delivery limit)");
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            nack(ctx, delivery, generation, requeue).await;
            return;
        }
    };

    match classify(&result, attempt, ctx.tiers.len()) {
        Disposition::Ack => {
            let label = result.as_ref().map(Outcome::label).unwrap_or("done");
            if let Ok(Outcome::Ignored { reason }) = &result {
                tracing::debug!(%reason, "ignored");
            }
            ack(ctx, delivery, generation, label).await;
        }
        Disposition::RetryLater { tier } => {
            let Some(delay) = ctx.tiers.get(tier).copied() else {
                // classify only returns tiers below `tiers.len()`.
                return;
            };
            let error = result
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default();
            tracing::warn!(%error, tier = %tier_label(delay), "transient failure; retrying later");
            let queue_name = ctx.broker.names().retry_queue(ctx.queue, delay);
            let copy = dead_letter::retry_message(&original, queue_name, chrono::Utc::now());
            if republish(ctx, delivery, generation, &copy).await {
                metrics::retried(ctx.queue, tier_label(delay));
                ack(ctx, delivery, generation, "retried").await;
            }
        }
        Disposition::DeadLetter { kind, reason } => {
            dead_letter(
                ctx,
                delivery,
                generation,
                &original,
                kind,
                &reason,
                Some(&incoming),
            )
            .await;
        }
    }
}

/// Call the handler, retrying transient failures in-process.
async fn call_with_quick_retries<H: Handler>(
    ctx: &Ctx<H>,
    incoming: Incoming,
) -> Result<Outcome, Failure> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(ctx.quick_base_delay)
        .with_max_delay(ctx.quick_base_delay.saturating_mul(16))
        .with_max_times(ctx.quick_attempts as usize)
        .with_jitter();
    let call = || call_once(ctx, incoming.clone());
    call.retry(backoff)
        .when(|f: &Failure| match f {
            Failure::Handler(e) => {
                e.is_transient() && e.retry_after.is_none_or(|d| d <= MAX_QUICK_RETRY_AFTER)
            }
            Failure::Panic(_) => false,
        })
        .adjust(|f: &Failure, next: Option<Duration>| match (f, next) {
            // Honour the remote's wish, but only while the backoff still allows another attempt.
            (Failure::Handler(e), Some(_)) => e.retry_after.or(next),
            _ => next,
        })
        .notify(|f: &Failure, after: Duration| {
            metrics::quick_retry(ctx.queue);
            if let Failure::Handler(e) = f {
                tracing::debug!(error = %e, after_ms = after.as_millis() as u64, "quick retry");
            }
        })
        .await
}

/// One handler call, timed, with a panic caught and reported as [`Failure::Panic`].
async fn call_once<H: Handler>(ctx: &Ctx<H>, incoming: Incoming) -> Result<Outcome, Failure> {
    let started = Instant::now();
    let result = AssertUnwindSafe(async { ctx.handler.handle(incoming).await })
        .catch_unwind()
        .await;
    let (label, result) = match result {
        Ok(Ok(outcome)) => ("ok", Ok(outcome)),
        Ok(Err(e)) => (
            if e.is_transient() {
                "transient"
            } else {
                "permanent"
            },
            Err(Failure::Handler(e)),
        ),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            ("panic", Err(Failure::Panic(msg)))
        }
    };
    metrics::handler_latency(ctx.queue, label, started.elapsed());
    result
}

/// How often the broker delivered this message before (`x-delivery-count`; RabbitMQ 3.10 and
/// 4.x count nacks, rejects and closed channels alike).
fn earlier_deliveries(delivery: &Delivery) -> u32 {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(DELIVERY_COUNT))
        .and_then(dead_letter::as_u32)
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
async fn dead_letter<H: Handler>(
    ctx: &Ctx<H>,
    delivery: &Delivery,
    generation: u64,
    original: &Original<'_>,
    kind: DeadLetterKind,
    reason: &str,
    seen: Option<&Incoming>,
) {
    tracing::error!(error_kind = %kind, error = %reason, "dead-lettering message");
    let letter = dead_letter::dead_letter_message(
        ctx.broker.names(),
        ctx.queue,
        original,
        kind,
        reason,
        chrono::Utc::now(),
    );
    if republish(ctx, delivery, generation, &letter).await {
        // Between the confirmed copy and the ack: a crash here re-runs the report with the
        // redelivery (the DLQ may then hold the letter twice, as with any crash before an ack).
        if let Some(msg) = seen {
            ctx.handler.dead_lettered(msg, kind, reason).await;
        }
        metrics::dead_lettered(ctx.queue, kind);
        ack(ctx, delivery, generation, "dead_lettered").await;
    }
}

/// Publish a retry copy or dead letter and wait for its confirm. A passing failure (a nack, a
/// timeout, a channel error) is tried again with backoff for up to [`REPUBLISH_PATIENCE`], as
/// long as the delivery's connection (`generation`) lives: a return would count as a delivery.
/// On failure the original is returned to the queue (or, if its connection died, left to the
/// broker): never acked, so never lost. Returns whether the copy is durable.
async fn republish<H: Handler>(
    ctx: &Ctx<H>,
    delivery: &Delivery,
    generation: u64,
    copy: &Outgoing,
) -> bool {
    let deadline = Instant::now() + REPUBLISH_PATIENCE;
    let mut pause = ctx.quick_base_delay.max(Duration::from_millis(10));
    let mut failures = 0u32;
    loop {
        let error = match bounded(ctx, generation, ctx.broker.publish(copy)).await {
            Bounded::Done(Ok(())) => {
                if failures > 0 {
                    tracing::info!(failures, target = %copy.routing_key, "republished after the broker recovered");
                }
                return true;
            }
            Bounded::Done(Err(e)) => e,
            Bounded::TimedOut => BrokerError::Unavailable,
            Bounded::ConnectionGone => {
                // The delivery cannot be acked any more; the broker redelivers it (and a copy
                // that did land is absorbed by the handlers' idempotency).
                tracing::debug!(target = %copy.routing_key, "connection gone while republishing; the broker will redeliver");
                return false;
            }
        };
        failures += 1;
        let connection_alive = *ctx.broker.subscribe().borrow() == Some(generation);
        if error.is_transient() && connection_alive && Instant::now() + pause < deadline {
            if failures == 1 {
                tracing::warn!(error = %error, target = %copy.routing_key, "cannot republish; trying again while the broker recovers");
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            continue;
        }
        log_publish_failure(&error, &copy.routing_key);
        if !connection_alive {
            // The delivery's channel is gone: the broker returns the message itself.
            return false;
        }
        // A short pause so a persistent failure (an undeclared retry tier) does not spin;
        // each return counts towards the delivery limit, which ends such a loop as poison.
        tokio::time::sleep(ctx.quick_base_delay).await;
        let requeue = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        nack(ctx, delivery, generation, requeue).await;
        return false;
    }
}

/// How a bounded broker operation ended.
enum Bounded<T> {
    Done(T),
    /// No answer within [`BROKER_OP_TIMEOUT`].
    TimedOut,
    /// The delivery's connection generation ended first.
    ConnectionGone,
}

/// Run one broker operation for a delivery taken on connection `generation`: at most
/// [`BROKER_OP_TIMEOUT`], and no longer than that connection lives.
async fn bounded<H: Handler, T>(
    ctx: &Ctx<H>,
    generation: u64,
    op: impl std::future::Future<Output = T>,
) -> Bounded<T> {
    let mut status = ctx.broker.subscribe();
    let gone = async move {
        // Resolves at once when the generation already ended; an `Err` means the broker
        // handle is gone, which also ends the generation.
        let _ = status.wait_for(|g| *g != Some(generation)).await;
    };
    tokio::select! {
        biased;
        r = tokio::time::timeout(BROKER_OP_TIMEOUT, op) => match r {
            Ok(v) => Bounded::Done(v),
            Err(_) => Bounded::TimedOut,
        },
        () = gone => Bounded::ConnectionGone,
    }
}

/// Return a delivery to its queue (bounded; on a dead connection the broker does it).
async fn nack<H: Handler>(
    ctx: &Ctx<H>,
    delivery: &Delivery,
    generation: u64,
    options: BasicNackOptions,
) {
    match bounded(ctx, generation, delivery.acker.nack(options)).await {
        Bounded::Done(Ok(_)) => {}
        Bounded::Done(Err(e)) => {
            tracing::debug!(error = %e, "nack failed; the broker redelivers when the channel closes");
        }
        Bounded::TimedOut | Bounded::ConnectionGone => {
            metrics::abandoned(ctx.queue, "nack");
            tracing::debug!("nack abandoned (connection gone or no answer); the broker redelivers");
        }
    }
}

fn log_publish_failure(e: &BrokerError, target: &str) {
    if e.is_transient() {
        tracing::warn!(error = %e, %target, "cannot republish; the message stays in the work queue");
    } else {
        tracing::error!(error = %e, %target, "cannot republish (is the topology declared with the same retry tiers?)");
    }
}

async fn ack<H: Handler>(
    ctx: &Ctx<H>,
    delivery: &Delivery,
    generation: u64,
    outcome: &'static str,
) {
    match bounded(
        ctx,
        generation,
        delivery.acker.ack(BasicAckOptions::default()),
    )
    .await
    {
        Bounded::Done(Ok(true)) => metrics::acked(ctx.queue, outcome),
        // The channel died while we worked: the broker redelivers; nothing else to do.
        Bounded::Done(Ok(false)) => tracing::debug!(
            outcome,
            "channel gone before the ack; the broker will redeliver"
        ),
        Bounded::Done(Err(e)) => {
            tracing::debug!(error = %e, outcome, "ack failed; the broker will redeliver");
        }
        Bounded::TimedOut | Bounded::ConnectionGone => {
            metrics::abandoned(ctx.queue, "ack");
            tracing::debug!(
                outcome,
                "ack abandoned (connection gone or no answer); the broker will redeliver"
            );
        }
    }
}
