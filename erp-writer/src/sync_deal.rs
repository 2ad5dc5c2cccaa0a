//! `erp.sync_deal` (DESIGN §1 step 2): Customer, Address, Contacts, then the Sales Order, each an
//! idempotent step keyed by its HubSpot ID, so the whole command can be applied again at any
//! point — after a crash, a redelivery, a retry — and converge on one of each document.
//!
//! This is a plain function of the ERPNext site and the command: no broker, no Redis. The
//! handler wraps it with the lease, the done marker and publishing; tests call it directly.

use shared::commands::{ErpOutcome, SyncDeal};

use crate::contact::upsert_contact;
use crate::customer::{PartyAccount, upsert_address, upsert_customer};
use crate::error::{StepError, StepFailure};
use crate::sales_order::{Parties, upsert_sales_order};
use crate::site::ErpSite;

/// Apply every step of `cmd`; the outcomes in step order. On failure, the outcomes of the steps
/// that were applied come with the error, so they can still be reported.
pub async fn apply_sync_deal(
    site: &ErpSite,
    cmd: &SyncDeal,
) -> Result<Vec<ErpOutcome>, StepFailure> {
    let mut applied = Vec::new();
    match steps(site, cmd, &mut applied).await {
        Ok(()) => Ok(applied),
        Err(error) => Err(StepFailure { applied, error }),
    }
}

async fn steps(
    site: &ErpSite,
    cmd: &SyncDeal,
    applied: &mut Vec<ErpOutcome>,
) -> Result<(), StepError> {
    let company = &cmd.customer.hubspot_company_id;
    let party_account = cmd
        .order
        .receivable_account
        .as_deref()
        .map(|account| PartyAccount {
            company: &cmd.order.company,
            account,
            currency: &cmd.order.currency,
        });
    let customer = upsert_customer(site, &cmd.customer, party_account).await?;
    applied.push(ErpOutcome::CustomerUpserted {
        hubspot_company_id: company.clone(),
        customer: customer.name.clone(),
        created: customer.change.created(),
    });

    let address = match &cmd.address {
        Some(spec) => {
            let a = upsert_address(site, &customer.name, spec, cmd.customer.modified).await?;
            applied.push(ErpOutcome::AddressUpserted {
                hubspot_company_id: company.clone(),
                address: a.name.clone(),
                created: a.change.created(),
            });
            Some(a.name)
        }
        None => None,
    };

    let mut primary_contact = None;
    for spec in &cmd.contacts {
        let c = upsert_contact(site, Some(&customer.name), spec).await?;
        applied.push(ErpOutcome::ContactUpserted {
            hubspot_contact_id: spec.hubspot_contact_id.clone(),
            contact: c.name.clone(),
            created: c.change.created(),
        });
        // The deal's primary contact, else its first one, becomes the order's contact person.
        match &primary_contact {
            None => primary_contact = Some((spec.is_primary_contact, c.name)),
            Some((false, _)) if spec.is_primary_contact => primary_contact = Some((true, c.name)),
            Some(_) => {}
        }
    }
    let contact = primary_contact.map(|(_, name)| name);

    let parties = Parties {
        customer: &customer.name,
        address: address.as_deref(),
        contact: contact.as_deref(),
    };
    applied.push(upsert_sales_order(site, cmd, &parties).await?);
    Ok(())
}
