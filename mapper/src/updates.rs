//! `hubspot.company.*` and `hubspot.contact.*`: keep the ERPNext Customer, Address and Contacts
//! of already-synced records in step with HubSpot (`erp.update_customer`, `erp.update_contact`).
//!
//! Only records already in ERPNext matter — a company without a won deal has no business there —
//! so each event first asks whether the record is synced: the mapper's marker (set when
//! erp-writer reported the Customer or Contact), else the company's `erpnext_customer_id`
//! write-back property. erp-writer double-checks in ERPNext and does nothing for an unknown
//! record, so a wrong "yes" here costs one command, never a wrong document.
//!
//! Deletions and merges of companies and contacts are never propagated to ERPNext: removing or
//! merging a Customer that has orders is a decision for a human. Instead every deal of the gone
//! record (deleted, or merged away into another) that already has a Sales Order is flagged
//! `needs_review` with the reason. Its deals are the ones HubSpot still associates with it plus
//! the ones the mapper recorded when it synced them ([`crate::markers`]) — HubSpot no longer
//! answers the associations of a deleted record, and a merge moves them to the survivor.

use std::collections::BTreeSet;

use shared::envelope::Kind;
use shared::events::HubSpotEvent;
use shared::hubspot::ObjectType;
use shared::hubspot::types::SimplePublicObject;

use crate::deal::needs_review;
use crate::emit::{Command, Decision};
use crate::error::MapError;
use crate::handler::Services;
use crate::map;
use crate::markers::Record;
use crate::metrics;

/// The object an event is about (a merge's surviving record).
pub(crate) fn subject(event: &HubSpotEvent, name: &str) -> Result<String, MapError> {
    let id = if name == "merge" {
        event.primary_object_id.or(event.object_id)
    } else {
        event.subject_id()
    };
    id.map(|i| i.to_string()).ok_or_else(|| {
        MapError::BadMessage(format!(
            "HubSpot event {} ({}) names no object",
            event.event_id, event.subscription_type
        ))
    })
}

/// A change of a property lead2ledger writes itself: our own echo.
pub(crate) fn own_writeback(s: &Services, event: &HubSpotEvent) -> Option<Decision> {
    let p = event.property_name.as_deref()?;
    s.cfg.writeback.all().contains(&p).then(|| {
        Decision::ignore(
            "own_writeback",
            format!("{p} is written by lead2ledger itself"),
        )
    })
}

pub async fn on_company_event(
    s: &Services,
    event: &HubSpotEvent,
    name: &str,
) -> Result<Decision, MapError> {
    if let Some(d) = own_writeback(s, event) {
        return Ok(d);
    }
    let id = subject(event, name)?;
    match name {
        "creation" | "propertyChange" | "restore" | "associationChange" => {}
        "deletion" | "merge" => {
            if let Some(d) = gone(s, Record::Company, event, name, &id).await? {
                return Ok(d);
            }
        }
        other => {
            return Ok(Decision::ignore(
                "unsupported_event",
                format!("company.{other} events are not mapped"),
            ));
        }
    }
    let Some(company) = s.reader.company(&s.cfg, &id).await? else {
        return Ok(Decision::ignore(
            "not_found",
            format!("company {id} no longer exists in HubSpot"),
        ));
    };
    if !company_synced(s, &company).await {
        return Ok(Decision::ignore(
            "not_synced",
            format!("company {id} has no ERPNext Customer yet; its first won deal creates it"),
        ));
    }
    let update = map::update_customer(&s.ctx(), &company)?;
    Ok(Decision::Emit(vec![Command::new(
        Kind::ErpUpdateCustomer,
        format!("company:{id}"),
        &update,
    )?]))
}

