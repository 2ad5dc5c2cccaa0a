//! The wire format of failure: which headers a retried or dead-lettered message carries, how a
//! republished copy is built from the delivery, and how a DLQ message is read back for the
//! operator tools (DESIGN §3, §4).
//!
//! A republished copy (to a retry tier, to the DLQ, or replayed from it) keeps the original body
//! byte for byte and the properties that identify it (`message_id`, `correlation_id`, content
//! type, `type`, `timestamp`), is always persistent, and keeps our own headers (correlation,
//! `traceparent`, the original routing key). Broker-owned headers (`x-death`, `x-first-death-*`,
//! `x-delivery-count`) are never copied: the broker writes them, and a stale copy would make a
//! later delivery-limit dead-lettering look like something else.
//!
//! This module builds messages; it does not publish them (the consumer and `dlq` do, with
//! confirms).

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::Serialize;

use crate::broker::Outgoing;
use crate::envelope::Envelope;
use crate::names::{self, Names, WorkQueue};

use super::disposition::DeadLetterKind;

/// Longest `x-l2l-error` kept; the rest of a long error (an HTML error page) is cut.
pub const MAX_ERROR_BYTES: usize = 1024;

/// The reason RabbitMQ gives in `x-death` when a quorum queue's `x-delivery-limit` was exceeded.
const DELIVERY_LIMIT_REASON: &str = "delivery_limit";

/// Headers the broker sets on dead-lettering and redelivery.
const BROKER_HEADERS: [&str; 8] = [
    "x-death",
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
    "x-last-death-reason",
    "x-last-death-queue",
    "x-last-death-exchange",
    "x-delivery-count",
];

/// Headers describing a failure; a replayed message starts clean.
const ERROR_HEADERS: [&str; 5] = [
    names::HEADER_ERROR,
    names::HEADER_ERROR_KIND,
    names::HEADER_ATTEMPTS,
    names::HEADER_FIRST_FAILED_AT,
    names::HEADER_LAST_FAILED_AT,
];

/// A message as delivered, the input of every republish.
#[derive(Debug, Clone, Copy)]
pub struct Original<'a> {
    pub body: &'a [u8],
    pub properties: &'a BasicProperties,
    /// The exchange and routing key of this delivery (a retry hop changes both).
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

impl<'a> Original<'a> {
    pub fn header(&self, name: &str) -> Option<&'a AMQPValue> {
        self.properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(name))
    }

    /// `x-l2l-attempt`, 0 when absent or not a number.
    pub fn attempt(&self) -> u32 {
        self.header(names::HEADER_ATTEMPT)
            .and_then(as_u32)
            .unwrap_or(0)
    }

    /// The routing key the message was first published with.
    pub fn original_routing_key(&self) -> String {
        self.header(names::HEADER_ROUTING_KEY)
            .and_then(as_string)
            .unwrap_or_else(|| self.routing_key.to_string())
    }

    pub fn message_id(&self) -> Option<String> {
        self.properties.message_id().as_ref().map(|s| s.to_string())
    }

    pub fn correlation_id(&self) -> Option<String> {
        self.properties
            .correlation_id()
            .as_ref()
            .map(|s| s.to_string())
            .or_else(|| {
                self.header(names::HEADER_CORRELATION_ID)
                    .and_then(as_string)
            })
    }

    /// Our headers minus the broker's and minus `drop`, with the original routing key and
    /// exchange pinned so later hops do not lose them.
    fn carried_headers(&self, drop: &[&str]) -> FieldTable {
        let mut headers = FieldTable::default();
        if let Some(h) = self.properties.headers() {
            for (k, v) in h {
                if !BROKER_HEADERS.contains(&k.as_str()) && !drop.contains(&k.as_str()) {
                    headers.insert(k.clone(), v.clone());
                }
            }
        }
        headers.insert(
            names::HEADER_ROUTING_KEY.into(),
            AMQPValue::LongString(self.original_routing_key().into()),
        );
        if !headers.contains_key(names::HEADER_ORIGINAL_EXCHANGE) && !self.exchange.is_empty() {
            headers.insert(
                names::HEADER_ORIGINAL_EXCHANGE.into(),
                AMQPValue::LongString(self.exchange.into()),
            );
        }
        headers
    }

    /// The identifying properties of the original, persistent, with `headers`.
    fn properties_with(&self, headers: FieldTable) -> BasicProperties {
        let p = self.properties;
        let mut out = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(
                p.content_type()
                    .clone()
                    .unwrap_or_else(|| ShortString::from("application/json")),
            )
            .with_headers(headers);
        if let Some(v) = p.message_id() {
            out = out.with_message_id(v.clone());
        }
        if let Some(v) = p.correlation_id() {
            out = out.with_correlation_id(v.clone());
        }
        if let Some(v) = p.content_encoding() {
            out = out.with_content_encoding(v.clone());
        }
        if let Some(v) = p.timestamp() {
            out = out.with_timestamp(*v);
        }
        if let Some(v) = p.kind() {
            out = out.with_type(v.clone());
        }
        if let Some(v) = p.app_id() {
            out = out.with_app_id(v.clone());
        }
        out
    }
}

