//! Operator commands on a worker's dead-letter queue (DESIGN §4): `<bin> dlq list [--json] |
//! show <id> | replay (--all|--id|--error-kind|--since) | purge (--all|--id|…)`.
//!
//! AMQP has no "peek", so every command takes the DLQ's messages one by one with `basic_get`
//! (manual ack), decides per message, and returns what it keeps with a requeue at the end (a
//! crash of the tool returns them too: the broker requeues unacked messages of a closed channel).
//!
//! Replay publishes the copy to the work queue on a confirm channel, waits for the confirm, and
//! only then acks the DLQ copy. Killed between the two, the message is in both queues — never in
//! neither — and the consumers' idempotency keys absorb the duplicate. The copy keeps body,
//! `message_id` and correlation ID, resets `x-l2l-attempt` to 0 and drops the failure headers.
//!
//! Every give-back counts as a delivery of the letter, on RabbitMQ 3.10 and 4.x alike (nack,
//! reject and a closed channel all do; measured), so the DLQ is declared with a delivery limit
//! that is never reached ([`crate::broker::DLQ_DELIVERY_LIMIT`]). A DLQ declared by an older
//! version has none, and RabbitMQ 4 applies its default of 20 to it: there the commands
//! refresh the letters they keep once one of them has been given back
//! [`REFRESH_AT`] times. See docs/design.md, "RabbitMQ 3.10 and 4".
//!
//! This module is a library: [`run_dlq`] (or [`run_dlq_with_settings`]) is what a binary's `dlq`
//! subcommand calls; tests call the same [`list`], [`replay`] and [`purge`].

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{Acker, Channel};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerError, Outgoing, TopologySpec, publish_on};
use crate::config::Settings;
use crate::names::WorkQueue;

use super::dead_letter::{DeadLetter, Original, as_u32, inspect, replay_message};
use super::disposition::DeadLetterKind;

/// How long a DLQ command waits for the broker before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// In a DLQ without an explicit delivery limit, a letter the broker has given back this many
/// times (its `x-delivery-count`) makes the command refresh what it keeps: half of RabbitMQ 4's
/// default limit of 20, so a refresh interrupted a few times over still comes in time.
pub const REFRESH_AT: u32 = 10;

/// `<bin> dlq …`: the dead letters of this binary's own work queue.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters without removing them: id, kind, attempts, first/last failure, routing
    /// key, error.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full: every header and the body.
    Show {
        /// The message id (the envelope id, as `list` prints it).
        id: String,
    },
    /// Republish matching dead letters to the work queue with the attempt count reset, then
    /// remove them from the DLQ (after the broker confirmed the copy).
    Replay(Selector),
    /// Delete matching dead letters for good.
    Purge(Selector),
}

/// Which dead letters a command applies to. Filters combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
#[group(required = true, multiple = true)]
pub struct Selector {
    /// Every dead letter.
    #[arg(long, conflicts_with_all = ["id", "error_kind", "since"])]
    pub all: bool,
    /// Only the dead letter with this message id.
    #[arg(long)]
    pub id: Option<String>,
    /// Only dead letters of this kind.
    #[arg(long, value_enum)]
    pub error_kind: Option<DeadLetterKind>,
    /// Only dead letters whose last failure is at or after this instant (RFC 3339).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
}

fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 instant such as 2025-01-31T12:00:00Z: {e}"))
}

impl Selector {
    pub fn all() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    pub fn id(id: impl Into<String>) -> Self {
        Self {
            id: Some(id.into()),
            ..Self::default()
        }
    }

    pub fn error_kind(kind: DeadLetterKind) -> Self {
        Self {
            error_kind: Some(kind),
            ..Self::default()
        }
    }

    pub fn since(at: DateTime<Utc>) -> Self {
        Self {
            since: Some(at),
            ..Self::default()
        }
    }

    /// A selector without any criterion matches nothing (never "everything by accident").
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        if self.all {
            return true;
        }
        if self.id.is_none() && self.error_kind.is_none() && self.since.is_none() {
            return false;
        }
        self.id
            .as_ref()
            .is_none_or(|id| letter.id.as_ref() == Some(id))
            && self.error_kind.is_none_or(|k| letter.kind == Some(k))
            && self
                .since
                .is_none_or(|since| letter.last_failed().is_some_and(|at| at >= since))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("broker unavailable")]
    Unavailable,
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("{done} of {total} dead letters were {verb} before: {source}")]
    Interrupted {
        verb: &'static str,
        done: usize,
        total: usize,
        #[source]
        source: BrokerError,
    },
}

