//! `erp.update_customer` and `erp.update_contact`: refresh what an earlier `erp.sync_deal`
//! created, when HubSpot's change is newer than ERPNext's document.
//!
//! Neither command creates a Customer: a company without a won deal has no business in ERPNext.
//! A new contact of an already-synced company is created and linked, though — the deal's
//! people are what the Sales Order's contact person is chosen from.

use shared::commands::{ErpOutcome, UpdateContact, UpdateCustomer};

use crate::contact::{CONTACT, upsert_contact};
use crate::customer::{find_customer, refresh_customer, upsert_address};
use crate::error::{StepError, StepFailure};
use crate::site::ErpSite;
use crate::upsert::{by_field, find_first};

/// What an update command came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Outcomes(Vec<ErpOutcome>),
    /// Nothing in ERPNext to update (never synced); the reason, for the log.
    NothingToDo(String),
}

pub async fn apply_update_customer(
    site: &ErpSite,
    cmd: &UpdateCustomer,
) -> Result<Applied, StepFailure> {
    let mut applied = Vec::new();
    let company = &cmd.customer.hubspot_company_id;
    let result: Result<Applied, StepError> = async {
        let Some(customer) = refresh_customer(site, &cmd.customer).await? else {
            return Ok(Applied::NothingToDo(format!(
                "HubSpot company {company} has no ERPNext Customer yet; its first won deal creates it"
            )));
        };
        applied.push(ErpOutcome::CustomerUpserted {
            hubspot_company_id: company.clone(),
            customer: customer.name.clone(),
            created: false,
        });
        if let Some(spec) = &cmd.address {
            let a =
                upsert_address(site, company, &customer.name, spec, cmd.customer.modified).await?;
            applied.push(ErpOutcome::AddressUpserted {
                hubspot_company_id: company.clone(),
                address: a.name,
                created: a.change.created(),
            });
        }
        Ok(Applied::Outcomes(applied.clone()))
    }
    .await;
    result.map_err(|error| StepFailure { applied, error })
}

pub async fn apply_update_contact(
    site: &ErpSite,
    cmd: &UpdateContact,
) -> Result<Applied, StepFailure> {
    let spec = &cmd.contact;
    let result: Result<Applied, StepError> = async {
        let customer = match &cmd.hubspot_company_id {
            Some(company) => find_customer(site, company)
                .await?
                .map(|d| d.name().to_string()),
            None => None,
        };
        if customer.is_none() {
            let what = format!("Contact for HubSpot contact {}", spec.hubspot_contact_id);
            let existing = find_first(
                site,
                CONTACT,
                &by_field("hubspot_contact_id", &spec.hubspot_contact_id, &["name"]),
                &what,
            )
            .await?;
            if existing.is_none() {
                return Ok(Applied::NothingToDo(format!(
                    "HubSpot contact {} is not in ERPNext and its company has no Customer",
                    spec.hubspot_contact_id
                )));
            }
        }
        let c = upsert_contact(site, customer.as_deref(), spec).await?;
        Ok(Applied::Outcomes(vec![ErpOutcome::ContactUpserted {
            hubspot_contact_id: spec.hubspot_contact_id.clone(),
            contact: c.name,
            created: c.change.created(),
        }]))
    }
    .await;
    result.map_err(|error| StepFailure {
        applied: Vec::new(),
        error,
    })
}
