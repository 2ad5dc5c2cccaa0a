//! `erp.sync_deal` (DESIGN §1 step 2): Customer, Address, Contacts, then the Sales Order, each an
//! idempotent step keyed by a unique HubSpot key, so the whole command can be applied again at
//! any point — after a crash, a redelivery, a retry — and converge on one of each document.
//!
//! This is a plain function of the ERPNext site and the command: no broker, no Redis. The
//! handler wraps it with the lease, the done marker and publishing; tests call it directly.
//!
//! # ERPNext calls
//! Every call is one request to a server that is often the slowest part of the loop, so a deal
//! costs as few as the guarantees allow (`docs/performance.md`):
//! 1. the Customer: one look-up by `hubspot_company_id`, then an insert or (when HubSpot changed
//!    it) an update;
//! 2. the Address and the Contacts: for an existing Customer, one look-up each, side by side
//!    (the Address linked to the Customer, the Contacts by an `in` filter on their IDs, links
//!    included); for a Customer created a moment ago none, since nothing is linked to it yet and
//!    the unique keys refuse a second record of anything that exists elsewhere. Whatever is
//!    missing is inserted in one `frappe.client.insert_many`; what exists is written only when
//!    it differs. A unique conflict in that batch means something exists after all: then each
//!    record is looked up and inserted on its own;
//! 3. the Sales Order: one look-up by deal (none for a new Customer: its deal's order would be
//!    linked to another Customer, and the unique `hubspot_deal_key` refuses it), then one insert,
//!    already submitted when the deal says so.
//!
//! Tax template rows and Item checks are cached per process (`taxes`, the mapper's `catalog`).
//! A new company's deal thus costs 4 calls once those are warm (6 for the first deal a fresh
//! process syncs); another deal of a known company 5, plus one insert when it brings new people.

use std::collections::{HashMap, HashSet};

use shared::commands::{ContactSpec, ErpOutcome, SyncDeal};

use crate::contact::{
    CONTACT, KnownContact, contact_body, find_contacts, lookup_key, refresh_contact, upsert_contact,
};
use crate::customer::{
    ADDRESS, PartyAccount, Upserted, address_body, address_key, ensure_address,
    find_linked_address, refresh_address, upsert_customer,
};
use crate::error::{StepError, StepFailure};
use crate::metrics;
use crate::sales_order::{Parties, upsert_sales_order};
use crate::site::ErpSite;
use crate::upsert::{Batch, Change, NewDoc, insert_batch};

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
    // Records a person edited in ERPNext that HubSpot changed too: left as they are.
    let mut reviews = Vec::new();
    if customer.change == Change::Review {
        reviews.push(format!("Customer {}", customer.name));
    }

    let (address, contact) =
        address_and_contacts(site, cmd, &customer, applied, &mut reviews).await?;
    let parties = Parties {
        customer: &customer.name,
        address: address.as_deref(),
        contact: contact.as_deref(),
        new_customer: customer.change.created(),
    };
    let order = upsert_sales_order(site, cmd, &parties).await?;
    let review = match (&order, reviews.is_empty()) {
        (ErpOutcome::SalesOrderUpserted { sales_order, .. }, false) => {
            Some(ErpOutcome::SalesOrderConflict {
                hubspot_deal_id: cmd.hubspot_deal_id.clone(),
                sales_order: sales_order.clone(),
                reason: format!(
                    "{} edited in ERPNext after lead2ledger last wrote it, and changed in \
                     HubSpot since; left as it is: compare it with HubSpot",
                    reviews.join(", ")
                ),
            })
        }
        _ => None,
    };
    applied.push(order);
    applied.extend(review);
    Ok(())
}

