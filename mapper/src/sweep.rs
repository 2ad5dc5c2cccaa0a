//! The sweep: no fact depends on one ERPNext delivery.
//!
//! Frappe gives each webhook three tries within about five seconds and then drops it, so an
//! invoice paid while ingest or the broker is away would never reach HubSpot. The sweep reads
//! what changed in ERPNext since its [watermark](crate::watermark) and corrects the deals whose
//! HubSpot values differ, through the same `crm.update_deal` commands the live path emits, so
//! crm-writer's ordering and batching apply unchanged.
//!
//! 1. **Read ERPNext.** Sales Invoices (submitted or cancelled) and Sales Orders carrying a
//!    `hubspot_deal_id`, with `modified >= watermark - overlap`, oldest first, 500 rows a call,
//!    keyset-paged on (`modified`, `name`) with `or_filters` so a document modified while the
//!    sweep pages moves to the end instead of shifting a page. The invoice list joins its items
//!    for their `sales_order`, so an invoice without its own `hubspot_deal_id` is still resolved
//!    (one more call per 500 such orders; on a site where `erp-writer setup` never added
//!    `Sales Invoice.hubspot_deal_id`, the list is asked again without it and every invoice goes
//!    that way). With that join a bare `modified` in `order_by` is ambiguous (MariaDB 1052,
//!    HTTP 500), so the sort keys are qualified with the table. An invoice whose items alone fill
//!    a page is read whole with one `GET`.
//! 2. **Decide**, with the functions and rules of the live path. Invoices: the status of the
//!    deal's newest invoice by `modified` ([`invoice::status_update`]), as crm-writer's ordering
//!    would keep it. Orders: a changed order may be a cancel or an amendment, so every revision
//!    of the deal's orders is read (one call per 100 deals) and the deal's order is the newest
//!    revision not cancelled (`shared::erpnext::sales_order::pick`) — its name and link — or,
//!    when all are cancelled, the last one as `needs_review`.
//! 3. **Read HubSpot.** The current values of those deals, one batch read per 100 deals. Deals
//!    whose every document the previous sweep already verified (its *edge*) are not read again.
//! 4. **Repair** what differs with the command the live path would have published: for an
//!    invoice only the differing property, stamped with the invoice's `modified`; for an order
//!    the whole update of [`outcomes::crm_update`] (name, link, sync status), stamped with our
//!    clock at the read, like every sync status. The idempotency key derives from
//!    `erpnext:<site>:<doctype>:<name>:<modified>`, the key the document's webhook would have.
//! 5. **Advance** the watermark only after every command is confirmed by the broker: to the
//!    newest `modified` read (ERPNext's own clock, so our clock's skew does not matter), never
//!    past the sweep's own start (an ERPNext clock running ahead only makes the next window
//!    longer). The next sweep starts `reconcile.overlap` before it, for transactions that
//!    committed after a later-stamped one.
//!
//! Not covered: `Overdue` (ERPNext's daily job sets it with a bulk `UPDATE` that changes neither
//! `modified` nor fires a webhook, so neither path sees it); HubSpot values changed by hand
//! without an ERPNext change (the sweep follows ERPNext changes, it does not audit HubSpot).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;
use shared::commands::{SyncStatus, UpdateCrmObject};
use shared::config::ReconcileConfig;
use shared::envelope::{Envelope, Kind, Source};
use shared::erpnext::sales_order::{DealOrder, SALES_ORDER, pick};
use shared::erpnext::{Doc, ErpNextClient, ErpNextError, ListQuery};
use shared::hubspot::HubSpotError;
use shared::mapping::WritebackConfig;
use url::Url;
use uuid::Uuid;

use crate::emit::{Command, Emitter};
use crate::error::MapError;
use crate::map::parse_erpnext_time;
use crate::snapshot::Reader;
use crate::watermark::{Origin, Watermark, WatermarkStore, site_bound};
use crate::{invoice, metrics, outcomes, sales_order};