/// How many dead letters a command acted on, of how many it looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub matched: usize,
    pub total: usize,
}

/// One dead letter in full, for `show`.
#[derive(Debug, Clone)]
pub struct Detail {
    pub letter: DeadLetter,
    /// Every header, `name = value`, sorted by name.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A DLQ message held unacked on the command's channel.
struct Held {
    message: BasicGetMessage,
    letter: DeadLetter,
    /// How often the broker has given it back before (`x-delivery-count`; absent means 0).
    returns: u32,
}

impl Held {
    fn original(&self) -> Original<'_> {
        Original {
            body: &self.message.delivery.data,
            properties: &self.message.delivery.properties,
            exchange: self.message.delivery.exchange.as_str(),
            routing_key: self.message.delivery.routing_key.as_str(),
        }
    }

    fn acker(&self) -> &Acker {
        &self.message.delivery.acker
    }
}

async fn open(broker: &Broker) -> Result<Channel, DlqError> {
    if !broker.wait_ready(CONNECT_TIMEOUT).await {
        return Err(DlqError::Unavailable);
    }
    Ok(broker.channel().await?.0)
}

/// The next DLQ message, held unacked (so the following `basic_get` returns the one after it).
async fn fetch(channel: &Channel, dlq: &str) -> Result<Option<Held>, DlqError> {
    let got = channel
        .basic_get(dlq.into(), BasicGetOptions { no_ack: false })
        .await?;
    Ok(got.map(|message| {
        let mut held = Held {
            message,
            letter: DeadLetter {
                id: None,
                kind: None,
                attempts: None,
                first_failed_at: None,
                last_failed_at: None,
                routing_key: None,
                error: None,
                correlation_id: None,
                message_kind: None,
                idempotency_key: None,
            },
            returns: 0,
        };
        held.letter = inspect(&held.original());
        held.returns = held
            .original()
            .header(DELIVERY_COUNT)
            .and_then(as_u32)
            .unwrap_or(0);
        held
    }))
}

/// The header in which RabbitMQ counts a quorum queue message's earlier deliveries.
const DELIVERY_COUNT: &str = "x-delivery-count";

/// Return every held message to the DLQ, in the order taken (so the queue keeps its order on
/// 3.10, which puts a nacked message behind the others, and on 4.x, which puts it in front),
/// then close the channel. In a DLQ without a delivery limit, refresh them first if one of them
/// is due.
async fn release(
    broker: &Broker,
    channel: Channel,
    dlq: &str,
    kept: Vec<Held>,
) -> Result<(), DlqError> {
    let kept = if broker.dlq_lacks_limit(dlq) && kept.iter().any(|h| h.returns >= REFRESH_AT) {
        refresh(&channel, dlq, kept).await?
    } else {
        kept
    };
    let requeue = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    for held in &kept {
        held.acker().nack(requeue).await?;
    }
    let _ = channel.close(200, "dlq command done".into()).await;
    Ok(())
}

/// Replace the held letters by fresh copies: publish a copy of each, in order, to the DLQ (the
/// broker's count starts again at 0), wait for every confirm, then ack the originals. Returns
/// what is still held: nothing, or everything if a copy was not confirmed (the originals are
/// then given back as usual, so a letter may be there twice, never zero times). The copies
/// queue up behind letters that arrived while the command ran.
async fn refresh(channel: &Channel, dlq: &str, kept: Vec<Held>) -> Result<Vec<Held>, DlqError> {
    let copies: Vec<Outgoing> = kept
        .iter()
        .map(|h| {
            let props = &h.message.delivery.properties;
            let mut headers = FieldTable::default();
            if let Some(old) = props.headers() {
                for (k, v) in old {
                    // The broker's count of this copy's deliveries starts again.
                    if k.as_str() != DELIVERY_COUNT {
                        headers.insert(k.clone(), v.clone());
                    }
                }
            }
            Outgoing {
                exchange: String::new(),
                routing_key: dlq.to_string(),
                body: h.message.delivery.data.clone(),
                properties: props.clone().with_headers(headers),
            }
        })
        .collect();
    if let Err(e) = publish_on(channel, &copies).await {
        tracing::warn!(error = %e, %dlq, "could not refresh the dead letters; giving them back as they are");
        return Ok(kept);
    }
    for held in &kept {
        held.acker().ack(BasicAckOptions::default()).await?;
    }
    tracing::info!(%dlq, letters = kept.len(), "refreshed the dead letters (this DLQ has no explicit delivery limit; see docs/design.md)");
    Ok(Vec::new())
}

