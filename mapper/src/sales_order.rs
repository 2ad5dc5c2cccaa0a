//! `erpnext.Sales Order.*` webhooks: someone cancelled a deal's order in ERPNext, or amended it.
//! There is no other way for HubSpot to learn it: lead2ledger never changes a submitted order, so
//! no outcome would ever say so.
//!
//! A webhook tells what happened to one revision, and deliveries can come late or out of order
//! (the cancel of the original after the insert of its amendment). So the mapper re-reads the
//! deal's revisions from ERPNext and shows the one that counts now
//! ([`shared::erpnext::sales_order`]): the newest revision that is not cancelled becomes the
//! deal's Sales Order (status `synced`); when every revision is cancelled, the deal shows the
//! cancelled order as `needs_review`. The write is stamped with the mapper's clock, as every
//! sync status is: the value was read just now.

use chrono::Utc;
use serde_json::Value;
use shared::commands::ErpOutcome;
use shared::envelope::Envelope;
use shared::erpnext::sales_order::{DealOrder, deal_order};
use shared::events::ErpNextEvent;

use crate::emit::{Command, Decision};
use crate::error::MapError;
use crate::handler::Services;
use crate::markers::Record;
use crate::metrics;
use crate::outcomes::crm_update;

/// The reason a deal whose every order revision is cancelled shows.
pub const CANCELLED: &str = "cancelled in ERPNext and not amended";

/// What the deal shows for where its order stands (`order`, with `status` and `modified`): the
/// live revision as its synced order, or the last cancelled one for review. The webhook path
/// here and the sweep ([`crate::sweep`]) both write this.
pub fn outcome(deal: &str, order: &DealOrder) -> Option<ErpOutcome> {
    match order {
        DealOrder::Live(doc) => Some(ErpOutcome::SalesOrderUpserted {
            hubspot_deal_id: deal.to_string(),
            hubspot_company_id: String::new(),
            sales_order: doc.name().to_string(),
            docstatus: doc.docstatus(),
            status: doc.str("status").unwrap_or_default().to_string(),
            created: false,
            modified: doc.modified().unwrap_or_default().to_string(),
        }),
        DealOrder::Cancelled(doc) => Some(ErpOutcome::SalesOrderConflict {
            hubspot_deal_id: deal.to_string(),
            sales_order: doc.name().to_string(),
            reason: CANCELLED.into(),
        }),
        DealOrder::Absent => None,
    }
}

pub async fn on_event(
    s: &Services,
    _parent: &Envelope,
    ev: &ErpNextEvent,
) -> Result<Decision, MapError> {
    let name = ev.name().unwrap_or("?");
    let Some(deal) = ev
        .doc
        .get("hubspot_deal_id")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|d| !d.is_empty())
    else {
        return Ok(Decision::ignore(
            "no_deal",
            format!("Sales Order {name} is not linked to a HubSpot deal"),
        ));
    };
    let Some(erpnext) = &s.erpnext else {
        return Err(MapError::NotConfigured(
            "Sales Order webhooks need ERPNext credentials ([erpnext] api_key/api_secret)".into(),
        ));
    };
    let order = deal_order(erpnext, deal, &["status", "modified"]).await?;
    match &order {
        DealOrder::Live(doc) => {
            s.markers.mark(Record::Deal, deal, doc.name()).await;
            tracing::info!(deal, sales_order = doc.name(), event = %ev.event, "deal follows its live Sales Order");
        }
        DealOrder::Cancelled(doc) => {
            metrics::needs_review("sales_order_cancelled");
            tracing::warn!(
                deal,
                sales_order = doc.name(),
                "the deal's Sales Order is cancelled with no amendment: flagged for review"
            );
        }
        DealOrder::Absent => {}
    }
    let Some(outcome) = outcome(deal, &order) else {
        return Ok(Decision::ignore(
            "no_order",
            format!("no Sales Order of deal {deal} is left in ERPNext"),
        ));
    };
    let now = Utc::now();
    match crm_update(&s.cfg.writeback, &s.app_url, &outcome, now, now) {
        Some((kind, update)) => Ok(Decision::Emit(vec![Command::new(
            kind,
            format!("deal:{deal}"),
            &update,
        )?])),
        None => Ok(Decision::ignore("nothing_to_write_back", "no change")),
    }
}