/// Rows per ERPNext list call.
const PAGE: u32 = 500;
/// Deals per HubSpot batch read (HubSpot's limit).
const HUBSPOT_BATCH: usize = 100;
/// Commands per pipelined publish.
const PUBLISH_CHUNK: usize = 500;
/// Largest edge kept with the watermark; beyond it the next sweep simply reads those deals again.
const EDGE_MAX: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("reading ERPNext: {0}")]
    ErpNext(#[from] ErpNextError),
    #[error("reading HubSpot: {0}")]
    HubSpot(#[from] HubSpotError),
    #[error("publishing the repairs: {0}")]
    Publish(#[source] MapError),
}

/// One ERPNext document the sweep read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub doctype: &'static str,
    pub name: String,
    /// As ERPNext wrote it (naive site time); part of the command's idempotency key.
    pub modified_raw: String,
    pub modified: DateTime<Utc>,
}

impl Changed {
    /// `<doctype>/<name>@<modified>`: this version of the document, as the edge records it.
    pub fn key(&self) -> String {
        format!("{}/{}@{}", self.doctype, self.name, self.modified_raw)
    }

    /// What the document's webhook event would have been keyed by (`ErpNextEvent::idempotency_key`).
    fn event_key(&self, site: &str) -> String {
        format!(
            "erpnext:{site}:{}:{}:{}",
            self.doctype, self.name, self.modified_raw
        )
    }
}

/// How a fact is written when HubSpot shows something else.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteAs {
    /// Only the properties that differ, stamped with the document's `modified` — the live
    /// invoice path's stamp, by which crm-writer keeps `Paid` over a late `Unpaid`.
    Differences,
    /// This whole update, exactly as the live path writes it (a deal's Sales Order: name, link
    /// and sync status, stamped with our clock at the sweep's read, like every sync status).
    Whole(UpdateCrmObject),
}

/// What one document says one deal should show.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub deal: String,
    pub source: Changed,
    /// The values HubSpot must show (compared).
    pub properties: BTreeMap<String, String>,
    pub write: WriteAs,
}

/// A deal property HubSpot shows differently from ERPNext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub deal: String,
    pub property: String,
    /// What HubSpot shows (`None`: empty).
    pub hubspot: Option<String>,
    pub erpnext: String,
    /// The document that says so, e.g. `Sales Invoice ACC-SINV-2026-00001`.
    pub source: String,
}

/// What one sweep read, found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Where the window's start came from (`Lost`: the lookback).
    pub origin: Origin,
    /// The window's start as queried, in ERPNext site time.
    pub from_site: String,
    pub invoices: usize,
    pub sales_orders: usize,
    /// Invoices linked to no deal (not from HubSpot; nothing to do).
    pub invoices_without_deal: usize,
    /// Deals whose HubSpot values were read.
    pub deals_checked: usize,
    /// Deals HubSpot does not know (deleted, merged away).
    pub unknown_deals: Vec<String>,
    pub repairs: Vec<Repair>,
    /// Commands published and confirmed (0 without `--fix`).
    pub commands: usize,
    pub correlation_id: Option<String>,
    /// The watermark saved after the commands were confirmed (`None` without `--fix`).
    pub watermark: Option<DateTime<Utc>>,
    pub erpnext_calls: u32,
    pub hubspot_calls: u32,
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match self.origin {
            Origin::Lost => " (no watermark: the lookback window)",
            _ => "",
        };
        writeln!(
            f,
            "ERPNext changes since {}{from}: {} Sales Invoice(s), {} Sales Order(s); {} deal(s) checked in HubSpot",
            self.from_site, self.invoices, self.sales_orders, self.deals_checked
        )?;
        writeln!(
            f,
            "deal properties that differ from ERPNext: {}",
            self.repairs.len()
        )?;
        for r in &self.repairs {
            writeln!(
                f,
                "  deal {} {}: HubSpot {:?}, ERPNext {:?} ({})",
                r.deal,
                r.property,
                r.hubspot.as_deref().unwrap_or(""),
                r.erpnext,
                r.source
            )?;
        }
        for deal in &self.unknown_deals {
            writeln!(f, "  deal {deal} is not in HubSpot (deleted or merged)")?;
        }
        writeln!(
            f,
            "calls: {} ERPNext, {} HubSpot",
            self.erpnext_calls, self.hubspot_calls
        )?;
        match (&self.correlation_id, self.watermark) {
            (Some(c), Some(w)) => writeln!(
                f,
                "published {} update(s) (correlation_id {c}); watermark now {w}",
                self.commands
            ),
            (None, Some(w)) => writeln!(f, "nothing to publish; watermark now {w}"),
            _ if !self.repairs.is_empty() => writeln!(f, "run with --fix to publish the updates"),
            _ => Ok(()),
        }
    }
}

