//! `mapper reconcile [--fix]`: compare HubSpot's won deals with ERPNext's Sales Orders (DESIGN §1
//! step 5) and, with `--fix`, enqueue a synthetic "deal won" event for every won deal without a
//! Sales Order. The mapper then handles it like a webhook — reads the deal, maps it, emits
//! `erp.sync_deal` — so a lost webhook, a purged dead letter or a sync from before go-live all
//! converge the same way, with the same checks.
//!
//! Then one sweep of ERPNext ([`crate::sweep`]): invoices and orders changed since the
//! watermark whose deals show other values in HubSpot are listed, and with `--fix` corrected
//! (under the same lease as the periodic sweep).
//!
//! Reading: HubSpot's search for deals in the trigger pipelines and stages (search budget,
//! 200 per page, windowed by `hs_object_id` past the 10,000-result cap of one query); ERPNext's
//! Sales Orders that carry a `hubspot_deal_id` (500 per page). Orders whose deal is not won any
//! more, and cancelled orders of won deals, are reported for a human: reconcile never changes
//! ERPNext and never guesses.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::Utc;
use serde_json::Value;
use shared::broker::{Broker, Outgoing};
use shared::envelope::{Envelope, Kind, Source};
use shared::erpnext::{ErpNextClient, ErpNextError, ListQuery};
use shared::events::HubSpotEvent;
use shared::hubspot::types::{
    Filter, FilterGroup, FilterOperator, SearchRequest, Sort, SortDirection,
};
use shared::hubspot::{HubSpotClient, HubSpotError, ObjectType};
use shared::mapping::TriggerConfig;
use shared::names::{Exchange, routing};
use uuid::Uuid;

use crate::sweep::SweepReport;

/// HubSpot stops one search query at 10,000 results; a new window starts before that.
const SEARCH_WINDOW: usize = 9_800;
const SEARCH_PAGE: u32 = 200;
const ERP_PAGE: u32 = 500;

/// A won deal as the search returned it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WonDeal {
    pub id: String,
    pub name: String,
}

