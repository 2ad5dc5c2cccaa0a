//! What a decision about one message comes to, and publishing the commands it produced.
//!
//! Every command is a new envelope derived from the message that caused it (same correlation
//! ID), with the idempotency key `command_key(<source key>, <kind>, <target>)`: the same event
//! mapped twice (a retry, a replay) yields the same key, which is what lets the writers drop the
//! second copy. Commands go to the commands exchange with the kind as routing key, all of a
//! decision in one pipelined batch of confirms, before the runtime acks the source message.

use serde::Serialize;
use shared::broker::{Broker, BrokerError, Outgoing};
use shared::envelope::{Envelope, Kind, Source, command_key};
use shared::names::Exchange;

use crate::error::MapError;
use crate::metrics;

/// One command to publish: its kind (= routing key), what it is about, and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub kind: Kind,
    /// `deal:<id>`, `company:<id>`, `contact:<id>`: part of the idempotency key.
    pub target: String,
    pub payload: serde_json::Value,
}

impl Command {
    pub fn new<P: Serialize>(kind: Kind, target: String, payload: &P) -> Result<Self, MapError> {
        let payload = serde_json::to_value(payload)
            .map_err(|e| MapError::BadMessage(format!("cannot encode a {kind} command: {e}")))?;
        Ok(Self {
            kind,
            target,
            payload,
        })
    }

    /// The command's envelope, derived from the message that caused it.
    pub fn envelope(&self, parent: &Envelope) -> Envelope {
        let key = command_key(&parent.idempotency_key, &self.kind, &self.target);
        parent.derive(self.kind.clone(), key, Source::Mapper, self.payload.clone())
    }
}

/// What the mapper decided about one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Publish these commands (confirmed), then ack.
    Emit(Vec<Command>),
    /// Nothing to do. `code` labels the metric, `reason` is for the log and the ack.
    Ignore { code: &'static str, reason: String },
    /// Something was recorded (a marker) but nothing needs publishing.
    Recorded { what: String },
}

impl Decision {
    pub fn ignore(code: &'static str, reason: impl Into<String>) -> Self {
        Decision::Ignore {
            code,
            reason: reason.into(),
        }
    }
}

/// Publishes commands with confirms.
#[derive(Debug, Clone)]
pub struct Emitter {
    broker: Broker,
}

impl Emitter {
    pub fn new(broker: Broker) -> Self {
        Self { broker }
    }

    /// Publish every command and wait for every confirm.
    pub async fn publish(&self, parent: &Envelope, commands: &[Command]) -> Result<(), MapError> {
        let pairs: Vec<(&Envelope, &Command)> = commands.iter().map(|c| (parent, c)).collect();
        self.publish_derived(&pairs).await
    }

    /// Publish commands caused by different messages (the sweep: one ERPNext document each) in
    /// one pipelined batch, and wait for every confirm.
    pub async fn publish_derived(
        &self,
        commands: &[(&Envelope, &Command)],
    ) -> Result<(), MapError> {
        let exchange = self.broker.names().exchange(Exchange::Commands);
        let messages = commands
            .iter()
            .map(|(parent, c)| {
                Outgoing::envelope(
                    exchange.clone(),
                    c.kind.as_str().to_string(),
                    &c.envelope(parent),
                    0,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| MapError::Publish(BrokerError::Encode(e)))?;
        self.broker.publish_all(&messages).await?;
        for (_, c) in commands {
            metrics::command(c.kind.as_str());
            tracing::info!(kind = %c.kind, target = %c.target, "command published");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn command_envelopes_keep_correlation_and_have_stable_keys() {
        let now = Utc::now();
        let parent = Envelope {
            id: Uuid::now_v7(),
            kind: Kind::HubSpotEvent,
            idempotency_key: "hubspot:62515:1".into(),
            correlation_id: "corr".into(),
            occurred_at: now,
            received_at: now,
            source: Source::Hubspot,
            payload: serde_json::json!({}),
        };
        let c = Command::new(
            Kind::ErpSyncDeal,
            "deal:9".into(),
            &serde_json::json!({"a": 1}),
        )
        .expect("cmd");
        let a = c.envelope(&parent);
        let b = c.envelope(&parent);
        assert_eq!(a.correlation_id, "corr");
        assert_eq!(a.kind, Kind::ErpSyncDeal);
        assert_eq!(a.source, Source::Mapper);
        assert_eq!(a.idempotency_key, b.idempotency_key);
        assert_ne!(a.id, b.id);
        assert!(
            a.idempotency_key.starts_with("erp.sync_deal:deal:9:"),
            "{}",
            a.idempotency_key
        );
        assert_eq!(a.payload["a"], 1);
    }
}