pub async fn on_contact_event(
    s: &Services,
    event: &HubSpotEvent,
    name: &str,
) -> Result<Decision, MapError> {
    if let Some(d) = own_writeback(s, event) {
        return Ok(d);
    }
    let id = subject(event, name)?;
    match name {
        "creation" | "propertyChange" | "restore" | "associationChange" => {}
        "deletion" | "merge" => {
            if let Some(d) = gone(s, Record::Contact, event, name, &id).await? {
                return Ok(d);
            }
        }
        other => {
            return Ok(Decision::ignore(
                "unsupported_event",
                format!("contact.{other} events are not mapped"),
            ));
        }
    }
    let Some(contact) = s.reader.contact(&s.cfg, &id).await? else {
        return Ok(Decision::ignore(
            "not_found",
            format!("contact {id} no longer exists in HubSpot"),
        ));
    };
    let company_id = contact
        .association_ids(ObjectType::Companies)
        .into_iter()
        .next();
    let synced = s.markers.get(Record::Contact, &id).await.is_some()
        || match &company_id {
            Some(cid) => match s.markers.get(Record::Company, cid).await {
                Some(_) => true,
                None => match s.reader.company(&s.cfg, cid).await? {
                    Some(company) => company_synced(s, &company).await,
                    None => false,
                },
            },
            None => false,
        };
    if !synced {
        return Ok(Decision::ignore(
            "not_synced",
            format!("contact {id} and its company are not in ERPNext yet; a won deal brings them"),
        ));
    }
    let Some(update) = map::update_contact(&s.ctx(), &contact, company_id) else {
        return Ok(Decision::ignore(
            "contact_without_name",
            format!("contact {id} has no name and no e-mail to map"),
        ));
    };
    Ok(Decision::Emit(vec![Command::new(
        Kind::ErpUpdateContact,
        format!("contact:{id}"),
        &update,
    )?]))
}

async fn company_synced(s: &Services, company: &SimplePublicObject) -> bool {
    company
        .property(&s.cfg.writeback.company_customer_id)
        .is_some()
        || s.markers.get(Record::Company, &company.id).await.is_some()
}

/// A company or contact was deleted (`id`) or merged away (the event's merged IDs other than
/// the survivor `id`): flag each of its deals that has a Sales Order. `None` for a merge that
/// touches no such deal — the survivor is then handled as a record that changed.
async fn gone(
    s: &Services,
    record: Record,
    event: &HubSpotEvent,
    name: &str,
    id: &str,
) -> Result<Option<Decision>, MapError> {
    let (noun, from) = match record {
        Record::Contact => ("contact", ObjectType::Contacts),
        _ => ("company", ObjectType::Companies),
    };
    let merge = name == "merge";
    let gone_ids: Vec<String> = if merge {
        event
            .merged_object_ids
            .iter()
            .map(u64::to_string)
            .filter(|m| m != id)
            .collect()
    } else {
        vec![id.to_string()]
    };
    let mut commands = Vec::new();
    for gone_id in &gone_ids {
        let mut deals: BTreeSet<String> = s
            .reader
            .associated_deals(from, std::slice::from_ref(gone_id))
            .await?
            .into_iter()
            .collect();
        deals.extend(s.markers.linked_deals(record, gone_id).await);
        let customer = match record {
            Record::Company => s
                .markers
                .get(Record::Company, gone_id)
                .await
                .map(|c| format!(" (ERPNext Customer {c})"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let what = if merge {
            format!("{noun} {gone_id}{customer} was merged into {noun} {id} in HubSpot")
        } else {
            format!("{noun} {gone_id}{customer} was deleted in HubSpot")
        };
        for deal in deals {
            let Some(so) = sales_order(s, &deal).await? else {
                continue;
            };
            metrics::needs_review(if merge {
                "record_merged"
            } else {
                "record_deleted"
            });
            tracing::warn!(deal = %deal, sales_order = %so, "{what}: deal flagged for review");
            commands.push(needs_review(
                s,
                &deal,
                chrono::Utc::now(),
                &format!("{what}; Sales Order {so} exists in ERPNext and is not changed"),
            )?);
        }
    }
    if !commands.is_empty() {
        return Ok(Some(Decision::Emit(commands)));
    }
    if merge {
        return Ok(None);
    }
    Ok(Some(Decision::ignore(
        if record == Record::Company {
            "company_deleted"
        } else {
            "contact_deleted"
        },
        format!("{noun} {id} was deleted in HubSpot; none of its deals has a Sales Order"),
    )))
}

/// The deal's Sales Order: the mapper's marker, else the deal's write-back property.
async fn sales_order(s: &Services, deal: &str) -> Result<Option<String>, MapError> {
    if let Some(so) = s.markers.get(Record::Deal, deal).await {
        return Ok(Some(so));
    }
    Ok(s.reader.deal(&s.cfg, deal).await?.and_then(|d| {
        d.property(&s.cfg.writeback.deal_sales_order)
            .map(str::to_string)
    }))
}