/// Everything a sweep needs.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub erpnext: ErpNextClient,
    pub reader: Reader,
    pub writeback: WritebackConfig,
    /// Base of the Sales Order links.
    pub app_url: Url,
    /// ERPNext's time zone (naive `modified`).
    pub tz: Tz,
    /// ERPNext site name, as in the webhook events' idempotency keys.
    pub site: String,
    pub cfg: ReconcileConfig,
    pub watermark: WatermarkStore,
}

/// A document's list rows (several when the query joins a child table); `cut` when the rows
/// filled a whole page, so more may exist.
struct Rows {
    rows: Vec<Doc>,
    cut: bool,
}

struct Invoice {
    doc: Changed,
    status: String,
    own_deal: Option<String>,
    orders: BTreeSet<String>,
}

struct Order {
    doc: Changed,
    deal: String,
}

impl Sweep {
    /// One sweep. With `emitter` (`--fix`, or the periodic sweep) the repairs are published and
    /// the watermark advanced after their confirms; without, nothing is published or stored.
    pub async fn run(&self, emitter: Option<&Emitter>) -> Result<SweepReport, SweepError> {
        let started = Utc::now();
        let (mark, origin) = self.watermark.load().await;
        let from = match &mark {
            Some(w) => w.modified - self.cfg.overlap,
            None => started - self.cfg.lookback,
        };
        let from_site = site_bound(from, started, self.tz);
        let ((invoices, invoice_calls), (orders, order_calls)) =
            tokio::try_join!(self.invoices(&from_site), self.orders(&from_site))?;
        let mut erpnext_calls = invoice_calls + order_calls;

        // Invoices that do not name their deal: through their Sales Orders, in one go.
        let unresolved: BTreeSet<String> = invoices
            .iter()
            .filter(|i| i.own_deal.is_none())
            .flat_map(|i| i.orders.iter().cloned())
            .collect();
        let order_deals = if unresolved.is_empty() {
            BTreeMap::new()
        } else {
            erpnext_calls += u32::try_from(unresolved.len().div_ceil(invoice::ORDERS_PER_CALL))
                .unwrap_or(u32::MAX);
            invoice::deals_of_orders(&self.erpnext, &unresolved).await?
        };

        // The deals with a document the last sweep did not verify (its edge).
        let edge = mark.as_ref().map(|w| &w.edge);
        let fresh = |d: &Changed| edge.is_none_or(|e| !e.contains(&d.key()));
        let mut check: BTreeSet<String> = BTreeSet::new();
        let mut facts = Vec::new();
        let mut invoices_without_deal = 0;
        for i in &invoices {
            let deals: BTreeSet<&str> = match &i.own_deal {
                Some(d) => BTreeSet::from([d.as_str()]),
                None => i
                    .orders
                    .iter()
                    .filter_map(|o| order_deals.get(o).map(String::as_str))
                    .collect(),
            };
            if deals.is_empty() {
                invoices_without_deal += 1;
            }
            for deal in deals {
                if fresh(&i.doc) {
                    check.insert(deal.to_string());
                }
                let update =
                    invoice::status_update(&self.writeback, deal, &i.status, i.doc.modified);
                facts.push(Fact {
                    deal: deal.to_string(),
                    source: i.doc.clone(),
                    properties: update.properties,
                    write: WriteAs::Differences,
                });
            }
        }
        // A changed order may be a cancel or an amendment: the deal's order is its live
        // revision, by the live path's rule (`shared::erpnext::sales_order::pick`).
        let so_deals: BTreeSet<String> = orders
            .iter()
            .filter(|o| fresh(&o.doc))
            .map(|o| o.deal.clone())
            .collect();
        check.extend(so_deals.iter().cloned());
        let (live, calls) = self.deal_orders(&so_deals).await?;
        erpnext_calls += calls;
        for (deal, order) in live {
            if let Some(f) = self.order_fact(&deal, &order, started) {
                facts.push(f);
            }
        }

        let check: Vec<String> = check.into_iter().collect();
        let properties = [
            self.writeback.deal_invoice_status.clone(),
            self.writeback.deal_sales_order.clone(),
            self.writeback.deal_sales_order_url.clone(),
            self.writeback.deal_sync_status.clone(),
        ];
        let shown: BTreeMap<String, BTreeMap<String, String>> = self
            .reader
            .deals(&check, &properties)
            .await?
            .into_iter()
            .filter(|d| !d.archived)
            .map(|d| {
                let props = properties
                    .iter()
                    .filter_map(|p| d.property(p).map(|v| (p.clone(), v.to_string())))
                    .collect();
                (d.id, props)
            })
            .collect();
        let hubspot_calls = u32::try_from(check.len().div_ceil(HUBSPOT_BATCH)).unwrap_or(u32::MAX);
        let unknown_deals: Vec<String> = check
            .iter()
            .filter(|d| !shown.contains_key(*d))
            .cloned()
            .collect();

        let (writes, repairs) = plan(&facts, &shown);
        let mut report = SweepReport {
            origin,
            from_site,
            invoices: invoices.len(),
            sales_orders: orders.len(),
            invoices_without_deal,
            deals_checked: check.len(),
            unknown_deals,
            repairs,
            commands: 0,
            correlation_id: None,
            watermark: None,
            erpnext_calls,
            hubspot_calls,
        };
        let Some(emitter) = emitter else {
            return Ok(report);
        };

        if !writes.is_empty() {
            let correlation_id = format!("sweep-{}", Uuid::now_v7().simple());
            let mut parents = Vec::with_capacity(writes.len());
            let mut commands = Vec::with_capacity(writes.len());
            for (fact, update) in &writes {
                let source = &facts[*fact].source;
                parents.push(Envelope {
                    id: Uuid::now_v7(),
                    kind: Kind::ErpNextEvent,
                    idempotency_key: source.event_key(&self.site),
                    correlation_id: correlation_id.clone(),
                    occurred_at: source.modified,
                    received_at: started,
                    source: Source::Reconcile,
                    payload: Value::Null,
                });
                commands.push(
                    Command::new(
                        Kind::CrmUpdateDeal,
                        format!("deal:{}", update.object_id),
                        update,
                    )
                    .map_err(SweepError::Publish)?,
                );
            }
            let pairs: Vec<(&Envelope, &Command)> = parents.iter().zip(commands.iter()).collect();
            for chunk in pairs.chunks(PUBLISH_CHUNK) {
                emitter
                    .publish_derived(chunk)
                    .await
                    .map_err(SweepError::Publish)?;
            }
            report.commands = commands.len();
            report.correlation_id = Some(correlation_id);
            metrics::sweep_repairs(report.repairs.len());
        }

        // Every command is confirmed: move on.
        let docs: Vec<&Changed> = invoices
            .iter()
            .map(|i| &i.doc)
            .chain(orders.iter().map(|o| &o.doc))
            .collect();
        let next = next_watermark(
            mark.as_ref().map(|w| w.modified).unwrap_or(from),
            docs.iter().map(|d| d.modified).max(),
            started,
        );
        let edge: BTreeSet<String> = docs
            .iter()
            .filter(|d| d.modified >= next - self.cfg.overlap)
            .map(|d| d.key())
            .collect();
        let saved = Watermark {
            modified: next,
            edge: if edge.len() > EDGE_MAX {
                BTreeSet::new()
            } else {
                edge
            },
            swept_at: started,
        };
        self.watermark.save(&saved).await;
        report.watermark = Some(next);
        Ok(report)
    }

