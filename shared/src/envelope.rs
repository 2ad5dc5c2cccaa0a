//! The one message type on the wire (DESIGN §2): every body on every queue is an [`Envelope`].
//!
//! The envelope carries the identity of a message (`id`), what it is (`kind`), what makes it
//! unique across retries and redeliveries (`idempotency_key`) and which webhook started it all
//! (`correlation_id`). Payloads are typed per kind elsewhere (`events`, `commands`); here the
//! payload is kept generic so a consumer can read the header fields of a message whose payload it
//! cannot decode and still dead-letter it with a reason.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What a message is. Unknown kinds deserialize into [`Kind::Unknown`] so they can be
/// dead-lettered as `unknown-kind` instead of failing the whole decode.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A raw HubSpot webhook event (payload: [`crate::events::HubSpotEvent`]).
    #[serde(rename = "hubspot.event")]
    HubSpotEvent,
    /// A raw, verified Frappe webhook delivery (payload: [`crate::events::ErpNextEvent`]).
    #[serde(rename = "erpnext.event")]
    ErpNextEvent,
    /// Mapper → erp-writer: create or update Customer, Address, Contacts and the Sales Order.
    #[serde(rename = "erp.sync_deal")]
    ErpSyncDeal,
    /// Mapper → erp-writer: refresh an already-synced Customer (and its Address) from HubSpot.
    #[serde(rename = "erp.update_customer")]
    ErpUpdateCustomer,
    /// Mapper → erp-writer: refresh an already-synced Contact from HubSpot.
    #[serde(rename = "erp.update_contact")]
    ErpUpdateContact,
    /// Mapper → crm-writer: write ERPNext facts onto a HubSpot company.
    #[serde(rename = "crm.update_company")]
    CrmUpdateCompany,
    /// Mapper → crm-writer: write ERPNext facts onto a HubSpot deal.
    #[serde(rename = "crm.update_deal")]
    CrmUpdateDeal,
    /// erp-writer → mapper: outcome of one applied step.
    #[serde(rename = "outcome.erp")]
    ErpOutcome,
    #[serde(untagged)]
    Unknown(String),
}

impl Kind {
    pub fn as_str(&self) -> &str {
        match self {
            Kind::HubSpotEvent => "hubspot.event",
            Kind::ErpNextEvent => "erpnext.event",
            Kind::ErpSyncDeal => "erp.sync_deal",
            Kind::ErpUpdateCustomer => "erp.update_customer",
            Kind::ErpUpdateContact => "erp.update_contact",
            Kind::CrmUpdateCompany => "crm.update_company",
            Kind::CrmUpdateDeal => "crm.update_deal",
            Kind::ErpOutcome => "outcome.erp",
            Kind::Unknown(s) => s,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which system or component produced a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Hubspot,
    Erpnext,
    Mapper,
    ErpWriter,
    CrmWriter,
    Backfill,
    Reconcile,
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P = serde_json::Value> {
    /// UUIDv7: unique per message, time-ordered; the AMQP `message_id`.
    pub id: Uuid,
    pub kind: Kind,
    /// Stable across retries and redeliveries (DESIGN §2).
    pub idempotency_key: String,
    /// The originating webhook's ID, carried through every hop.
    pub correlation_id: String,
    /// When the change happened at the source.
    pub occurred_at: DateTime<Utc>,
    /// When lead2ledger first received it.
    pub received_at: DateTime<Utc>,
    pub source: Source,
    pub payload: P,
}

impl<P> Envelope<P> {
    /// A message derived from `parent` (same correlation, new id), e.g. a command from an event.
    pub fn derive<Q>(
        &self,
        kind: Kind,
        idempotency_key: String,
        source: Source,
        payload: Q,
    ) -> Envelope<Q> {
        Envelope {
            id: Uuid::now_v7(),
            kind,
            idempotency_key,
            correlation_id: self.correlation_id.clone(),
            occurred_at: self.occurred_at,
            received_at: self.received_at,
            source,
            payload,
        }
    }
}

impl<P: Serialize> Envelope<P> {
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

impl Envelope<serde_json::Value> {
    /// Decode the payload into the type this kind promises.
    pub fn decode_payload<P: serde::de::DeserializeOwned>(&self) -> Result<P, serde_json::Error> {
        P::deserialize(&self.payload)
    }
}

/// The idempotency key of a command: a hash of the source key and the command's target, so the
/// same event turned into the same command twice yields the same key (DESIGN §2).
pub fn command_key(source_key: &str, kind: &Kind, target: &str) -> String {
    let mut h = Sha256::new();
    h.update(source_key.as_bytes());
    h.update([0]);
    h.update(kind.as_str().as_bytes());
    h.update([0]);
    h.update(target.as_bytes());
    format!(
        "{}:{}:{}",
        kind.as_str(),
        target,
        &hex::encode(h.finalize())[..16]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_survive_decoding() {
        let k: Kind = serde_json::from_str("\"erp.explode\"").expect("decodes");
        assert_eq!(k, Kind::Unknown("erp.explode".into()));
        let k: Kind = serde_json::from_str("\"erp.sync_deal\"").expect("decodes");
        assert_eq!(k, Kind::ErpSyncDeal);
        assert_eq!(
            serde_json::to_string(&Kind::CrmUpdateDeal).expect("enc"),
            "\"crm.update_deal\""
        );
    }

    #[test]
    fn command_keys_are_stable_and_target_specific() {
        let a = command_key("hubspot:1:2", &Kind::ErpSyncDeal, "deal:9");
        assert_eq!(a, command_key("hubspot:1:2", &Kind::ErpSyncDeal, "deal:9"));
        assert_ne!(a, command_key("hubspot:1:2", &Kind::ErpSyncDeal, "deal:8"));
        assert_ne!(a, command_key("hubspot:1:3", &Kind::ErpSyncDeal, "deal:9"));
    }

    #[test]
    fn envelope_roundtrips() {
        let now = Utc::now();
        let e = Envelope {
            id: Uuid::now_v7(),
            kind: Kind::HubSpotEvent,
            idempotency_key: "hubspot:1:2".into(),
            correlation_id: "c".into(),
            occurred_at: now,
            received_at: now,
            source: Source::Hubspot,
            payload: serde_json::json!({"a": 1}),
        };
        let back: Envelope = serde_json::from_slice(&e.to_json().expect("enc")).expect("dec");
        assert_eq!(back, e);
    }
}
