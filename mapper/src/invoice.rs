//! `erpnext.*` webhooks: Sales Invoice status → the deal's invoice status property, and a new
//! Customer that carries a `hubspot_company_id` → the company's ERPNext Customer ID (DESIGN §1
//! step 4).
//!
//! Finding the deal of an invoice: the invoice's own `hubspot_deal_id` (ERPNext copies the
//! custom field from the Sales Order; `erp-writer setup` puts it in the webhook body), else its
//! Sales Orders' `hubspot_deal_id`, asked from ERPNext in one call. An invoice of several deals'
//! orders updates each deal. The fact's time is the invoice's `modified` read in the ERPNext
//! site's time zone, so crm-writer can keep a late "Unpaid" from overwriting "Paid".

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::commands::UpdateCrmObject;
use shared::envelope::{Envelope, Kind};
use shared::erpnext::{ErpNextClient, ErpNextError, ListQuery};
use shared::events::ErpNextEvent;
use shared::mapping::{WritebackConfig, invoice_status_value};

use crate::emit::{Command, Decision};
use crate::error::MapError;
use crate::handler::Services;
use crate::map::parse_erpnext_time;
use crate::markers::Record;

pub async fn on_event(
    s: &Services,
    parent: &Envelope,
    ev: &ErpNextEvent,
) -> Result<Decision, MapError> {
    match (ev.doctype.as_str(), ev.event.as_str()) {
        ("Sales Invoice", _) => sales_invoice(s, parent, ev).await,
        ("Customer", "after_insert") => customer_inserted(s, parent, ev).await,
        ("Sales Order", _) => crate::sales_order::on_event(s, parent, ev).await,
        (doctype, event) => Ok(Decision::ignore(
            "unsupported_event",
            format!("ERPNext {doctype} {event} events are not mapped"),
        )),
    }
}

fn text<'a>(doc: &'a Value, field: &str) -> Option<&'a str> {
    doc.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The fact's time: `modified` in the site's time zone, else when the webhook arrived.
fn fact_time(s: &Services, parent: &Envelope, doc: &Value) -> DateTime<Utc> {
    text(doc, "modified")
        .and_then(|m| parse_erpnext_time(m, s.tz))
        .unwrap_or(parent.received_at)
}