/// Every dead letter currently in the DLQ of `queue`, oldest first; nothing is removed.
pub async fn list(broker: &Broker, queue: WorkQueue) -> Result<Vec<DeadLetter>, DlqError> {
    let channel = open(broker).await?;
    let dlq = broker.names().dead_letter_queue(queue);
    let mut held = Vec::new();
    while let Some(h) = fetch(&channel, &dlq).await? {
        held.push(h);
    }
    let letters = held.iter().map(|h| h.letter.clone()).collect();
    release(broker, channel, &dlq, held).await?;
    Ok(letters)
}

/// The dead letter with message id `id`, in full; nothing is removed.
pub async fn show(broker: &Broker, queue: WorkQueue, id: &str) -> Result<Option<Detail>, DlqError> {
    let channel = open(broker).await?;
    let dlq = broker.names().dead_letter_queue(queue);
    let mut held = Vec::new();
    let mut found = None;
    while let Some(h) = fetch(&channel, &dlq).await? {
        if found.is_none() && h.letter.id.as_deref() == Some(id) {
            let mut headers: Vec<(String, String)> = h
                .message
                .delivery
                .properties
                .headers()
                .as_ref()
                .map(|t| {
                    t.into_iter()
                        .map(|(k, v)| (k.to_string(), header_text(v)))
                        .collect()
                })
                .unwrap_or_default();
            headers.sort();
            found = Some(Detail {
                letter: h.letter.clone(),
                headers,
                body: h.message.delivery.data.clone(),
            });
        }
        held.push(h);
    }
    release(broker, channel, &dlq, held).await?;
    Ok(found)
}

/// Republish every matching dead letter to the work queue (confirm, then ack the DLQ copy);
/// the others stay.
pub async fn replay(
    broker: &Broker,
    queue: WorkQueue,
    selector: &Selector,
) -> Result<Tally, DlqError> {
    let channel = open(broker).await?;
    let names = broker.names();
    let dlq = names.dead_letter_queue(queue);
    let mut kept = Vec::new();
    let mut tally = Tally {
        matched: 0,
        total: 0,
    };
    while let Some(h) = fetch(&channel, &dlq).await? {
        tally.total += 1;
        if !selector.matches(&h.letter) {
            kept.push(h);
            continue;
        }
        let copy = replay_message(names, queue, &h.original(), &h.letter);
        if let Err(source) = publish_on(&channel, std::slice::from_ref(&copy)).await {
            kept.push(h);
            // Whatever is held goes back to the DLQ when the channel closes.
            let _ = release(broker, channel, &dlq, kept).await;
            return Err(DlqError::Interrupted {
                verb: "replayed",
                done: tally.matched,
                total: tally.total,
                source,
            });
        }
        h.acker().ack(BasicAckOptions::default()).await?;
        tally.matched += 1;
        tracing::info!(id = ?h.letter.id, kind = ?h.letter.kind, "replayed dead letter");
    }
    release(broker, channel, &dlq, kept).await?;
    Ok(tally)
}

/// Delete every matching dead letter. `--all` purges the queue in one operation.
pub async fn purge(
    broker: &Broker,
    queue: WorkQueue,
    selector: &Selector,
) -> Result<Tally, DlqError> {
    let channel = open(broker).await?;
    let dlq = broker.names().dead_letter_queue(queue);
    if selector.all {
        let n = channel
            .queue_purge(dlq.as_str().into(), QueuePurgeOptions::default())
            .await? as usize;
        let _ = channel.close(200, "dlq command done".into()).await;
        return Ok(Tally {
            matched: n,
            total: n,
        });
    }
    let mut kept = Vec::new();
    let mut tally = Tally {
        matched: 0,
        total: 0,
    };
    while let Some(h) = fetch(&channel, &dlq).await? {
        tally.total += 1;
        if selector.matches(&h.letter) {
            h.acker().ack(BasicAckOptions::default()).await?;
            tally.matched += 1;
        } else {
            kept.push(h);
        }
    }
    release(broker, channel, &dlq, kept).await?;
    Ok(tally)
}

