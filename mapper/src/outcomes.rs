//! `outcome.erp.*` from erp-writer → what HubSpot should show (DESIGN §1 step 3):
//! `customer_upserted` → the company's ERPNext Customer ID; `sales_order_upserted` → the deal's
//! Sales Order name, link and sync status `synced`; `sales_order_conflict` (the deal changed
//! after its order was submitted) → sync status `needs_review`, with the reason in the sync
//! message property (emptied by `synced`).
//!
//! Each outcome also records the "synced" marker the company, contact and deal flows consult.
//! The pure part ([`crm_update`]) decides the command; [`on_outcome`] adds the marker.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shared::commands::{ErpOutcome, SyncStatus, UpdateCrmObject};
use shared::envelope::{Envelope, Kind};
use shared::mapping::WritebackConfig;
use url::Url;

use crate::deal::short_reason;
use crate::emit::{Command, Decision};
use crate::error::MapError;
use crate::handler::Services;
use crate::markers::Record;
use crate::metrics;

/// Link to a Sales Order in the ERPNext desk: `<base>/app/sales-order/<name>`.
pub fn sales_order_url(base: &Url, name: &str) -> String {
    let mut url = base.clone();
    if let Ok(mut seg) = url.path_segments_mut() {
        seg.pop_if_empty().extend(["app", "sales-order", name]);
    }
    url.to_string()
}

/// The deal's Sales Order properties: its name and its link in the ERPNext desk. The outcome of
/// erp-writer and the sweep ([`crate::sweep`]) both write these.
pub fn sales_order_link(
    w: &WritebackConfig,
    app_url: &Url,
    sales_order: &str,
) -> [(String, String); 2] {
    [
        (w.deal_sales_order.clone(), sales_order.to_string()),
        (
            w.deal_sales_order_url.clone(),
            sales_order_url(app_url, sales_order),
        ),
    ]
}