/// RFC 3339 with milliseconds, the format of every `x-l2l-*-at` header.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The copy for retry tier `tier_queue`: same body, `x-l2l-attempt` = `attempt + 1`, and
/// `x-l2l-first-failed-at` set on the first failure and kept afterwards. Published to the default
/// exchange; the tier queue's TTL dead-letters it back to the work queue.
pub fn retry_message(original: &Original<'_>, tier_queue: String, now: DateTime<Utc>) -> Outgoing {
    let mut headers = original.carried_headers(&[names::HEADER_ATTEMPT]);
    headers.insert(
        names::HEADER_ATTEMPT.into(),
        AMQPValue::LongUInt(original.attempt().saturating_add(1)),
    );
    if !headers.contains_key(names::HEADER_FIRST_FAILED_AT) {
        headers.insert(
            names::HEADER_FIRST_FAILED_AT.into(),
            AMQPValue::LongString(timestamp(now).into()),
        );
    }
    Outgoing {
        exchange: String::new(),
        routing_key: tier_queue,
        body: original.body.to_vec(),
        properties: original.properties_with(headers),
    }
}

/// The dead letter of `original` for `<q>.dlq`, with every `x-l2l-*` failure header.
/// `x-l2l-attempts` counts the deliveries that reached a worker, this one included.
pub fn dead_letter_message(
    names: &Names,
    queue: WorkQueue,
    original: &Original<'_>,
    kind: DeadLetterKind,
    error: &str,
    now: DateTime<Utc>,
) -> Outgoing {
    let first_failed = original
        .header(names::HEADER_FIRST_FAILED_AT)
        .and_then(as_string)
        .unwrap_or_else(|| timestamp(now));
    let mut headers = original.carried_headers(&ERROR_HEADERS);
    let mut put = |k: &str, v: AMQPValue| {
        headers.insert(ShortString::from(k), v);
    };
    put(
        names::HEADER_ERROR,
        AMQPValue::LongString(truncate(error, MAX_ERROR_BYTES).into()),
    );
    put(
        names::HEADER_ERROR_KIND,
        AMQPValue::LongString(kind.as_str().into()),
    );
    put(
        names::HEADER_ATTEMPTS,
        AMQPValue::LongUInt(original.attempt().saturating_add(1)),
    );
    put(
        names::HEADER_FIRST_FAILED_AT,
        AMQPValue::LongString(first_failed.into()),
    );
    put(
        names::HEADER_LAST_FAILED_AT,
        AMQPValue::LongString(timestamp(now).into()),
    );
    Outgoing {
        exchange: String::new(),
        routing_key: names.dead_letter_queue(queue),
        body: original.body.to_vec(),
        properties: original.properties_with(headers),
    }
}

/// The copy of a dead letter that goes back to the work queue: attempt count reset, failure
/// headers dropped, same `message_id` and correlation, original routing key kept in
/// `x-l2l-routing-key` (a poison message only has it in `x-death`).
pub fn replay_message(
    names: &Names,
    queue: WorkQueue,
    original: &Original<'_>,
    record: &DeadLetter,
) -> Outgoing {
    let mut headers =
        original.carried_headers(&[&ERROR_HEADERS[..], &[names::HEADER_ATTEMPT]].concat());
    if let Some(rk) = &record.routing_key {
        headers.insert(
            names::HEADER_ROUTING_KEY.into(),
            AMQPValue::LongString(rk.as_str().into()),
        );
    }
    headers.insert(names::HEADER_ATTEMPT.into(), AMQPValue::LongUInt(0));
    Outgoing {
        exchange: String::new(),
        routing_key: names.queue(queue),
        body: original.body.to_vec(),
        properties: original.properties_with(headers),
    }
}