/// Run a `dlq` subcommand for `queue`, printing to stdout.
pub async fn run_dlq(cmd: DlqCommand, broker: &Broker, queue: WorkQueue) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let result = run_dlq_to(cmd, broker, queue, &mut out).await;
    std::io::stdout().write_all(&out)?;
    result
}

/// [`run_dlq`] for a binary that has not started a broker: connect with `settings`, run, close.
pub async fn run_dlq_with_settings(
    cmd: DlqCommand,
    settings: &Settings,
    queue: WorkQueue,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let broker = Broker::start(
        &settings.amqp.url,
        settings.names(),
        TopologySpec {
            delivery_limit: settings.amqp.delivery_limit,
            retry_tiers: settings.worker.retry_tiers.clone(),
        },
        settings.amqp.reconnect_max_delay,
        stop.clone(),
    );
    let result = run_dlq(cmd, &broker, queue).await;
    stop.cancel();
    result
}

/// [`run_dlq`] writing to `out` (tests read what an operator would see).
pub async fn run_dlq_to(
    cmd: DlqCommand,
    broker: &Broker,
    queue: WorkQueue,
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let dlq = broker.names().dead_letter_queue(queue);
    match cmd {
        DlqCommand::List { json } => {
            let letters = list(broker, queue)
                .await
                .with_context(|| format!("listing {dlq}"))?;
            if json {
                for l in &letters {
                    writeln!(out, "{}", serde_json::to_string(l)?)?;
                }
            } else {
                write_table(out, &letters)?;
                writeln!(out, "{} dead letter(s) in {dlq}", letters.len())?;
            }
        }
        DlqCommand::Show { id } => {
            let detail = show(broker, queue, &id)
                .await
                .with_context(|| format!("reading {dlq}"))?;
            let Some(d) = detail else {
                anyhow::bail!("no dead letter with id {id} in {dlq}");
            };
            write_detail(out, &d)?;
        }
        DlqCommand::Replay(selector) => {
            let t = replay(broker, queue, &selector)
                .await
                .with_context(|| format!("replaying from {dlq}"))?;
            writeln!(out, "replayed {} of {} dead letters", t.matched, t.total)?;
        }
        DlqCommand::Purge(selector) => {
            let t = purge(broker, queue, &selector)
                .await
                .with_context(|| format!("purging {dlq}"))?;
            writeln!(out, "purged {} of {} dead letters", t.matched, t.total)?;
        }
    }
    Ok(())
}

fn or_dash(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

fn write_table(out: &mut Vec<u8>, letters: &[DeadLetter]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<12}  {:>8}  {:<24}  {:<24}  {:<28}  ERROR",
        "ID", "KIND", "ATTEMPTS", "FIRST FAILED", "LAST FAILED", "ROUTING KEY"
    )?;
    for l in letters {
        let error: String = or_dash(l.error.as_deref()).replace('\n', " ");
        let error = if error.chars().count() > 80 {
            format!("{}…", error.chars().take(79).collect::<String>())
        } else {
            error
        };
        writeln!(
            out,
            "{:<36}  {:<12}  {:>8}  {:<24}  {:<24}  {:<28}  {}",
            or_dash(l.id.as_deref()),
            l.kind.map(DeadLetterKind::as_str).unwrap_or("?"),
            l.attempts
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            or_dash(l.first_failed_at.as_deref()),
            or_dash(l.last_failed_at.as_deref()),
            or_dash(l.routing_key.as_deref()),
            error
        )?;
    }
    Ok(())
}

