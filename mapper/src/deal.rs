//! `hubspot.deal.*`: read the deal's current state, check the trigger, and emit one
//! `erp.sync_deal` — or flag the deal for review, or ignore it with a reason (DESIGN §1 step 1).
//!
//! The event's own values are never trusted (events arrive late, twice, out of order): every
//! event only says "look at deal N now". What the mapper then sees decides:
//! - won (trigger pipeline + stage) → `erp.sync_deal` with customer, address, contacts, lines;
//! - not won, and a Sales Order exists → `crm.update_deal` `needs_review` (never a change in
//!   ERPNext: cancelling an order is a human decision);
//! - not won, no Sales Order → ignored;
//! - gone (deleted, or merged into another deal) with a Sales Order → `needs_review`.
//!
//! Every `needs_review` carries a short reason in the deal's sync message property.
//!
//! "A Sales Order exists" = the deal's write-back property holds its name, or the mapper saw
//! erp-writer report it ([`crate::markers`]).

use std::collections::BTreeMap;

use shared::commands::{SyncStatus, UpdateCrmObject};
use shared::envelope::Kind;
use shared::events::HubSpotEvent;
use shared::hubspot::ObjectType;
use shared::hubspot::types::SimplePublicObject;

use crate::emit::{Command, Decision};
use crate::error::MapError;
use crate::handler::Services;
use crate::map;
use crate::markers::Record;
use crate::metrics;
use crate::updates;

pub async fn on_event(
    s: &Services,
    event: &HubSpotEvent,
    name: &str,
) -> Result<Decision, MapError> {
    if let Some(d) = updates::own_writeback(s, event) {
        return Ok(d);
    }
    let id = updates::subject(event, name)?;
    match name {
        "creation" | "propertyChange" | "associationChange" | "restore" => current(s, &id).await,
        // Stamped with the deletion's HubSpot time, not ours: a restore right after it (often in
        // the same webhook batch, handled side by side) is mapped again and its "synced", stamped
        // later, must win over this flag.
        "deletion" => {
            let at = chrono::DateTime::from_timestamp_millis(event.occurred_at)
                .unwrap_or_else(chrono::Utc::now);
            gone(s, &id, "deal_deleted", "was deleted in HubSpot", at).await
        }
        "merge" => merged(s, event, &id).await,
        other => Ok(Decision::ignore(
            "unsupported_event",
            format!("deal.{other} events are not mapped"),
        )),
    }
}

/// A line item changed (HubSpot's generic `object.*` subscription for line items): its deal is
/// mapped again as HubSpot has it now, so an edit after the win reaches a draft order (or
/// flags a submitted one). A deleted line item has no deal left to find; the deal's `amount`
/// change that HubSpot makes with it (subscribe to it too) brings the deal up to date.
pub async fn on_line_item_event(
    s: &Services,
    event: &HubSpotEvent,
    name: &str,
) -> Result<Decision, MapError> {
    let id = updates::subject(event, name)?;
    if !matches!(
        name,
        "creation" | "propertyChange" | "associationChange" | "restore"
    ) {
        return Ok(Decision::ignore(
            "unsupported_event",
            format!("line_item.{name} events are followed through the deal's own events"),
        ));
    }
    let deals = s
        .reader
        .associated_deals(ObjectType::LineItems, std::slice::from_ref(&id))
        .await?;
    match deals.first() {
        Some(deal) => current(s, deal).await,
        None => Ok(Decision::ignore(
            "no_deal",
            format!("line item {id} belongs to no deal"),
        )),
    }
}

