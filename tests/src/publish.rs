//! Raw webhook events published as ingest publishes them (one envelope per event, one correlation
//! ID per batch), for tests and benchmarks that start behind ingest's HTTP side.

use chrono::Utc;
use shared::broker::{Broker, Outgoing};
use shared::envelope::{Envelope, Kind, Source};
use shared::events::HubSpotEvent;
use shared::names::{Exchange, routing};
use uuid::Uuid;

/// Publish `events` to the events exchange, a thousand per confirm round trip (a backlog of
/// thousands is built in well under a second); returns their correlation ID.
pub async fn hubspot_events(broker: &Broker, events: &[HubSpotEvent]) -> anyhow::Result<String> {
    let exchange = broker.names().exchange(Exchange::Events);
    let correlation_id = Uuid::now_v7().to_string();
    let mut messages = Vec::with_capacity(events.len());
    for e in events {
        let (object, name) = e
            .object_and_event()
            .ok_or_else(|| anyhow::anyhow!("event type {:?}", e.subscription_type))?;
        let envelope = Envelope {
            id: Uuid::now_v7(),
            kind: Kind::HubSpotEvent,
            idempotency_key: e.idempotency_key(),
            correlation_id: correlation_id.clone(),
            occurred_at: Utc::now(),
            received_at: Utc::now(),
            source: Source::Hubspot,
            payload: e,
        };
        messages.push(Outgoing::envelope(
            exchange.clone(),
            routing::hubspot_event(object, name),
            &envelope,
            0,
        )?);
    }
    for chunk in messages.chunks(1000) {
        broker.publish_all(chunk).await?;
    }
    Ok(correlation_id)
}