/// The Address and Contacts of `customer` (see the module doc); their outcomes are pushed in
/// the command's order. Returns the Address and the order's contact person: the deal's primary
/// contact, else its first one.
async fn address_and_contacts(
    site: &ErpSite,
    cmd: &SyncDeal,
    customer: &Upserted,
    applied: &mut Vec<ErpOutcome>,
    reviews: &mut Vec<String>,
) -> Result<(Option<String>, Option<String>), StepError> {
    let company = &cmd.customer.hubspot_company_id;
    let key = cmd
        .address
        .as_ref()
        .map(|a| address_key(company, &a.address_type));
    // One spec per HubSpot contact (the first, if the command names one twice).
    let mut seen = HashSet::new();
    let contacts: Vec<&ContactSpec> = cmd
        .contacts
        .iter()
        .filter(|c| seen.insert(lookup_key(c)))
        .collect();

    let (mut address_found, mut contacts_found) = if customer.change.created() {
        (None, HashMap::new())
    } else {
        let ids: Vec<&str> = contacts
            .iter()
            .map(|c| c.hubspot_contact_id.as_str())
            .collect();
        let address = async {
            match (&cmd.address, &key) {
                (Some(spec), Some(key)) => {
                    find_linked_address(site, &customer.name, key, &spec.address_type).await
                }
                _ => Ok(None),
            }
        };
        tokio::try_join!(address, find_contacts(site, &ids))?
    };

    let mut batch = Vec::new();
    let new_address = match (&cmd.address, &key) {
        (Some(spec), Some(key)) if address_found.is_none() => {
            batch.push(NewDoc {
                doctype: ADDRESS,
                body: address_body(&customer.name, key, spec, cmd.customer.modified),
            });
            true
        }
        _ => false,
    };
    let new_contacts: Vec<&ContactSpec> = contacts
        .iter()
        .copied()
        .filter(|c| !contacts_found.contains_key(&lookup_key(c)))
        .collect();
    batch.extend(new_contacts.iter().map(|c| NewDoc {
        doctype: CONTACT,
        body: contact_body(c, Some(&customer.name)),
    }));
    let what = format!("Address and Contacts of Customer {}", customer.name);
    let inserted = insert_batch(site, &batch, &what).await?;

    // What the batch created, by record; empty after a conflict (then each is looked up).
    let mut created_address = None;
    let mut created: HashMap<String, String> = HashMap::new();
    if let Batch::Inserted(names) = inserted {
        let mut names = names.into_iter();
        if new_address {
            created_address = names.next();
        }
        for (spec, name) in new_contacts.iter().zip(names) {
            created.insert(lookup_key(spec), name);
        }
    }

    let address = match (&cmd.address, &key) {
        (Some(spec), Some(key)) => {
            let modified = cmd.customer.modified;
            let a = match (created_address, address_found.take()) {
                (Some(name), _) => {
                    metrics::step(ADDRESS, Change::Created.label());
                    Upserted {
                        name,
                        change: Change::Created,
                    }
                }
                (None, Some(known)) => {
                    refresh_address(site, &customer.name, key, spec, known, modified).await?
                }
                (None, None) => ensure_address(site, &customer.name, key, spec, modified).await?,
            };
            if a.change == Change::Review {
                reviews.push(format!("Address {}", a.name));
            }
            applied.push(ErpOutcome::AddressUpserted {
                hubspot_company_id: company.clone(),
                address: a.name.clone(),
                created: a.change.created(),
            });
            Some(a.name)
        }
        _ => None,
    };

    let mut done: HashMap<String, Upserted> = HashMap::new();
    let mut primary_contact: Option<(bool, String)> = None;
    for spec in &cmd.contacts {
        let id = lookup_key(spec);
        let c = match done.get(&id) {
            // The command names this contact again: the same Contact, nothing more to do.
            Some(c) => Upserted {
                name: c.name.clone(),
                change: Change::Unchanged,
            },
            None => {
                let c = contact(
                    site,
                    &customer.name,
                    spec,
                    created.remove(&id),
                    contacts_found.remove(&id),
                )
                .await?;
                done.insert(id, c.clone());
                c
            }
        };
        if c.change == Change::Review {
            reviews.push(format!("Contact {}", c.name));
        }
        applied.push(ErpOutcome::ContactUpserted {
            hubspot_contact_id: spec.hubspot_contact_id.clone(),
            contact: c.name.clone(),
            created: c.change.created(),
        });
        match &primary_contact {
            None => primary_contact = Some((spec.is_primary_contact, c.name)),
            Some((false, _)) if spec.is_primary_contact => {
                primary_contact = Some((true, c.name));
            }
            Some(_) => {}
        }
    }
    Ok((address, primary_contact.map(|(_, name)| name)))
}

/// One Contact's step after the batch: created by it, found before it (refreshed), or neither
/// (the batch met a unique conflict: looked up and inserted on its own).
async fn contact(
    site: &ErpSite,
    customer: &str,
    spec: &ContactSpec,
    created: Option<String>,
    found: Option<KnownContact>,
) -> Result<Upserted, StepError> {
    match (created, found) {
        (Some(name), _) => {
            metrics::step(CONTACT, Change::Created.label());
            Ok(Upserted {
                name,
                change: Change::Created,
            })
        }
        (None, Some(known)) => {
            let change = refresh_contact(site, Some(customer), spec, &known).await?;
            Ok(Upserted {
                name: known.name().to_string(),
                change,
            })
        }
        (None, None) => upsert_contact(site, Some(customer), spec).await,
    }
}