    async fn invoices(&self, from_site: &str) -> Result<(Vec<Invoice>, u32), SweepError> {
        const FIELDS: &[&str] = &[
            "name",
            "status",
            "docstatus",
            "hubspot_deal_id",
            "modified",
            "`tabSales Invoice Item`.`sales_order`",
        ];
        let base = ListQuery::new().filter("docstatus", "!=", 0);
        let (docs, mut calls) = match changed(
            &self.erpnext,
            "Sales Invoice",
            FIELDS,
            &base,
            from_site,
        )
        .await
        {
            Err(e) if lacks_invoice_deal_field(&e) => {
                // A site where `erp-writer setup` has not added Sales Invoice.hubspot_deal_id:
                // every invoice is resolved through its Sales Orders instead.
                tracing::warn!(
                    "Sales Invoice has no hubspot_deal_id field; run `erp-writer setup` (the sweep resolves invoices through their Sales Orders meanwhile)"
                );
                let (docs, calls) = changed(
                    &self.erpnext,
                    "Sales Invoice",
                    &[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[4], FIELDS[5]],
                    &base,
                    from_site,
                )
                .await?;
                (docs, calls + 1)
            }
            other => other?,
        };
        let mut out = Vec::with_capacity(docs.len());
        for d in docs {
            let Some(first) = d.rows.first() else {
                continue;
            };
            let Some(doc) = changed_doc("Sales Invoice", first, self.tz) else {
                continue;
            };
            let orders: BTreeSet<String> = if d.cut {
                // One invoice filled a page with its items: read it whole.
                calls += 1;
                match self.erpnext.get("Sales Invoice", &doc.name).await? {
                    Some(full) => invoice::sales_orders(&full.into_value()),
                    None => continue,
                }
            } else {
                d.rows
                    .iter()
                    .filter_map(|r| r.str("sales_order").map(str::trim))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            let row = first.clone().into_value();
            out.push(Invoice {
                status: first.str("status").unwrap_or_default().to_string(),
                own_deal: invoice::own_deal(&row).map(str::to_string),
                orders,
                doc,
            });
        }
        Ok((out, calls))
    }

    async fn orders(&self, from_site: &str) -> Result<(Vec<Order>, u32), SweepError> {
        const FIELDS: &[&str] = &["name", "docstatus", "hubspot_deal_id", "modified"];
        let base = ListQuery::new().filter("hubspot_deal_id", "is", "set");
        let (docs, calls) = changed(&self.erpnext, "Sales Order", FIELDS, &base, from_site).await?;
        let out = docs
            .iter()
            .filter_map(|d| {
                let first = d.rows.first()?;
                let deal = first
                    .str("hubspot_deal_id")
                    .map(str::trim)
                    .filter(|s| !s.is_empty())?;
                Some(Order {
                    doc: changed_doc("Sales Order", first, self.tz)?,
                    deal: deal.to_string(),
                })
            })
            .collect();
        Ok((out, calls))
    }
}

/// MariaDB's answer to a field the doctype lacks: 1054 "Unknown column … hubspot_deal_id".
fn lacks_invoice_deal_field(e: &ErpNextError) -> bool {
    let message = e.server_message();
    e.status() == Some(500) && message.contains("1054") && message.contains("hubspot_deal_id")
}

impl Sweep {
    /// Every revision of these deals' orders (one call per 100 deals), and the one that
    /// counts per deal.
    async fn deal_orders(
        &self,
        deals: &BTreeSet<String>,
    ) -> Result<(BTreeMap<String, DealOrder>, u32), ErpNextError> {
        let deals: Vec<&String> = deals.iter().collect();
        let mut revisions: BTreeMap<String, Vec<Doc>> = BTreeMap::new();
        let mut calls = 0;
        for chunk in deals.chunks(HUBSPOT_BATCH) {
            let query = ListQuery::new()
                .filter(
                    "hubspot_deal_id",
                    "in",
                    Value::from(chunk.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
                )
                .fields(&["name", "docstatus", "status", "hubspot_deal_id", "modified"])
                .oldest_first()
                .limit(0);
            let rows = self.erpnext.list(SALES_ORDER, &query).await?;
            calls += 1;
            for row in rows {
                if let Some(deal) = row.str("hubspot_deal_id").map(str::trim) {
                    revisions.entry(deal.to_string()).or_default().push(row);
                }
            }
        }
        Ok((
            revisions
                .into_iter()
                .map(|(deal, revs)| (deal, pick(revs)))
                .collect(),
            calls,
        ))
    }

    /// What the deal of `order` should show, and the command the live Sales Order path
    /// ([`crate::sales_order`]) writes for it: the live revision's name and link as `synced`, or
    /// the last cancelled one as `needs_review`.
    fn order_fact(&self, deal: &str, order: &DealOrder, read_at: DateTime<Utc>) -> Option<Fact> {
        let w = &self.writeback;
        let (doc, properties) = match order {
            DealOrder::Live(doc) => (
                doc,
                outcomes::sales_order_link(w, &self.app_url, doc.name())
                    .into_iter()
                    .collect(),
            ),
            DealOrder::Cancelled(doc) => (
                doc,
                BTreeMap::from([
                    (w.deal_sales_order.clone(), doc.name().to_string()),
                    (
                        w.deal_sync_status.clone(),
                        SyncStatus::NeedsReview.as_str().to_string(),
                    ),
                ]),
            ),
            DealOrder::Absent => return None,
        };
        let outcome = sales_order::outcome(deal, order)?;
        let (_, update) = outcomes::crm_update(w, &self.app_url, &outcome, read_at, read_at)?;
        Some(Fact {
            deal: deal.to_string(),
            source: changed_doc(SALES_ORDER, doc, self.tz)?,
            properties,
            write: WriteAs::Whole(update),
        })
    }
}

fn changed_doc(doctype: &'static str, row: &Doc, tz: Tz) -> Option<Changed> {
    let raw = row.modified()?.trim();
    let Some(modified) = parse_erpnext_time(raw, tz) else {
        tracing::warn!(
            doctype,
            name = row.name(),
            modified = raw,
            "unreadable `modified`; document skipped by the sweep"
        );
        return None;
    };
    Some(Changed {
        doctype,
        name: row.name().to_string(),
        modified_raw: raw.to_string(),
        modified,
    })
}

/// Every `doctype` document with `modified >= from` (site time) that also matches `base`,
/// oldest first, each with its rows. Keyset paging on (`modified`, `name`): a page continues
/// strictly after the last document it completed; when a page is full its last document may be
/// cut short by the join and is read again from the next page, unless it is the only one (its
/// rows alone fill the page), which is then returned marked `cut`. Returns the call count too.
async fn changed(
    client: &ErpNextClient,
    doctype: &str,
    fields: &[&str],
    base: &ListQuery,
    from: &str,
) -> Result<(Vec<Rows>, u32), ErpNextError> {
    let order = format!("`tab{doctype}`.`modified` asc, `tab{doctype}`.`name` asc");
    let mut out: Vec<Rows> = Vec::new();
    let mut calls = 0;
    let mut after: Option<(String, String)> = None;
    loop {
        let mut query = base
            .clone()
            .filter("modified", ">=", from)
            .fields(fields)
            .order_by(&order)
            .limit(PAGE);
        if let Some((modified, name)) = &after {
            query = query
                .filter("modified", ">=", modified.as_str())
                .or_filter("modified", ">", modified.as_str())
                .or_filter("name", ">", name.as_str());
        }
        let rows = client.list(doctype, &query).await?;
        calls += 1;
        let full = rows.len() >= PAGE as usize;
        let mut docs = group(rows);
        if full && docs.len() > 1 {
            docs.pop();
        } else if full && let Some(only) = docs.last_mut() {
            only.cut = true;
        }
        let Some(last) = docs.last().and_then(|d| d.rows.first()) else {
            return Ok((out, calls));
        };
        after = Some((
            last.modified().unwrap_or_default().to_string(),
            last.name().to_string(),
        ));
        out.extend(docs);
        if !full {
            return Ok((out, calls));
        }
    }
}

/// Consecutive rows of one document together.
fn group(rows: Vec<Doc>) -> Vec<Rows> {
    let mut out: Vec<Rows> = Vec::new();
    for row in rows {
        match out.last_mut() {
            Some(last) if last.rows.first().map(Doc::name) == Some(row.name()) => {
                last.rows.push(row)
            }
            _ => out.push(Rows {
                rows: vec![row],
                cut: false,
            }),
        }
    }
    out
}

/// The next watermark: the newest `modified` read, never before the current one and never past
/// the sweep's start; the current one when nothing was read.
pub fn next_watermark(
    current: DateTime<Utc>,
    newest_read: Option<DateTime<Utc>>,
    started: DateTime<Utc>,
) -> DateTime<Utc> {
    match newest_read {
        Some(newest) => current.max(newest.min(started)),
        None => current,
    }
}

/// The update to publish for one fact (an index into the facts).
pub type Write = (usize, UpdateCrmObject);

/// Which properties to write, per fact (index into `facts`), and the repairs they make: for
/// each (deal, property) the newest fact's value (by `modified`, then name), where `shown`
/// (deal → HubSpot's values; deals absent were not checked or are unknown) differs.
pub fn plan(
    facts: &[Fact],
    shown: &BTreeMap<String, BTreeMap<String, String>>,
) -> (Vec<Write>, Vec<Repair>) {
    let mut newest: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, f) in facts.iter().enumerate() {
        for property in f.properties.keys() {
            let slot = newest
                .entry((f.deal.as_str(), property.as_str()))
                .or_insert(i);
            let (a, b) = (&facts[*slot].source, &f.source);
            if (b.modified, &b.name) > (a.modified, &a.name) {
                *slot = i;
            }
        }
    }
    let mut differing: BTreeMap<usize, BTreeMap<String, String>> = BTreeMap::new();
    let mut repairs = Vec::new();
    for ((deal, property), i) in newest {
        let Some(current) = shown.get(deal) else {
            continue;
        };
        let want = &facts[i].properties[property];
        let have = current
            .get(property)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty());
        if have == Some(want.as_str()) {
            continue;
        }
        differing
            .entry(i)
            .or_default()
            .insert(property.to_string(), want.clone());
        repairs.push(Repair {
            deal: deal.to_string(),
            property: property.to_string(),
            hubspot: have.map(str::to_string),
            erpnext: want.clone(),
            source: format!("{} {}", facts[i].source.doctype, facts[i].source.name),
        });
    }
    let writes = differing
        .into_iter()
        .map(|(i, properties)| {
            let f = &facts[i];
            let update = match &f.write {
                WriteAs::Differences => UpdateCrmObject {
                    object_id: f.deal.clone(),
                    properties,
                    source_modified: f.source.modified,
                },
                WriteAs::Whole(update) => update.clone(),
            };
            (i, update)
        })
        .collect();
    (writes, repairs)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn fact(
        deal: &str,
        doctype: &'static str,
        name: &str,
        t: &str,
        props: &[(&str, &str)],
    ) -> Fact {
        Fact {
            deal: deal.into(),
            source: Changed {
                doctype,
                name: name.into(),
                modified_raw: t.into(),
                modified: at(t),
            },
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            write: WriteAs::Differences,
        }
    }