/// Sales Order names an invoice body mentions: `sales_orders` (our webhook template) or the
/// rows' `sales_order` (a full-document webhook).
pub fn sales_orders(doc: &Value) -> BTreeSet<String> {
    let listed = doc
        .get("sales_orders")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let rows = doc
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("sales_order"));
    listed
        .chain(rows)
        .filter_map(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

async fn sales_invoice(
    s: &Services,
    parent: &Envelope,
    ev: &ErpNextEvent,
) -> Result<Decision, MapError> {
    let doc = &ev.doc;
    let name = ev.name().unwrap_or("?");
    if doc.get("docstatus").and_then(Value::as_i64) == Some(0) {
        return Ok(Decision::ignore(
            "draft_invoice",
            format!("Sales Invoice {name} is a draft"),
        ));
    }
    let Some(status) = text(doc, "status") else {
        return Err(MapError::BadMessage(format!(
            "Sales Invoice {name} webhook has no \"status\"; recreate the webhooks with `erp-writer setup`"
        )));
    };
    let deals = deals_of(s, name, doc).await?;
    if deals.is_empty() {
        return Ok(Decision::ignore(
            "no_deal",
            format!(
                "Sales Invoice {name} is not linked to a HubSpot deal (no hubspot_deal_id on it or its Sales Orders)"
            ),
        ));
    }
    let source_modified = fact_time(s, parent, doc);
    let commands = deals
        .iter()
        .map(|deal| {
            let update = status_update(&s.cfg.writeback, deal, status, source_modified);
            Command::new(Kind::CrmUpdateDeal, format!("deal:{deal}"), &update)
        })
        .collect::<Result<Vec<_>, _>>()?;
    tracing::info!(invoice = name, status, deals = ?deals, "invoice status mapped");
    Ok(Decision::Emit(commands))
}

/// What the deal of an invoice should show: its invoice status property, with the HubSpot
/// value of the ERPNext status. The live webhook path and the sweep ([`crate::sweep`]) both
/// build their `crm.update_deal` from this.
pub fn status_update(
    w: &WritebackConfig,
    deal: &str,
    erpnext_status: &str,
    source_modified: DateTime<Utc>,
) -> UpdateCrmObject {
    UpdateCrmObject {
        object_id: deal.to_string(),
        properties: BTreeMap::from([(
            w.deal_invoice_status.clone(),
            invoice_status_value(erpnext_status),
        )]),
        source_modified,
    }
}

/// The deal an invoice names itself (`hubspot_deal_id`, copied from its Sales Order).
pub fn own_deal(doc: &Value) -> Option<&str> {
    text(doc, "hubspot_deal_id")
}

async fn deals_of(s: &Services, invoice: &str, doc: &Value) -> Result<BTreeSet<String>, MapError> {
    if let Some(deal) = own_deal(doc) {
        return Ok(BTreeSet::from([deal.to_string()]));
    }
    let orders = sales_orders(doc);
    if orders.is_empty() {
        return Ok(BTreeSet::new());
    }
    let Some(client) = &s.erpnext else {
        return Err(MapError::NotConfigured(format!(
            "Sales Invoice {invoice} carries no hubspot_deal_id and the mapper has no ERPNext credentials to look up its Sales Orders; set [erpnext] api_key/api_secret or add hubspot_deal_id to the webhook (erp-writer setup)"
        )));
    };
    Ok(deals_of_orders(client, &orders)
        .await?
        .into_values()
        .collect())
}

/// Sales Orders per list call when resolving orders to deals.
pub const ORDERS_PER_CALL: usize = 500;

/// Sales Order → its `hubspot_deal_id`, for the orders that have one: one ERPNext call per 500
/// orders.
pub async fn deals_of_orders(
    client: &ErpNextClient,
    orders: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>, ErpNextError> {
    let orders: Vec<&String> = orders.iter().collect();
    let mut out = BTreeMap::new();
    for chunk in orders.chunks(ORDERS_PER_CALL) {
        let query = ListQuery::new()
            .filter(
                "name",
                "in",
                Value::from(chunk.iter().map(|o| o.to_string()).collect::<Vec<_>>()),
            )
            .fields(&["name", "hubspot_deal_id"])
            .limit(u32::try_from(chunk.len()).unwrap_or(u32::MAX));
        let rows = client.list("Sales Order", &query).await?;
        out.extend(rows.iter().filter_map(|r| {
            let deal = r
                .str("hubspot_deal_id")
                .map(str::trim)
                .filter(|d| !d.is_empty())?;
            Some((r.name().to_string(), deal.to_string()))
        }));
    }
    Ok(out)
}

async fn customer_inserted(
    s: &Services,
    parent: &Envelope,
    ev: &ErpNextEvent,
) -> Result<Decision, MapError> {
    let doc = &ev.doc;
    let Some(customer) = ev.name() else {
        return Err(MapError::BadMessage(
            "Customer webhook without \"name\"".into(),
        ));
    };
    let Some(company) = text(doc, "hubspot_company_id") else {
        return Ok(Decision::ignore(
            "no_company",
            format!("Customer {customer} has no hubspot_company_id (not created from HubSpot)"),
        ));
    };
    // erp-writer's `customer_upserted` outcome records the Customer and writes it back; the
    // webhook of the same insert would only write the same value again. It still matters
    // when the outcome was lost or the Customer was made by hand with a HubSpot ID.
    if s.markers.get(Record::Company, company).await.as_deref() == Some(customer) {
        return Ok(Decision::ignore(
            "already_written_back",
            format!("Customer {customer} of company {company} is already on HubSpot"),
        ));
    }
    s.markers.mark(Record::Company, company, customer).await;
    let update = UpdateCrmObject {
        object_id: company.to_string(),
        properties: BTreeMap::from([(
            s.cfg.writeback.company_customer_id.clone(),
            customer.to_string(),
        )]),
        source_modified: fact_time(s, parent, doc),
    };
    Ok(Decision::Emit(vec![Command::new(
        Kind::CrmUpdateCompany,
        format!("company:{company}"),
        &update,
    )?]))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sales_orders_from_template_and_full_document() {
        let d = json!({"sales_orders": ["SAL-ORD-2026-00001", null, ""], "items": [{"sales_order": "SAL-ORD-2026-00002"}, {"sales_order": null}]});
        assert_eq!(
            sales_orders(&d).into_iter().collect::<Vec<_>>(),
            ["SAL-ORD-2026-00001", "SAL-ORD-2026-00002"]
        );
        assert!(sales_orders(&json!({})).is_empty());
    }
}