/// Cut `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A DLQ message as the operator tools show it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The AMQP `message_id` (the envelope's id); what `show`, `replay --id` and `purge --id` take.
    pub id: Option<String>,
    /// `None` when neither our header nor a delivery-limit `x-death` says why it is here.
    pub kind: Option<DeadLetterKind>,
    pub attempts: Option<u32>,
    pub first_failed_at: Option<String>,
    pub last_failed_at: Option<String>,
    pub routing_key: Option<String>,
    pub error: Option<String>,
    pub correlation_id: Option<String>,
    /// The envelope's kind and idempotency key, when the body is an envelope.
    pub message_kind: Option<String>,
    pub idempotency_key: Option<String>,
}

impl DeadLetter {
    /// When it was dead-lettered, for `--since`.
    pub fn last_failed(&self) -> Option<DateTime<Utc>> {
        self.last_failed_at
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc))
    }
}

/// Read a DLQ message. Ours carry `x-l2l-error-kind`; messages the broker dead-lettered for
/// exceeding `x-delivery-limit` carry an `x-death` entry with reason `delivery_limit` and are
/// shown as `poison`.
pub fn inspect(original: &Original<'_>) -> DeadLetter {
    let envelope: Option<Envelope> = serde_json::from_slice(original.body).ok();
    let header_str = |name: &str| original.header(name).and_then(as_string);
    let mut record = DeadLetter {
        id: original
            .message_id()
            .or_else(|| envelope.as_ref().map(|e| e.id.to_string())),
        kind: header_str(names::HEADER_ERROR_KIND).and_then(|k| k.parse().ok()),
        attempts: original.header(names::HEADER_ATTEMPTS).and_then(as_u32),
        first_failed_at: header_str(names::HEADER_FIRST_FAILED_AT),
        last_failed_at: header_str(names::HEADER_LAST_FAILED_AT),
        routing_key: header_str(names::HEADER_ROUTING_KEY),
        error: header_str(names::HEADER_ERROR),
        correlation_id: original
            .correlation_id()
            .or_else(|| envelope.as_ref().map(|e| e.correlation_id.clone())),
        message_kind: envelope.as_ref().map(|e| e.kind.to_string()),
        idempotency_key: envelope.as_ref().map(|e| e.idempotency_key.clone()),
    };
    if record.kind.is_none()
        && let Some(death) = delivery_limit_death(original)
    {
        record.kind = Some(DeadLetterKind::Poison);
        record.error = Some(
            "redelivered more often than the work queue's x-delivery-limit without an ack \
             (a worker crashed or panicked on it)"
                .into(),
        );
        let died_at = death.time.map(timestamp);
        record.first_failed_at =
            header_str(names::HEADER_FIRST_FAILED_AT).or_else(|| died_at.clone());
        record.last_failed_at = died_at;
        record.attempts = original
            .header("x-delivery-count")
            .and_then(as_u32)
            .or(death.count)
            .or(record.attempts);
        if record.routing_key.is_none() {
            record.routing_key = death.routing_key;
        }
    }
    record
}

struct Death {
    time: Option<DateTime<Utc>>,
    count: Option<u32>,
    routing_key: Option<String>,
}

/// The `x-death` entry recording a delivery-limit dead-lettering, if any.
fn delivery_limit_death(original: &Original<'_>) -> Option<Death> {
    let entries = match original.header("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice(),
        _ => &[],
    };
    let from_x_death = entries.iter().find_map(|e| match e {
        AMQPValue::FieldTable(t)
            if t.inner().get("reason").and_then(as_string).as_deref()
                == Some(DELIVERY_LIMIT_REASON) =>
        {
            let time = match t.inner().get("time") {
                Some(AMQPValue::Timestamp(secs)) => DateTime::from_timestamp(*secs as i64, 0),
                _ => None,
            };
            let routing_key = match t.inner().get("routing-keys") {
                Some(AMQPValue::FieldArray(keys)) => keys.as_slice().first().and_then(as_string),
                _ => None,
            };
            Some(Death {
                time,
                count: t.inner().get("count").and_then(as_u32),
                routing_key,
            })
        }
        _ => None,
    });
    from_x_death.or_else(|| {
        ["x-last-death-reason", "x-first-death-reason"]
            .iter()
            .any(|h| {
                original.header(h).and_then(as_string).as_deref() == Some(DELIVERY_LIMIT_REASON)
            })
            .then_some(Death {
                time: None,
                count: None,
                routing_key: None,
            })
    })
}