fn write_detail(out: &mut Vec<u8>, d: &Detail) -> std::io::Result<()> {
    let l = &d.letter;
    writeln!(out, "id:              {}", or_dash(l.id.as_deref()))?;
    writeln!(
        out,
        "kind:            {}",
        l.kind.map(DeadLetterKind::as_str).unwrap_or("?")
    )?;
    writeln!(out, "error:           {}", or_dash(l.error.as_deref()))?;
    writeln!(
        out,
        "attempts:        {}",
        l.attempts
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into())
    )?;
    writeln!(
        out,
        "first failed at: {}",
        or_dash(l.first_failed_at.as_deref())
    )?;
    writeln!(
        out,
        "last failed at:  {}",
        or_dash(l.last_failed_at.as_deref())
    )?;
    writeln!(
        out,
        "routing key:     {}",
        or_dash(l.routing_key.as_deref())
    )?;
    writeln!(
        out,
        "correlation id:  {}",
        or_dash(l.correlation_id.as_deref())
    )?;
    writeln!(
        out,
        "message kind:    {}",
        or_dash(l.message_kind.as_deref())
    )?;
    writeln!(
        out,
        "idempotency key: {}",
        or_dash(l.idempotency_key.as_deref())
    )?;
    writeln!(out, "headers:")?;
    for (k, v) in &d.headers {
        writeln!(out, "  {k} = {v}")?;
    }
    writeln!(out, "body:")?;
    match serde_json::from_slice::<serde_json::Value>(&d.body) {
        Ok(v) => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        )?,
        Err(_) => writeln!(out, "{}", String::from_utf8_lossy(&d.body))?,
    }
    Ok(())
}

/// A header value for humans: strings as text, everything else in its debug form.
fn header_text(v: &lapin::types::AMQPValue) -> String {
    super::dead_letter::as_string(v).unwrap_or_else(|| format!("{v:?}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        dlq: DlqCommand,
    }

    fn parse(args: &[&str]) -> Result<DlqCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("bin").chain(args.iter().copied())).map(|c| c.dlq)
    }

    fn letter(id: &str, kind: DeadLetterKind, last: &str) -> DeadLetter {
        DeadLetter {
            id: Some(id.into()),
            kind: Some(kind),
            attempts: Some(1),
            first_failed_at: Some(last.into()),
            last_failed_at: Some(last.into()),
            routing_key: None,
            error: None,
            correlation_id: None,
            message_kind: None,
            idempotency_key: None,
        }
    }

    #[test]
    fn replay_and_purge_need_a_selector() {
        assert!(parse(&["replay"]).is_err());
        assert!(parse(&["purge"]).is_err());
        assert!(parse(&["replay", "--all", "--id", "x"]).is_err());
        assert!(parse(&["replay", "--since", "yesterday"]).is_err());
        assert!(matches!(
            parse(&["list", "--json"]),
            Ok(DlqCommand::List { json: true })
        ));
        assert!(matches!(parse(&["show", "abc"]), Ok(DlqCommand::Show { id }) if id == "abc"));
        let Ok(DlqCommand::Replay(s)) = parse(&[
            "replay",
            "--error-kind",
            "unknown-kind",
            "--since",
            "2025-01-01T00:00:00Z",
        ]) else {
            panic!("replay with filters parses");
        };
        assert_eq!(s.error_kind, Some(DeadLetterKind::UnknownKind));
        assert!(s.since.is_some());
        assert!(
            matches!(parse(&["purge", "--all"]), Ok(DlqCommand::Purge(s)) if s == Selector::all())
        );
    }

    #[test]
    fn selectors_combine_with_and_and_an_empty_one_matches_nothing() {
        let a = letter("a", DeadLetterKind::Permanent, "2025-01-02T00:00:00.000Z");
        let b = letter("b", DeadLetterKind::Poison, "2024-12-31T00:00:00.000Z");
        let since = parse_since("2025-01-01T00:00:00Z").expect("valid");
        assert!(Selector::all().matches(&a) && Selector::all().matches(&b));
        assert!(!Selector::default().matches(&a));
        assert!(Selector::id("a").matches(&a) && !Selector::id("a").matches(&b));
        assert!(Selector::error_kind(DeadLetterKind::Poison).matches(&b));
        assert!(!Selector::error_kind(DeadLetterKind::Poison).matches(&a));
        assert!(Selector::since(since).matches(&a) && !Selector::since(since).matches(&b));
        let both = Selector {
            error_kind: Some(DeadLetterKind::Permanent),
            since: Some(since),
            ..Selector::default()
        };
        assert!(both.matches(&a) && !both.matches(&b));
    }
}
