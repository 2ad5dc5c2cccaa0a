//! "Already synced" markers: which HubSpot companies, contacts and deals have an ERPNext
//! counterpart, learned from erp-writer's outcomes (`customer_upserted`, `contact_upserted`,
//! `sales_order_upserted`) and ERPNext's `Customer.after_insert` webhook.
//!
//! Why: a company or contact change only matters for records already in ERPNext, and a deal that
//! leaves the won stage only needs review when a Sales Order exists. HubSpot's own write-back
//! properties (`erpnext_customer_id`, `erpnext_sales_order`) say the same once crm-writer has
//! written them; the markers close the gap until then, without asking ERPNext on every
//! webhook. They are stored as the shared dedup module's "done" markers under
//! `mapper:synced:<record>:<id>`, so they degrade the same way: Redis away means "unknown", and
//! the callers fall back to the HubSpot properties.
//!
//! Links — which deals a company or contact was synced with (`mapper:deals:<record>:<id>`, a
//! set) — are recorded when a deal is sent to ERPNext, because HubSpot no longer answers the
//! associations of a deleted (archived) record, and a deleted or merged company or contact must
//! flag those deals for review.

use std::time::Duration;

use shared::dedup::Dedup;

/// Which kind of HubSpot record a marker is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Company,
    Contact,
    Deal,
}

impl Record {
    fn as_str(self) -> &'static str {
        match self {
            Record::Company => "company",
            Record::Contact => "contact",
            Record::Deal => "deal",
        }
    }
}

/// The deals linked to a company or contact, below the dedup module's `done` prefix.
pub fn deals_key(record: Record, hubspot_id: &str) -> String {
    format!("mapper:deals:{}:{hubspot_id}", record.as_str())
}

/// The marker's key below the dedup module's `done` prefix.
pub fn key(record: Record, hubspot_id: &str) -> String {
    format!("mapper:synced:{}:{hubspot_id}", record.as_str())
}

#[derive(Debug, Clone)]
pub struct Markers {
    dedup: Dedup,
    ttl: Duration,
}

impl Markers {
    pub fn new(dedup: Dedup, ttl: Duration) -> Self {
        Self { dedup, ttl }
    }

    /// Remember that `hubspot_id` has the ERPNext document `erpnext_name`. Best effort.
    pub async fn mark(&self, record: Record, hubspot_id: &str, erpnext_name: &str) {
        if hubspot_id.is_empty() {
            return;
        }
        let _ = self
            .dedup
            .mark_done(&key(record, hubspot_id), erpnext_name, self.ttl)
            .await;
    }

    /// The ERPNext name recorded for `hubspot_id`; `None` when unknown or Redis did not answer.
    pub async fn get(&self, record: Record, hubspot_id: &str) -> Option<String> {
        if hubspot_id.is_empty() {
            return None;
        }
        self.dedup
            .done(&key(record, hubspot_id))
            .await
            .ok()
            .flatten()
    }

    /// Remember that the company or contact `hubspot_id` belongs to `deal_id`. Best effort.
    pub async fn link_deal(&self, record: Record, hubspot_id: &str, deal_id: &str) {
        if hubspot_id.is_empty() || deal_id.is_empty() {
            return;
        }
        let _ = self
            .dedup
            .add_done_member(&deals_key(record, hubspot_id), deal_id, self.ttl)
            .await;
    }

    /// The deals recorded by [`Markers::link_deal`]; empty when unknown or Redis did not answer.
    pub async fn linked_deals(&self, record: Record, hubspot_id: &str) -> Vec<String> {
        if hubspot_id.is_empty() {
            return Vec::new();
        }
        self.dedup
            .done_members(&deals_key(record, hubspot_id))
            .await
            .unwrap_or_default()
    }
}