/// A header value as text (RabbitMQ writes long strings; some clients short ones).
pub fn as_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// A header value as a count, whatever integer width the publisher chose.
pub fn as_u32(v: &AMQPValue) -> Option<u32> {
    let n: i128 = match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::LongString(s) => s.to_string().trim().parse().ok()?,
        _ => return None,
    };
    u32::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in headers {
            t.insert((*k).into(), v.clone());
        }
        BasicProperties::default()
            .with_message_id("m1".into())
            .with_correlation_id("c1".into())
            .with_headers(t)
    }

    fn header(o: &Outgoing, name: &str) -> Option<AMQPValue> {
        o.properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(name).cloned())
    }

    #[test]
    fn truncate_cuts_on_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(1000);
        let cut = truncate(&long, MAX_ERROR_BYTES);
        assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn retry_copies_bump_the_attempt_and_keep_the_first_failure() {
        let p = props(&[
            (names::HEADER_ATTEMPT, AMQPValue::LongLongInt(1)),
            (
                names::HEADER_FIRST_FAILED_AT,
                AMQPValue::LongString("2024-01-01T00:00:00.000Z".into()),
            ),
            ("x-death", AMQPValue::FieldArray(vec![].into())),
            (
                "x-first-death-reason",
                AMQPValue::LongString("expired".into()),
            ),
        ]);
        let o = Original {
            body: b"{}",
            properties: &p,
            exchange: "",
            routing_key: "t.mapper",
        };
        assert_eq!(o.attempt(), 1);
        let m = retry_message(&o, "t.mapper.retry.5s".into(), Utc::now());
        assert_eq!(m.routing_key, "t.mapper.retry.5s");
        assert_eq!(m.exchange, "");
        assert_eq!(
            header(&m, names::HEADER_ATTEMPT),
            Some(AMQPValue::LongUInt(2))
        );
        assert_eq!(
            header(&m, names::HEADER_FIRST_FAILED_AT)
                .as_ref()
                .and_then(as_string)
                .as_deref(),
            Some("2024-01-01T00:00:00.000Z")
        );
        assert_eq!(header(&m, "x-death"), None);
        assert_eq!(header(&m, "x-first-death-reason"), None);
        assert_eq!(m.properties.delivery_mode(), &Some(2));
        assert_eq!(
            m.properties.message_id().as_ref().map(|s| s.as_str()),
            Some("m1")
        );
    }

    #[test]
    fn dead_letters_carry_every_failure_header_and_read_back() {
        let p = props(&[]);
        let o = Original {
            body: b"not json",
            properties: &p,
            exchange: "t.events",
            routing_key: "hubspot.deal.propertyChange",
        };
        let names = Names::new("t");
        let m = dead_letter_message(
            &names,
            WorkQueue::Mapper,
            &o,
            DeadLetterKind::Undecodable,
            "bad",
            Utc::now(),
        );
        assert_eq!(m.routing_key, "t.mapper.dlq");
        for h in ERROR_HEADERS {
            assert!(header(&m, h).is_some(), "{h} missing");
        }
        let delivered = Original {
            body: &m.body,
            properties: &m.properties,
            exchange: "",
            routing_key: "t.mapper.dlq",
        };
        let r = inspect(&delivered);
        assert_eq!(r.kind, Some(DeadLetterKind::Undecodable));
        assert_eq!(
            r.routing_key.as_deref(),
            Some("hubspot.deal.propertyChange")
        );
        assert_eq!(r.attempts, Some(1));
        assert_eq!(r.id.as_deref(), Some("m1"));
        assert!(r.last_failed().is_some());
        let replay = replay_message(&names, WorkQueue::Mapper, &delivered, &r);
        assert_eq!(replay.routing_key, "t.mapper");
        assert_eq!(
            header(&replay, names::HEADER_ATTEMPT),
            Some(AMQPValue::LongUInt(0))
        );
        assert_eq!(header(&replay, names::HEADER_ERROR), None);
        assert_eq!(header(&replay, names::HEADER_ERROR_KIND), None);
        assert_eq!(
            header(&replay, names::HEADER_ROUTING_KEY)
                .as_ref()
                .and_then(as_string)
                .as_deref(),
            Some("hubspot.deal.propertyChange")
        );
    }

    #[test]
    fn delivery_limit_deaths_are_poison() {
        let mut death = FieldTable::default();
        death.insert(
            "reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(vec![AMQPValue::LongString("erp.sync_deal".into())].into()),
        );
        let p = props(&[(
            "x-death",
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        )]);
        let o = Original {
            body: b"{}",
            properties: &p,
            exchange: "",
            routing_key: "t.erp-writer.dlq",
        };
        let r = inspect(&o);
        assert_eq!(r.kind, Some(DeadLetterKind::Poison));
        assert_eq!(r.routing_key.as_deref(), Some("erp.sync_deal"));
        assert_eq!(
            r.last_failed_at.as_deref(),
            Some("2023-11-14T22:13:20.000Z")
        );
    }
}