/// Decide on the deal as HubSpot has it now.
async fn current(s: &Services, id: &str) -> Result<Decision, MapError> {
    let Some(deal) = s.reader.deal(&s.cfg, id).await? else {
        return gone(
            s,
            id,
            "deal_deleted",
            "no longer exists in HubSpot",
            chrono::Utc::now(),
        )
        .await;
    };
    if let Some(why) = map::not_triggered(&s.cfg.trigger, &deal) {
        return match sales_order_of(s, &deal).await {
            Some(so) => {
                metrics::needs_review("left_trigger_stage");
                tracing::warn!(deal = id, sales_order = %so, "{why}, but Sales Order {so} exists: flagged for review");
                Ok(Decision::Emit(vec![needs_review(
                    s,
                    id,
                    chrono::Utc::now(),
                    &format!("deal left the won stage after Sales Order {so} was created: {why}"),
                )?]))
            }
            None => Ok(Decision::ignore("not_trigger_stage", why)),
        };
    }
    let (snapshot, calls) = s.reader.snapshot(&s.cfg, deal).await?;
    metrics::deal_read_calls(calls);
    let codes = map::item_codes(&s.cfg, &snapshot);
    let catalog = s.catalog.lookup(&codes).await?;
    let sync = map::sync_deal(&s.ctx(), &snapshot, &catalog)?;
    // A deleted company or contact must later find this deal (HubSpot forgets its associations).
    if let Some(company) = &snapshot.company {
        s.markers.link_deal(Record::Company, &company.id, id).await;
    }
    for contact in &snapshot.contacts {
        s.markers.link_deal(Record::Contact, &contact.id, id).await;
    }
    tracing::info!(
        deal = id,
        lines = sync.order.items.len(),
        hubspot_calls = calls,
        "deal mapped"
    );
    Ok(Decision::Emit(vec![Command::new(
        Kind::ErpSyncDeal,
        format!("deal:{id}"),
        &sync,
    )?]))
}

/// The deal is gone from HubSpot: flag it if ERPNext has its order, else nothing to do.
async fn gone(
    s: &Services,
    id: &str,
    code: &'static str,
    what: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Decision, MapError> {
    match s.markers.get(Record::Deal, id).await {
        Some(so) => {
            metrics::needs_review(code);
            tracing::warn!(deal = id, sales_order = %so, "deal {what} but Sales Order {so} exists in ERPNext: flagged for review");
            Ok(Decision::Emit(vec![needs_review(
                s,
                id,
                at,
                &format!("deal {what}, but Sales Order {so} exists in ERPNext"),
            )?]))
        }
        None => Ok(Decision::ignore(
            code,
            format!("deal {id} {what}; no Sales Order known for it"),
        )),
    }
}

/// Deals merged into `primaryObjectId`: if one of the merged-away deals had a Sales Order, the
/// surviving deal now stands for two orders — a human decides. Otherwise the survivor is just
/// a deal that changed.
async fn merged(s: &Services, event: &HubSpotEvent, id: &str) -> Result<Decision, MapError> {
    let primary = event
        .primary_object_id
        .map(|p| p.to_string())
        .unwrap_or_else(|| id.to_string());
    let mut orders = Vec::new();
    for merged in event
        .merged_object_ids
        .iter()
        .map(u64::to_string)
        .filter(|m| *m != primary)
    {
        if let Some(so) = s.markers.get(Record::Deal, &merged).await {
            orders.push(format!("{so} (deal {merged})"));
        }
    }
    if orders.is_empty() {
        return current(s, &primary).await;
    }
    metrics::needs_review("deal_merged");
    let so = orders.join(", ");
    tracing::warn!(deal = %primary, sales_orders = %so, "deals with Sales Orders were merged: flagged for review");
    Ok(Decision::Emit(vec![needs_review(
        s,
        &primary,
        chrono::Utc::now(),
        &format!("deals with Sales Orders were merged into this deal: {so}"),
    )?]))
}

async fn sales_order_of(s: &Services, deal: &SimplePublicObject) -> Option<String> {
    match deal.property(&s.cfg.writeback.deal_sales_order) {
        Some(so) => Some(so.to_string()),
        None => s.markers.get(Record::Deal, &deal.id).await,
    }
}

/// Longest reason written to the deal's sync message property.
pub const REASON_MAX_CHARS: usize = 250;

/// `reason` cut to [`REASON_MAX_CHARS`] characters (an ellipsis marks the cut).
pub fn short_reason(reason: &str) -> String {
    if reason.chars().count() <= REASON_MAX_CHARS {
        return reason.to_string();
    }
    let mut cut: String = reason.chars().take(REASON_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// `crm.update_deal` setting the sync status to `needs_review`, with the reason.
pub fn needs_review(
    s: &Services,
    deal_id: &str,
    source_modified: chrono::DateTime<chrono::Utc>,
    reason: &str,
) -> Result<Command, MapError> {
    let w = &s.cfg.writeback;
    let properties = BTreeMap::from([
        (
            w.deal_sync_status.clone(),
            SyncStatus::NeedsReview.as_str().to_string(),
        ),
        (w.deal_sync_message.clone(), short_reason(reason)),
    ]);
    Command::new(
        Kind::CrmUpdateDeal,
        format!("deal:{deal_id}"),
        &UpdateCrmObject {
            object_id: deal_id.to_string(),
            properties,
            source_modified,
        },
    )
}