/// What reconcile found (and, with `--fix`, did).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub won_deals: usize,
    pub sales_orders: usize,
    /// Won deals without a Sales Order.
    pub missing: Vec<WonDeal>,
    /// `(Sales Order, deal)` for orders whose deal is not (or no longer) won.
    pub not_won: Vec<(String, String)>,
    /// `(deal, Sales Order)` for won deals whose only orders are cancelled.
    pub cancelled: Vec<(String, String)>,
    /// Synthetic events published (with `--fix`).
    pub enqueued: usize,
    /// The correlation ID of the published events, to follow them in the logs.
    pub correlation_id: Option<String>,
    /// The sweep of ERPNext changes since the watermark ([`crate::sweep`]).
    pub sweep: Option<SweepReport>,
    /// Why the sweep did not run or failed (the comparison above still stands).
    pub sweep_error: Option<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "won deals in HubSpot: {}; Sales Orders with a HubSpot deal: {}",
            self.won_deals, self.sales_orders
        )?;
        writeln!(f, "won deals without a Sales Order: {}", self.missing.len())?;
        for d in &self.missing {
            writeln!(f, "  deal {} '{}'", d.id, d.name)?;
        }
        writeln!(
            f,
            "Sales Orders whose deal is not won: {}",
            self.not_won.len()
        )?;
        for (so, deal) in &self.not_won {
            writeln!(f, "  {so} (deal {deal}): review in ERPNext")?;
        }
        writeln!(
            f,
            "won deals whose Sales Orders are all cancelled: {}",
            self.cancelled.len()
        )?;
        for (deal, so) in &self.cancelled {
            writeln!(f, "  deal {deal}: {so} cancelled; review in ERPNext")?;
        }
        match &self.correlation_id {
            Some(c) => writeln!(
                f,
                "enqueued {} deal(s) for sync (correlation_id {c})",
                self.enqueued
            )?,
            None if !self.missing.is_empty() => {
                writeln!(f, "run with --fix to enqueue the missing deals")?
            }
            None => {}
        }
        if let Some(s) = &self.sweep {
            write!(f, "{s}")?;
        }
        match &self.sweep_error {
            Some(e) => writeln!(f, "sweep of ERPNext changes failed: {e}"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    HubSpot(#[from] HubSpotError),
    #[error(transparent)]
    ErpNext(#[from] ErpNextError),
    #[error("publishing the synthetic events: {0}")]
    Publish(#[from] shared::broker::BrokerError),
}

/// Every deal in a trigger stage (of a trigger pipeline).
pub async fn won_deals(
    hubspot: &HubSpotClient,
    trigger: &TriggerConfig,
) -> Result<Vec<WonDeal>, HubSpotError> {
    let mut base = vec![Filter {
        property_name: "dealstage".into(),
        operator: FilterOperator::In,
        value: None,
        high_value: None,
        values: Some(trigger.stages.clone()),
    }];
    if !trigger.pipelines.is_empty() {
        base.push(Filter {
            property_name: "pipeline".into(),
            operator: FilterOperator::In,
            value: None,
            high_value: None,
            values: Some(trigger.pipelines.clone()),
        });
    }
    let mut deals: Vec<WonDeal> = Vec::new();
    let mut last_id: Option<String> = None;
    loop {
        let mut filters = base.clone();
        if let Some(last) = &last_id {
            filters.push(Filter::new(
                "hs_object_id",
                FilterOperator::Gt,
                last.clone(),
            ));
        }
        let mut request = SearchRequest {
            filter_groups: vec![FilterGroup { filters }],
            sorts: vec![Sort {
                property_name: "hs_object_id".into(),
                direction: SortDirection::Ascending,
            }],
            properties: vec!["dealname".into(), "dealstage".into(), "pipeline".into()],
            limit: SEARCH_PAGE,
            after: None,
            query: None,
        };
        let mut in_window = 0;
        let window_full = loop {
            let page = hubspot.search(ObjectType::Deals, &request).await?;
            in_window += page.results.len();
            let next = page.next_after().map(str::to_string);
            let empty = page.results.is_empty();
            deals.extend(page.results.into_iter().map(|d| WonDeal {
                name: d.property("dealname").unwrap_or_default().to_string(),
                id: d.id,
            }));
            match next {
                Some(_) if in_window >= SEARCH_WINDOW => break true,
                Some(after) if !empty && request.after.as_deref() != Some(after.as_str()) => {
                    request.after = Some(after)
                }
                _ => break false,
            }
        };
        if !window_full {
            break;
        }
        last_id = deals.last().map(|d| d.id.clone());
    }
    deals.sort();
    deals.dedup();
    Ok(deals)
}

/// `(Sales Order, deal, docstatus)` of every order that carries a HubSpot deal ID.
pub async fn sales_orders(
    erpnext: &ErpNextClient,
) -> Result<Vec<(String, String, i64)>, ErpNextError> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let query = ListQuery::new()
            .filter("hubspot_deal_id", "is", Value::from("set"))
            .fields(&["name", "hubspot_deal_id", "docstatus"])
            .order_by("creation asc")
            .limit(ERP_PAGE)
            .start(start);
        let rows = erpnext.list("Sales Order", &query).await?;
        let n = rows.len();
        out.extend(rows.iter().filter_map(|r| {
            let deal = r
                .str("hubspot_deal_id")
                .map(str::trim)
                .filter(|d| !d.is_empty())?;
            Some((r.name().to_string(), deal.to_string(), r.docstatus()))
        }));
        if n < ERP_PAGE as usize {
            return Ok(out);
        }
        start += ERP_PAGE;
    }
}

/// The comparison itself, pure.
pub fn compare(won: &[WonDeal], orders: &[(String, String, i64)]) -> Report {
    let won_ids: BTreeSet<&str> = won.iter().map(|d| d.id.as_str()).collect();
    let mut by_deal: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for (so, deal, docstatus) in orders {
        by_deal
            .entry(deal.as_str())
            .or_default()
            .push((so.as_str(), *docstatus));
    }
    let mut report = Report {
        won_deals: won.len(),
        sales_orders: orders.len(),
        ..Report::default()
    };
    for d in won {
        match by_deal.get(d.id.as_str()) {
            None => report.missing.push(d.clone()),
            Some(list) if list.iter().all(|(_, status)| *status == 2) => {
                let names: Vec<&str> = list.iter().map(|(so, _)| *so).collect();
                report.cancelled.push((d.id.clone(), names.join(", ")));
            }
            Some(_) => {}
        }
    }
    for (so, deal, docstatus) in orders {
        if *docstatus != 2 && !won_ids.contains(deal.as_str()) {
            report.not_won.push((so.clone(), deal.clone()));
        }
    }
    report
}

/// The synthetic event that makes the mapper look at a won deal: a `deal.propertyChange` of
/// `dealstage`, keyed per reconcile run so a later run is not dropped as a duplicate.
pub fn synthetic_event(
    portal: &str,
    deal_id: &str,
    run: &str,
    correlation_id: &str,
) -> Option<Envelope<HubSpotEvent>> {
    let now = Utc::now();
    let event: HubSpotEvent = serde_json::from_value(serde_json::json!({
        "eventId": 0,
        "subscriptionId": 0,
        "portalId": portal.parse::<u64>().ok()?,
        "occurredAt": now.timestamp_millis(),
        "subscriptionType": "deal.propertyChange",
        "attemptNumber": 0,
        "objectId": deal_id.parse::<u64>().ok()?,
        "propertyName": "dealstage",
        "changeSource": "RECONCILE",
    }))
    .ok()?;
    Some(Envelope {
        id: Uuid::now_v7(),
        kind: Kind::HubSpotEvent,
        idempotency_key: format!("reconcile:{run}:{deal_id}"),
        correlation_id: correlation_id.to_string(),
        occurred_at: now,
        received_at: now,
        source: Source::Reconcile,
        payload: event,
    })
}

/// Compare, and with `broker` (= `--fix`) publish one synthetic event per missing deal.
pub async fn reconcile(
    hubspot: &HubSpotClient,
    erpnext: &ErpNextClient,
    trigger: &TriggerConfig,
    portal: &str,
    broker: Option<&Broker>,
) -> Result<Report, ReconcileError> {
    let (won, orders) = tokio::try_join!(
        async {
            won_deals(hubspot, trigger)
                .await
                .map_err(ReconcileError::from)
        },
        async { sales_orders(erpnext).await.map_err(ReconcileError::from) },
    )?;
    let mut report = compare(&won, &orders);
    let Some(broker) = broker else {
        return Ok(report);
    };
    if report.missing.is_empty() {
        return Ok(report);
    }
    let run = Uuid::now_v7().simple().to_string();
    let correlation_id = format!("reconcile-{run}");
    let exchange = broker.names().exchange(Exchange::Events);
    let messages = report
        .missing
        .iter()
        .filter_map(|d| synthetic_event(portal, &d.id, &run, &correlation_id))
        .map(|e| {
            Outgoing::envelope(
                exchange.clone(),
                routing::hubspot_event("deal", "propertyChange"),
                &e,
                0,
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(shared::broker::BrokerError::Encode)?;
    broker.publish_all(&messages).await?;
    report.enqueued = messages.len();
    report.correlation_id = Some(correlation_id);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn won(id: &str) -> WonDeal {
        WonDeal {
            id: id.into(),
            name: format!("Deal {id}"),
        }
    }

    #[test]
    fn compare_finds_missing_stale_and_cancelled() {
        let orders = vec![
            ("SO-1".to_string(), "1".to_string(), 1),
            ("SO-2".to_string(), "2".to_string(), 2),
            ("SO-9".to_string(), "9".to_string(), 0),
            ("SO-8".to_string(), "8".to_string(), 2),
        ];
        let r = compare(&[won("1"), won("2"), won("3")], &orders);
        assert_eq!(r.missing, [won("3")]);
        assert_eq!(r.cancelled, [("2".to_string(), "SO-2".to_string())]);
        assert_eq!(
            r.not_won,
            [("SO-9".to_string(), "9".to_string())],
            "a cancelled order of a lost deal is fine"
        );
        assert_eq!((r.won_deals, r.sales_orders), (3, 4));
        assert!(r.to_string().contains("run with --fix"));
    }

    #[test]
    fn synthetic_events_are_keyed_per_run() {
        let a = synthetic_event("62515", "42", "run1", "c").expect("event");
        let b = synthetic_event("62515", "42", "run2", "c").expect("event");
        assert_ne!(a.idempotency_key, b.idempotency_key);
        assert_eq!(
            a.payload.object_and_event(),
            Some(("deal", "propertyChange"))
        );
        assert_eq!(a.payload.subject_id(), Some(42));
        assert_eq!(a.source, Source::Reconcile);
        assert!(synthetic_event("62515", "not-a-number", "r", "c").is_none());
    }
}