    fn shown(entries: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, BTreeMap<String, String>> {
        entries
            .iter()
            .map(|(d, props)| {
                (
                    d.to_string(),
                    props
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn the_newest_document_decides_and_only_differences_are_written() {
        let facts = [
            fact(
                "1",
                "Sales Invoice",
                "SI-1",
                "2026-11-24T17:00:00Z",
                &[("invoice_status", "unpaid")],
            ),
            fact(
                "1",
                "Sales Invoice",
                "SI-2",
                "2026-11-24T18:00:00Z",
                &[("invoice_status", "paid")],
            ),
            fact(
                "1",
                "Sales Order",
                "SO-1",
                "2026-11-24T16:00:00Z",
                &[("erpnext_sales_order", "SO-1")],
            ),
            fact(
                "2",
                "Sales Invoice",
                "SI-3",
                "2026-11-24T18:00:00Z",
                &[("invoice_status", "paid")],
            ),
            fact(
                "3",
                "Sales Invoice",
                "SI-4",
                "2026-11-24T18:00:00Z",
                &[("invoice_status", "paid")],
            ),
        ];
        let hubspot = shown(&[
            (
                "1",
                &[
                    ("invoice_status", "unpaid"),
                    ("erpnext_sales_order", "SO-1"),
                ],
            ),
            ("2", &[("invoice_status", "paid")]),
            // Deal 3 was not checked (or is not in HubSpot): nothing is written for it.
        ]);
        let (writes, repairs) = plan(&facts, &hubspot);
        assert_eq!(
            writes,
            [(
                1,
                UpdateCrmObject {
                    object_id: "1".into(),
                    properties: BTreeMap::from([(
                        "invoice_status".to_string(),
                        "paid".to_string()
                    )]),
                    source_modified: at("2026-11-24T18:00:00Z"),
                }
            )],
            "the invoice's own time, as the live path stamps it"
        );
        assert_eq!(
            repairs,
            [Repair {
                deal: "1".into(),
                property: "invoice_status".into(),
                hubspot: Some("unpaid".into()),
                erpnext: "paid".into(),
                source: "Sales Invoice SI-2".into(),
            }]
        );
        // An empty HubSpot value differs from any ERPNext one.
        let (writes, repairs) = plan(
            &facts[2..3],
            &shown(&[("1", &[("erpnext_sales_order", " ")])]),
        );
        assert_eq!(writes.len(), 1);
        assert_eq!(repairs[0].hubspot, None);

        // A Sales Order fact writes the live path's whole update when anything differs.
        let whole = UpdateCrmObject {
            object_id: "1".into(),
            properties: BTreeMap::from([
                ("erpnext_sales_order".to_string(), "SO-1-1".to_string()),
                ("erpnext_sync_status".to_string(), "synced".to_string()),
            ]),
            source_modified: at("2026-11-24T19:00:00Z"),
        };
        let mut amended = fact(
            "1",
            "Sales Order",
            "SO-1-1",
            "2026-11-24T18:30:00Z",
            &[("erpnext_sales_order", "SO-1-1")],
        );
        amended.write = WriteAs::Whole(whole.clone());
        let (writes, _) = plan(
            std::slice::from_ref(&amended),
            &shown(&[("1", &[("erpnext_sales_order", "SO-1")])]),
        );
        assert_eq!(writes, [(0, whole)]);
        let (writes, _) = plan(
            &[amended],
            &shown(&[("1", &[("erpnext_sales_order", "SO-1-1")])]),
        );
        assert_eq!(writes, [], "nothing differs: nothing written");
    }

    #[test]
    fn the_watermark_follows_erpnext_but_never_passes_the_sweep() {
        let (cur, start) = (at("2026-11-24T17:00:00Z"), at("2026-11-24T18:00:00Z"));
        assert_eq!(next_watermark(cur, None, start), cur, "nothing read: stay");
        assert_eq!(
            next_watermark(cur, Some(at("2026-11-24T17:30:00Z")), start),
            at("2026-11-24T17:30:00Z")
        );
        assert_eq!(
            next_watermark(cur, Some(at("2026-11-24T19:00:00Z")), start),
            start,
            "an ERPNext clock ahead of ours only lengthens the next window"
        );
        assert_eq!(
            next_watermark(cur, Some(at("2026-11-24T16:00:00Z")), start),
            cur,
            "never backwards"
        );
    }

    #[test]
    fn joined_rows_group_per_document() {
        let row = |name: &str, so: &str| {
            Doc(json!({"name": name, "sales_order": so})
                .as_object()
                .cloned()
                .expect("object"))
        };
        let groups = group(vec![
            row("SI-1", "SO-1"),
            row("SI-1", "SO-2"),
            row("SI-2", "SO-3"),
        ]);
        assert_eq!(
            groups.iter().map(|g| g.rows.len()).collect::<Vec<_>>(),
            [2, 1]
        );
        let c = Changed {
            doctype: "Sales Invoice",
            name: "ACC-SINV-2026-00001".into(),
            modified_raw: "2026-11-24 12:17:41.035485".into(),
            modified: at("2026-11-24T17:17:41.035485Z"),
        };
        assert_eq!(
            c.event_key("erp.localhost"),
            "erpnext:erp.localhost:Sales Invoice:ACC-SINV-2026-00001:2026-11-24 12:17:41.035485",
            "the key the document's webhook event has"
        );
    }
}
