//! Raw event payloads as the sources send them: one HubSpot webhook event, one Frappe webhook
//! delivery. Ingest validates them into these types; the mapper reads them back.

use serde::{Deserialize, Serialize};

/// One event from a HubSpot webhook batch (Webhooks API, app subscriptions). Field names mirror
/// HubSpot's payload; fields HubSpot may add later are kept in `extra` and passed through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubSpotEvent {
    pub event_id: u64,
    pub subscription_id: u64,
    pub portal_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<u64>,
    /// Epoch milliseconds.
    pub occurred_at: i64,
    /// `deal.propertyChange`, `deal.creation`, `company.merge`, …
    pub subscription_type: String,
    #[serde(default)]
    pub attempt_number: u32,
    /// Absent on some association events; those carry `fromObjectId` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_flag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_object_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_object_ids: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_object_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_object_id: Option<u64>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The legacy object name of one of HubSpot's object type IDs.
fn object_name(type_id: &str) -> Option<&'static str> {
    Some(match type_id {
        "0-1" => "contact",
        "0-2" => "company",
        "0-3" => "deal",
        "0-8" => "line_item",
        _ => return None,
    })
}

impl HubSpotEvent {
    /// `("deal", "propertyChange")` from `deal.propertyChange`; `None` if the type has no dot.
    /// HubSpot's generic subscriptions (`object.propertyChange`, the only kind line items have)
    /// name the object in `objectTypeId` instead: `0-8` → `("line_item", "propertyChange")`.
    pub fn object_and_event(&self) -> Option<(&str, &str)> {
        let (object, event) = self.subscription_type.split_once('.')?;
        if object != "object" {
            return Some((object, event));
        }
        let type_id = self.extra.get("objectTypeId").and_then(|v| v.as_str())?;
        Some((object_name(type_id).unwrap_or(type_id), event))
    }

    /// `hubspot:<portalId>:<eventId>:<subscriptionType>:<object>:<occurredAt>[:<property>]`.
    /// HubSpot documents `eventId` as "not guaranteed to be unique", so the ID alone would
    /// drop a second, different event that happens to share it; a redelivery of the same event
    /// repeats every one of these fields (only `attemptNumber` changes) and keeps its key.
    pub fn idempotency_key(&self) -> String {
        let mut key = format!(
            "hubspot:{}:{}:{}:{}:{}",
            self.portal_id,
            self.event_id,
            self.subscription_type,
            self.subject_id()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            self.occurred_at
        );
        if let Some(property) = &self.property_name {
            key.push(':');
            key.push_str(property);
        }
        key
    }

    /// The object the event is about: `objectId`, or `fromObjectId` on association changes.
    pub fn subject_id(&self) -> Option<u64> {
        self.object_id.or(self.from_object_id)
    }
}

/// One verified Frappe webhook delivery. Frappe sends no event name, so `doctype` and `event`
/// come from the URL path ingest was called on; `doc` is the request body (the webhook's JSON
/// template output, or the whole document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpNextEvent {
    /// ERPNext site the delivery came from (from config; Frappe does not say).
    pub site: String,
    pub doctype: String,
    pub event: String,
    pub doc: serde_json::Value,
}

impl ErpNextEvent {
    pub fn name(&self) -> Option<&str> {
        self.doc.get("name").and_then(|v| v.as_str())
    }

    pub fn modified(&self) -> Option<&str> {
        self.doc.get("modified").and_then(|v| v.as_str())
    }

