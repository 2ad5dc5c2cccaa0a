//! `hubspot.company.*` and `hubspot.contact.*`: keep the ERPNext Customer, Address and Contacts
//! of already-synced records in step with HubSpot (`erp.update_customer`, `erp.update_contact`).
//!
//! Only records already in ERPNext matter — a company without a won deal has no business there —
//! so each event first asks whether the record is synced: the mapper's marker (set when
//! erp-writer reported the Customer or Contact), else the company's `erpnext_customer_id`
//! write-back property. erp-writer double-checks in ERPNext and does nothing for an unknown
//! record, so a wrong "yes" here costs one command, never a wrong document.
//!
//! Deletions and merges of companies and contacts are not propagated: removing a Customer that
//! has orders is a decision for a human in ERPNext. They are ignored with a logged reason.

use shared::envelope::Kind;
use shared::events::HubSpotEvent;
use shared::hubspot::ObjectType;
use shared::hubspot::types::SimplePublicObject;

use crate::emit::{Command, Decision};
use crate::error::MapError;
use crate::handler::Services;
use crate::map;
use crate::markers::Record;

fn subject(event: &HubSpotEvent, name: &str) -> Result<String, MapError> {
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

fn own_writeback(s: &Services, event: &HubSpotEvent) -> Option<Decision> {
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
        "creation" | "propertyChange" | "restore" | "merge" | "associationChange" => {}
        "deletion" => {
            if let Some(customer) = s.markers.get(Record::Company, &id).await {
                tracing::warn!(company = %id, %customer, "company deleted in HubSpot; its ERPNext Customer is kept for review");
            }
            return Ok(Decision::ignore(
                "company_deleted",
                format!("company {id} was deleted in HubSpot; ERPNext is not changed"),
            ));
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
        "creation" | "propertyChange" | "restore" | "merge" | "associationChange" => {}
        "deletion" => {
            return Ok(Decision::ignore(
                "contact_deleted",
                format!("contact {id} was deleted in HubSpot; ERPNext is not changed"),
            ));
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
