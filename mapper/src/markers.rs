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
}