    /// DESIGN §2: `erpnext:<site>:<doctype>:<name>:<modified>`.
    pub fn idempotency_key(&self) -> Option<String> {
        Some(format!(
            "erpnext:{}:{}:{}:{}",
            self.site,
            self.doctype,
            self.name()?,
            self.modified()?
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(path: &str) -> String {
        let p = crate::contracts::path(path);
        std::fs::read_to_string(p).expect("contract file")
    }

    #[test]
    fn hubspot_sample_batches_parse_and_roundtrip() {
        for file in [
            "hubspot/webhooks/batch_mixed.json",
            "hubspot/webhooks/single_deal_closedwon.json",
            "hubspot/webhooks/redelivery_first_attempt.json",
        ] {
            let raw: serde_json::Value = serde_json::from_str(&contract(file)).expect("json");
            let events: Vec<HubSpotEvent> = serde_json::from_value(raw.clone()).expect("events");
            assert!(!events.is_empty());
            assert_eq!(
                serde_json::to_value(&events).expect("enc"),
                raw,
                "{file} loses nothing"
            );
        }
        let events: Vec<HubSpotEvent> =
            serde_json::from_str(&contract("hubspot/webhooks/batch_mixed.json")).expect("events");
        assert_eq!(
            events[4].object_and_event(),
            Some(("deal", "propertyChange"))
        );
        assert_eq!(events[4].property_value.as_deref(), Some("closedwon"));
        assert_eq!(
            events[0].idempotency_key(),
            format!(
                "hubspot:62515:3771652900:deal.creation:{}:{}",
                events[0].object_id.expect("object"),
                events[0].occurred_at
            )
        );
    }

    /// HubSpot's generic webhook format (changelog "Public Beta: Generic Webhook Subscriptions",
    /// 2024-08-06): `object.<event>` with the object in `objectTypeId`.
    #[test]
    fn generic_subscriptions_name_their_object_by_type_id() {
        let event: HubSpotEvent = serde_json::from_value(serde_json::json!({
            "eventId": 1, "subscriptionId": 2, "portalId": 62515, "appId": 3,
            "occurredAt": 1_764_000_000_000_i64, "subscriptionType": "object.propertyChange",
            "attemptNumber": 0, "objectId": 9001, "objectTypeId": "0-8",
            "propertyName": "quantity", "propertyValue": "7", "changeSource": "CRM_UI"
        }))
        .expect("event");
        assert_eq!(
            event.object_and_event(),
            Some(("line_item", "propertyChange"))
        );
        let mut other = event.clone();
        other
            .extra
            .insert("objectTypeId".into(), serde_json::json!("0-48"));
        assert_eq!(other.object_and_event(), Some(("0-48", "propertyChange")));
    }

    #[test]
    fn different_events_sharing_an_id_have_different_keys() {
        let events: Vec<HubSpotEvent> =
            serde_json::from_str(&contract("hubspot/webhooks/batch_mixed.json")).expect("events");
        let mut other = events[4].clone();
        other.object_id = other.object_id.map(|id| id + 1);
        assert_ne!(
            events[4].idempotency_key(),
            other.idempotency_key(),
            "another deal"
        );
        let mut other = events[4].clone();
        other.property_name = Some("amount".into());
        assert_ne!(
            events[4].idempotency_key(),
            other.idempotency_key(),
            "another property"
        );
        let mut other = events[4].clone();
        other.subscription_type = "deal.creation".into();
        assert_ne!(
            events[4].idempotency_key(),
            other.idempotency_key(),
            "another type"
        );
        let mut other = events[4].clone();
        other.occurred_at += 1;
        assert_ne!(
            events[4].idempotency_key(),
            other.idempotency_key(),
            "another time"
        );
    }

    #[test]
    fn redelivered_events_share_one_key() {
        let a: Vec<HubSpotEvent> =
            serde_json::from_str(&contract("hubspot/webhooks/redelivery_first_attempt.json"))
                .expect("a");
        let b: Vec<HubSpotEvent> =
            serde_json::from_str(&contract("hubspot/webhooks/redelivery_retry.json")).expect("b");
        assert_ne!(a[0].attempt_number, b[0].attempt_number);
        assert_eq!(a[0].idempotency_key(), b[0].idempotency_key());
    }

    #[test]
    fn erpnext_key_comes_from_name_and_modified() {
        let cap: serde_json::Value = serde_json::from_str(&contract(
            "erpnext/webhooks/sales_invoice_on_change_paid_after_payment_entry.json",
        ))
        .expect("json");
        let doc: serde_json::Value =
            serde_json::from_str(cap["request"]["body_raw"].as_str().expect("raw")).expect("body");
        let e = ErpNextEvent {
            site: "erp.localhost".into(),
            doctype: "Sales Invoice".into(),
            event: "on_change".into(),
            doc,
        };
        assert_eq!(
            e.idempotency_key().as_deref(),
            Some(
                "erpnext:erp.localhost:Sales Invoice:ACC-SINV-2026-00001:2026-11-24 12:17:41.035485"
            )
        );
    }
}
