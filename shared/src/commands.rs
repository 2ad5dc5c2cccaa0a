//! Command and outcome payloads exchanged between mapper and writers (DESIGN §1, §2).
//!
//! A command carries everything its writer needs, already mapped to the target's vocabulary, so
//! writers never read the source system: erp-writer never calls HubSpot, crm-writer never calls
//! ERPNext. Each record keeps its immutable source ID (`hubspot_company_id`, …), which is how
//! writers find what they created before.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// `erp.sync_deal`: upsert Customer, Address, Contacts, then the Sales Order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncDeal {
    pub hubspot_deal_id: String,
    pub deal_name: String,
    /// The order's HubSpot version: the latest `hs_lastmodifieddate` of the deal and its line
    /// items when the mapper read them (a line item edit does not move the deal's own time).
    pub deal_modified: DateTime<Utc>,
    pub customer: CustomerSpec,
    #[serde(default)]
    pub address: Option<AddressSpec>,
    #[serde(default)]
    pub contacts: Vec<ContactSpec>,
    pub order: SalesOrderSpec,
}

/// ERPNext Customer from a HubSpot company.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerSpec {
    pub hubspot_company_id: String,
    pub customer_name: String,
    pub customer_type: String,
    pub customer_group: String,
    pub territory: String,
    #[serde(default)]
    pub default_currency: Option<String>,
    #[serde(default)]
    pub website: Option<String>,
    #[serde(default)]
    pub tax_id: Option<String>,
    /// HubSpot `hs_lastmodifieddate` of the company; an update older than what ERPNext holds is skipped.
    pub modified: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressSpec {
    pub address_title: String,
    pub address_type: String,
    pub address_line1: String,
    #[serde(default)]
    pub address_line2: Option<String>,
    pub city: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub pincode: Option<String>,
    pub country: String,
    #[serde(default)]
    pub email_id: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactSpec {
    pub hubspot_contact_id: String,
    pub first_name: String,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub email_id: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub is_primary_contact: bool,
    pub modified: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SalesOrderSpec {
    pub company: String,
    pub currency: String,
    pub transaction_date: NaiveDate,
    pub delivery_date: NaiveDate,
    #[serde(default)]
    pub selling_price_list: Option<String>,
    /// Sales Taxes and Charges Template, chosen by the customer's country.
    #[serde(default)]
    pub taxes_and_charges: Option<String>,
    #[serde(default)]
    pub set_warehouse: Option<String>,
    /// Submit (docstatus 1) or leave as Draft.
    pub submit: bool,
    pub items: Vec<OrderLine>,
    /// The customer's receivable account for this order's currency
    /// (`[mapping.order.receivable_accounts]`); `None`: the company's default.
    #[serde(default)]
    pub receivable_account: Option<String>,
}

/// One Sales Order row. Quantity and rate are decimals, parsed from HubSpot's strings and sent
/// to ERPNext as strings (ERPNext casts them): no binary float in between. On the wire they are
/// JSON strings; numbers (what older versions sent) are still accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub item_code: String,
    pub qty: Decimal,
    pub rate: Decimal,
    pub hubspot_line_item_id: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// `erp.update_customer`: refresh a Customer (and Address) already synced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateCustomer {
    pub customer: CustomerSpec,
    #[serde(default)]
    pub address: Option<AddressSpec>,
}

/// `erp.update_contact`: refresh a Contact already synced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateContact {
    pub hubspot_company_id: Option<String>,
    pub contact: ContactSpec,
}

/// `crm.update_company` / `crm.update_deal`: HubSpot properties to write onto one object.
/// Property names are already the configured write-back names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateCrmObject {
    /// HubSpot object id.
    pub object_id: String,
    pub properties: BTreeMap<String, String>,
    /// When the fact being written became true at its source (ERPNext `modified`, or the outcome
    /// time). crm-writer never lets an older fact overwrite a newer one.
    pub source_modified: DateTime<Utc>,
}

/// Sync status written to the deal (`erpnext_sync_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    Synced,
    NeedsReview,
    Error,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "synced",
            SyncStatus::NeedsReview => "needs_review",
            SyncStatus::Error => "error",
        }
    }
}

/// What erp-writer reports after each applied step (`outcome.erp.<type>` routing keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ErpOutcome {
    CustomerUpserted {
        hubspot_company_id: String,
        customer: String,
        created: bool,
    },
    AddressUpserted {
        hubspot_company_id: String,
        address: String,
        created: bool,
    },
    ContactUpserted {
        hubspot_contact_id: String,
        contact: String,
        created: bool,
    },
    SalesOrderUpserted {
        hubspot_deal_id: String,
        hubspot_company_id: String,
        sales_order: String,
        docstatus: i64,
        status: String,
        created: bool,
        /// ERPNext `modified` of the Sales Order, naive site time as ERPNext gives it.
        modified: String,
    },
    /// The deal changed after its Sales Order was submitted: reported, never silently applied.
    SalesOrderConflict {
        hubspot_deal_id: String,
        sales_order: String,
        reason: String,
    },
    /// erp-writer could not apply the deal's command and parked it in its dead-letter queue:
    /// the deal shows `error` with the reason until a replay succeeds.
    SyncFailed {
        hubspot_deal_id: String,
        reason: String,
    },
}

impl ErpOutcome {
    /// `outcome.erp.<type>`
    pub fn routing_key(&self) -> String {
        let t = match self {
            ErpOutcome::CustomerUpserted { .. } => "customer_upserted",
            ErpOutcome::AddressUpserted { .. } => "address_upserted",
            ErpOutcome::ContactUpserted { .. } => "contact_upserted",
            ErpOutcome::SalesOrderUpserted { .. } => "sales_order_upserted",
            ErpOutcome::SalesOrderConflict { .. } => "sales_order_conflict",
            ErpOutcome::SyncFailed { .. } => "sync_failed",
        };
        format!("outcome.erp.{t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_tagged_and_routed() {
        let o = ErpOutcome::CustomerUpserted {
            hubspot_company_id: "1".into(),
            customer: "Globex".into(),
            created: true,
        };
        let v = serde_json::to_value(&o).expect("enc");
        assert_eq!(v["type"], "customer_upserted");
        assert_eq!(o.routing_key(), "outcome.erp.customer_upserted");
        assert_eq!(serde_json::from_value::<ErpOutcome>(v).expect("dec"), o);
    }
}