/// The CRM command an outcome calls for, if any. `occurred_at` is the outcome message's time
/// (when erp-writer observed the fact); `now` stamps a conflict, which must win over any
/// earlier "synced". Both are lead2ledger's clock: sync statuses are never ordered by ERPNext's
/// naive site time against HubSpot's.
pub fn crm_update(
    w: &WritebackConfig,
    app_url: &Url,
    outcome: &ErpOutcome,
    occurred_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(Kind, UpdateCrmObject)> {
    match outcome {
        ErpOutcome::CustomerUpserted {
            hubspot_company_id,
            customer,
            ..
        } => Some((
            Kind::CrmUpdateCompany,
            UpdateCrmObject {
                object_id: hubspot_company_id.clone(),
                properties: BTreeMap::from([(w.company_customer_id.clone(), customer.clone())]),
                source_modified: occurred_at,
            },
        )),
        ErpOutcome::SalesOrderUpserted {
            hubspot_deal_id,
            sales_order,
            ..
        } => Some((
            Kind::CrmUpdateDeal,
            UpdateCrmObject {
                object_id: hubspot_deal_id.clone(),
                properties: sales_order_link(w, app_url, sales_order)
                    .into_iter()
                    .chain([
                        (
                            w.deal_sync_status.clone(),
                            SyncStatus::Synced.as_str().to_string(),
                        ),
                        (w.deal_sync_message.clone(), String::new()),
                    ])
                    .collect(),
                // When erp-writer saw the order, not the order's ERPNext `modified`: every sync
                // status is stamped by lead2ledger's clock, so "synced" after a re-won deal
                // supersedes the "needs_review" before it even when the order itself is old.
                source_modified: occurred_at,
            },
        )),
        ErpOutcome::SalesOrderConflict {
            hubspot_deal_id,
            sales_order,
            reason,
        } => Some((
            Kind::CrmUpdateDeal,
            UpdateCrmObject {
                object_id: hubspot_deal_id.clone(),
                properties: BTreeMap::from([
                    (w.deal_sales_order.clone(), sales_order.clone()),
                    (
                        w.deal_sync_status.clone(),
                        SyncStatus::NeedsReview.as_str().to_string(),
                    ),
                    (
                        w.deal_sync_message.clone(),
                        short_reason(&format!("Sales Order {sales_order}: {reason}")),
                    ),
                ]),
                source_modified: now,
            },
        )),
        ErpOutcome::SyncFailed {
            hubspot_deal_id,
            reason,
        } => Some((
            Kind::CrmUpdateDeal,
            UpdateCrmObject {
                object_id: hubspot_deal_id.clone(),
                properties: BTreeMap::from([
                    (
                        w.deal_sync_status.clone(),
                        SyncStatus::Error.as_str().to_string(),
                    ),
                    (w.deal_sync_message.clone(), short_reason(reason)),
                ]),
                source_modified: occurred_at,
            },
        )),
        ErpOutcome::AddressUpserted { .. } | ErpOutcome::ContactUpserted { .. } => None,
    }
}

pub async fn on_outcome(
    s: &Services,
    parent: &Envelope,
    outcome: &ErpOutcome,
) -> Result<Decision, MapError> {
    match outcome {
        ErpOutcome::CustomerUpserted {
            hubspot_company_id,
            customer,
            ..
        } => {
            s.markers
                .mark(Record::Company, hubspot_company_id, customer)
                .await
        }
        ErpOutcome::ContactUpserted {
            hubspot_contact_id,
            contact,
            ..
        } => {
            s.markers
                .mark(Record::Contact, hubspot_contact_id, contact)
                .await
        }
        ErpOutcome::SalesOrderUpserted {
            hubspot_deal_id,
            hubspot_company_id,
            sales_order,
            ..
        } => {
            s.markers
                .mark(Record::Deal, hubspot_deal_id, sales_order)
                .await;
            s.markers
                .link_deal(Record::Company, hubspot_company_id, hubspot_deal_id)
                .await;
        }
        ErpOutcome::SalesOrderConflict {
            hubspot_deal_id,
            sales_order,
            reason,
        } => {
            metrics::needs_review("sales_order_submitted");
            tracing::warn!(deal = %hubspot_deal_id, %sales_order, %reason, "deal changed after its Sales Order was submitted: flagged for review");
        }
        ErpOutcome::SyncFailed {
            hubspot_deal_id,
            reason,
        } => {
            metrics::sync_failed();
            tracing::warn!(deal = %hubspot_deal_id, %reason, "erp-writer parked the deal's command: flagged as error");
        }
        ErpOutcome::AddressUpserted { .. } => {}
    }
    match crm_update(
        &s.cfg.writeback,
        &s.app_url,
        outcome,
        parent.occurred_at,
        Utc::now(),
    ) {
        Some((kind, update)) => {
            let target = match kind {
                Kind::CrmUpdateCompany => format!("company:{}", update.object_id),
                _ => format!("deal:{}", update.object_id),
            };
            Ok(Decision::Emit(vec![Command::new(kind, target, &update)?]))
        }
        None => match outcome {
            ErpOutcome::ContactUpserted {
                hubspot_contact_id, ..
            } => Ok(Decision::Recorded {
                what: format!("contact {hubspot_contact_id} is in ERPNext"),
            }),
            _ => Ok(Decision::ignore(
                "nothing_to_write_back",
                format!("{} has nothing to write back", outcome.routing_key()),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn outcomes_become_crm_updates() {
        let w = WritebackConfig::default();
        let base = Url::parse("https://erp.example.com").expect("url");
        let (occurred, now) = (at("2026-11-24T17:00:00Z"), at("2026-11-24T18:00:00Z"));

        let o = ErpOutcome::SalesOrderUpserted {
            hubspot_deal_id: "42".into(),
            hubspot_company_id: "7".into(),
            sales_order: "SAL-ORD-2026-00001".into(),
            docstatus: 0,
            status: "Draft".into(),
            created: true,
            modified: "2026-11-24 12:17:39.499006".into(),
        };
        let (kind, u) = crm_update(&w, &base, &o, occurred, now).expect("update");
        assert_eq!(kind, Kind::CrmUpdateDeal);
        assert_eq!(u.object_id, "42");
        assert_eq!(u.properties["erpnext_sales_order"], "SAL-ORD-2026-00001");
        assert_eq!(
            u.properties["erpnext_sales_order_url"],
            "https://erp.example.com/app/sales-order/SAL-ORD-2026-00001"
        );
        assert_eq!(u.properties["erpnext_sync_status"], "synced");
        assert_eq!(
            u.properties["erpnext_sync_message"], "",
            "synced clears the reason"
        );
        // Stamped when observed (one clock), not with the order's ERPNext `modified`.
        assert_eq!(u.source_modified, occurred);

        let o = ErpOutcome::SalesOrderConflict {
            hubspot_deal_id: "42".into(),
            sales_order: "SAL-ORD-2026-00001".into(),
            reason: "submitted".into(),
        };
        let (_, u) = crm_update(&w, &base, &o, occurred, now).expect("update");
        assert_eq!(u.properties["erpnext_sync_status"], "needs_review");
        assert_eq!(
            u.properties["erpnext_sync_message"],
            "Sales Order SAL-ORD-2026-00001: submitted"
        );
        assert_eq!(u.source_modified, now);

        let o = ErpOutcome::CustomerUpserted {
            hubspot_company_id: "7".into(),
            customer: "Globex Corporation".into(),
            created: true,
        };
        let (kind, u) = crm_update(&w, &base, &o, occurred, now).expect("update");
        assert_eq!(kind, Kind::CrmUpdateCompany);
        assert_eq!(
            u.properties,
            BTreeMap::from([(
                "erpnext_customer_id".to_string(),
                "Globex Corporation".to_string()
            )])
        );

        let o = ErpOutcome::AddressUpserted {
            hubspot_company_id: "7".into(),
            address: "a".into(),
            created: true,
        };
        assert_eq!(crm_update(&w, &base, &o, occurred, now), None);
    }

    #[test]
    fn urls_encode_names_and_keep_a_base_path() {
        let base = Url::parse("https://host/erp/").expect("url");
        assert_eq!(
            sales_order_url(&base, "SO 1/2"),
            "https://host/erp/app/sales-order/SO%201%2F2"
        );
    }
}
