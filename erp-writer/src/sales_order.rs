//! The Sales Order of a deal: the one document that must never exist twice.
//!
//! Every revision of the order carries the deal's ID in `hubspot_deal_id` (ERPNext copies it into
//! an amendment); the order lead2ledger creates also carries it in the unique, `no_copy`
//! [`DEAL_KEY`], so two writers can never both create one, while a human can still cancel and
//! amend it. The deal's order is the newest revision that is not cancelled:
//!
//! - Absent: create it, already submitted when `order.submit` says so (`docstatus: 1` in the
//!   insert: Frappe validates and submits in one transaction, so no Draft is left between the
//!   two). The look-up is skipped for a Customer the command has just created: no order can be
//!   linked to it yet, and an order of the deal linked to another Customer still holds the
//!   unique key (a cancelled original cannot be deleted while its amendment exists), so the
//!   insert meets it and the step carries on with the look-up.
//! - A Draft: bring its lines, dates, header fields and tax rows in line with the deal, if the
//!   deal's change is newer than the Draft; then submit if asked.
//! - Submitted: never touched. If the deal now differs, the step reports a `SalesOrderConflict`
//!   (reason lists the differences) instead of silently dropping the change.
//! - Every revision cancelled: nothing is created again; the deal is flagged for review until
//!   someone amends the order.
//!
//! Lines are compared by item, quantity and rate, as decimals at ERPNext's precision: a rate at
//! the currency's (2 decimals, ties to even as Frappe's "Banker's Rounding" keeps it: 19.995 is
//! stored as 20.0, `live-findings/sales_order_insert_rates_rounded_to_currency_precision.json`),
//! a quantity at the float precision (3). Descriptions are not compared because ERPNext fills
//! them from the Item.

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Map, Value, json};
use shared::commands::{ErpOutcome, OrderLine, SyncDeal};
use shared::erpnext::sales_order::{DealOrder, deal_order};
use shared::erpnext::{Doc, ErpNextError, ErrorClass};

use crate::diff::put_opt;
use crate::error::StepError;
use crate::metrics;
use crate::site::{ErpSite, Judgement, SOURCE_VERSION, source_version};
use crate::taxes;
use crate::upsert::Found;

pub use shared::erpnext::sales_order::{DEAL_KEY, SALES_ORDER};

const LIST_FIELDS: &[&str] = &["status", "amended_from", "modified"];

/// What ERPNext would set on an order submitted with nothing delivered or billed. Submitting on
/// insert, ERPNext leaves `status` as sent (its `set_status` skips new documents), so a
/// submitted order would stay "Draft" until its first invoice
/// (`live-findings/sales_order_insert_submitted_status_stays_draft.json`); sent with the
/// insert, it is stored as the two-step submit stores it
/// (`sales_order_insert_submitted_with_status.json`).
pub const SUBMITTED_STATUS: &str = "To Deliver and Bill";

/// Documents the Sales Order refers to, found by the earlier steps.
#[derive(Debug, Clone, Default)]
pub struct Parties<'a> {
    pub customer: &'a str,
    pub address: Option<&'a str>,
    pub contact: Option<&'a str>,
    /// The command created the Customer a moment ago: insert without looking up first.
    pub new_customer: bool,
}

/// Find-or-create the Sales Order of `cmd.hubspot_deal_id`; see the module doc.
pub async fn upsert_sales_order(
    site: &ErpSite,
    cmd: &SyncDeal,
    parties: &Parties<'_>,
) -> Result<ErpOutcome, StepError> {
    let deal = &cmd.hubspot_deal_id;
    let what = format!("Sales Order for HubSpot deal {deal}");
    if cmd.order.items.is_empty() {
        // ERPNext answers an empty items list with a 500 TypeError; say what is wrong instead.
        return Err(StepError::Invalid(format!(
            "HubSpot deal {deal} has no line items; a Sales Order needs at least one"
        )));
    }
    let taxes = match &cmd.order.taxes_and_charges {
        Some(template) => Some(site.taxes.rows(&site.client, template).await?),
        None => None,
    };
    let taxes = taxes.as_deref();
    let mut body = header_fields(cmd, parties);
    body.insert("hubspot_deal_id".into(), json!(deal));
    body.insert(DEAL_KEY.into(), json!(deal));
    body.insert(
        SOURCE_VERSION.into(),
        json!(source_version(cmd.deal_modified)),
    );
    body.insert("order_type".into(), json!("Sales"));
    body.insert(
        "transaction_date".into(),
        json!(cmd.order.transaction_date.to_string()),
    );
    body.extend(tables(cmd, taxes));
    if cmd.order.submit {
        body.insert("docstatus".into(), json!(1));
        body.insert("status".into(), json!(SUBMITTED_STATUS));
    }
    let existing = if parties.new_customer {
        DealOrder::Absent
    } else {
        current(site, deal, &what).await?
    };
    let found = match existing {
        DealOrder::Live(doc) => Found {
            doc,
            created: false,
        },
        DealOrder::Cancelled(doc) => return Ok(cancelled(cmd, &doc)),
        DealOrder::Absent => match site.client.insert(SALES_ORDER, &Value::Object(body)).await {
            Ok(doc) => Found { doc, created: true },
            // Another writer (or our own earlier attempt whose answer was lost) created it.
            Err(e) if e.is_duplicate() => match current(site, deal, &what).await? {
                DealOrder::Live(doc) => Found {
                    doc,
                    created: false,
                },
                DealOrder::Cancelled(doc) => return Ok(cancelled(cmd, &doc)),
                DealOrder::Absent => {
                    return Err(StepError::ConflictNotVisible {
                        what,
                        field: DEAL_KEY,
                        value: deal.clone(),
                        message: e.server_message(),
                    });
                }
            },
            Err(e) => return Err(explain_rejection(cmd, what, e)),
        },
    };
    let mut doc = found.doc;
    if found.created {
        metrics::step(SALES_ORDER, "created");
        tracing::info!(
            sales_order = doc.name(),
            hubspot_deal_id = %deal,
            docstatus = doc.docstatus(),
            "Sales Order created"
        );
    } else {
        // The list row lacks the child tables and header fields we compare.
        doc = site
            .client
            .get(SALES_ORDER, doc.name())
            .await
            .map_err(|e| StepError::erp(&what, e))?
            .unwrap_or(doc);
        let differences = differences(&doc, cmd, parties, taxes);
        match doc.docstatus() {
            0 => {
                let judgement = site
                    .judge(&doc, cmd.deal_modified)
                    .await
                    .map_err(|e| StepError::erp(&what, e))?;
                match (judgement, differences.is_empty()) {
                    (Judgement::Stale { stored }, _) => {
                        tracing::info!(
                            sales_order = doc.name(),
                            ?differences,
                            %stored,
                            deal_modified = %cmd.deal_modified,
                            "Draft Sales Order was written from this deal version or a newer one; content left alone"
                        );
                        metrics::step(SALES_ORDER, "stale");
                        // Still submitted below when the mode says so: a writer that inserted a
                        // draft and died before submitting leaves one with the newest content.
                    }
                    (Judgement::EditedInErpNext { by, at }, false) => {
                        let reason = format!(
                            "Draft Sales Order {} was edited in ERPNext by {by} at {at}, after \
                             lead2ledger last wrote it, and the deal has changed since; it is \
                             left as it is. The deal now differs: {}",
                            doc.name(),
                            differences.join("; ")
                        );
                        return Ok(conflict(cmd, &doc, reason));
                    }
                    (Judgement::EditedInErpNext { .. }, true) => {
                        metrics::step(SALES_ORDER, "unchanged");
                    }
                    (Judgement::Apply, differences_empty) => {
                        // Unchanged content still records the newer version, so a change older
                        // than it that arrives later cannot pass as newer.
                        let mut changes = Map::new();
                        if !differences_empty {
                            changes = header_fields(cmd, parties);
                            changes.extend(tables(cmd, taxes));
                        }
                        changes.insert(
                            SOURCE_VERSION.into(),
                            json!(source_version(cmd.deal_modified)),
                        );
                        doc = site
                            .client
                            .update(SALES_ORDER, doc.name(), &Value::Object(changes))
                            .await
                            .map_err(|e| explain_rejection(cmd, what.clone(), e))?;
                        if differences_empty {
                            metrics::step(SALES_ORDER, "unchanged");
                        } else {
                            tracing::info!(
                                sales_order = doc.name(),
                                ?differences,
                                "Draft Sales Order updated from the deal"
                            );
                            metrics::step(SALES_ORDER, "updated");
                        }
                    }
                }
            }
            _ => {
                if differences.is_empty() {
                    metrics::step(SALES_ORDER, "unchanged");
                    return Ok(upserted(cmd, &doc, false));
                }
                let reason = format!(
                    "Sales Order {} is submitted in ERPNext and is not changed by lead2ledger; the deal now differs: {}",
                    doc.name(),
                    differences.join("; ")
                );
                return Ok(conflict(cmd, &doc, reason));
            }
        }
    }
    if cmd.order.submit && doc.docstatus() == 0 {
        doc = site
            .client
            .submit(SALES_ORDER, doc.name())
            .await
            .map_err(|e| explain_rejection(cmd, what.clone(), e))?;
        metrics::step(SALES_ORDER, "submitted");
        tracing::info!(sales_order = doc.name(), "Sales Order submitted");
    }
    Ok(upserted(cmd, &doc, found.created))
}

/// The deal's order across its revisions (see [`shared::erpnext::sales_order`]).
async fn current(site: &ErpSite, deal: &str, what: &str) -> Result<DealOrder, StepError> {
    deal_order(&site.client, deal, LIST_FIELDS)
        .await
        .map_err(|e| StepError::erp(what, e))
}

/// A deal whose every order revision is cancelled: nothing is created again (that would undo
/// someone's decision in ERPNext); the deal is flagged until the order is amended.
fn cancelled(cmd: &SyncDeal, doc: &Doc) -> ErpOutcome {
    metrics::step(SALES_ORDER, "cancelled");
    ErpOutcome::SalesOrderConflict {
        hubspot_deal_id: cmd.hubspot_deal_id.clone(),
        sales_order: doc.name().to_string(),
        reason: format!(
            "Sales Order {} is cancelled in ERPNext and has no amendment; amend it in ERPNext \
             to continue, lead2ledger does not create a new one",
            doc.name()
        ),
    }
}

/// The deal and its order disagree and the order is not lead2ledger's to change (submitted, or
/// edited by a person): reported with `reason`, never silently applied or dropped.
fn conflict(cmd: &SyncDeal, doc: &Doc, reason: String) -> ErpOutcome {
    tracing::warn!(sales_order = doc.name(), hubspot_deal_id = %cmd.hubspot_deal_id, %reason, "the deal differs from an order lead2ledger does not change");
    metrics::step(SALES_ORDER, "conflict");
    metrics::sales_order_conflict();
    ErpOutcome::SalesOrderConflict {
        hubspot_deal_id: cmd.hubspot_deal_id.clone(),
        sales_order: doc.name().to_string(),
        reason,
    }
}

fn upserted(cmd: &SyncDeal, doc: &Doc, created: bool) -> ErpOutcome {
    ErpOutcome::SalesOrderUpserted {
        hubspot_deal_id: cmd.hubspot_deal_id.clone(),
        hubspot_company_id: cmd.customer.hubspot_company_id.clone(),
        sales_order: doc.name().to_string(),
        docstatus: doc.docstatus(),
        status: doc.str("status").unwrap_or_default().to_string(),
        created,
        modified: doc.modified().unwrap_or_default().to_string(),
    }
}

/// The header fields lead2ledger sets (and later compares) on a Sales Order.
fn header_fields(cmd: &SyncDeal, parties: &Parties<'_>) -> Map<String, Value> {
    let o = &cmd.order;
    let mut m = Map::new();
    m.insert("customer".into(), json!(parties.customer));
    m.insert("company".into(), json!(o.company));
    m.insert("currency".into(), json!(o.currency));
    m.insert("delivery_date".into(), json!(o.delivery_date.to_string()));
    put_opt(
        &mut m,
        "selling_price_list",
        o.selling_price_list.as_deref(),
    );
    put_opt(&mut m, "taxes_and_charges", o.taxes_and_charges.as_deref());
    put_opt(&mut m, "set_warehouse", o.set_warehouse.as_deref());
    put_opt(&mut m, "customer_address", parties.address);
    put_opt(&mut m, "contact_person", parties.contact);
    m
}

/// The child tables lead2ledger sets: the lines, and the template's tax rows when the order has
/// a template (ERPNext does not fill them over REST; see [`crate::taxes`]).
fn tables(cmd: &SyncDeal, taxes: Option<&[Map<String, Value>]>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("items".into(), items_json(cmd));
    if let Some(rows) = taxes {
        m.insert("taxes".into(), json!(rows));
    }
    m
}

fn items_json(cmd: &SyncDeal) -> Value {
    let delivery = cmd.order.delivery_date.to_string();
    Value::Array(
        cmd.order
            .items
            .iter()
            .map(|l| {
                let mut row = Map::new();
                row.insert("item_code".into(), json!(l.item_code));
                row.insert("qty".into(), json!(l.qty));
                row.insert("rate".into(), json!(l.rate));
                row.insert("delivery_date".into(), json!(delivery));
                put_opt(&mut row, "description", l.description.as_deref());
                put_opt(&mut row, "warehouse", cmd.order.set_warehouse.as_deref());
                Value::Object(row)
            })
            .collect(),
    )
}

/// Human-readable differences between the Sales Order and what the deal says now (`taxes`: the
/// template's rows, when the order has a template).
pub fn differences(
    doc: &Doc,
    cmd: &SyncDeal,
    parties: &Parties<'_>,
    taxes: Option<&[Map<String, Value>]>,
) -> Vec<String> {
    let o = &cmd.order;
    let mut out = Vec::new();
    let mut check = |field: &str, want: Option<&str>| {
        if let Some(want) = want
            && doc.str(field).unwrap_or_default().trim() != want.trim()
        {
            out.push(format!(
                "{field} {:?} → {want:?}",
                doc.str(field).unwrap_or_default()
            ));
        }
    };
    check("customer", Some(parties.customer));
    check("currency", Some(&o.currency));
    check("delivery_date", Some(&o.delivery_date.to_string()));
    check("selling_price_list", o.selling_price_list.as_deref());
    check("taxes_and_charges", o.taxes_and_charges.as_deref());
    let have = lines_of(doc);
    let want = normalised(
        o.items
            .iter()
            .map(|l| (l.item_code.clone(), l.qty, l.rate))
            .collect(),
    );
    if !same_lines(&have, &want) {
        out.push(format!(
            "items [{}] → [{}]",
            show_lines(&have),
            show_lines(&want)
        ));
    }
    if let Some(rows) = taxes {
        let have = taxes::keys(
            &doc.table("taxes")
                .into_iter()
                .map(|r| r.0)
                .collect::<Vec<_>>(),
        );
        let want = taxes::keys(rows);
        if !taxes::same(&have, &want) {
            let show = |t: &[taxes::TaxKey]| {
                t.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push(format!("taxes [{}] → [{}]", show(&have), show(&want)));
        }
    }
    out
}

/// ERPNext's precisions on a new site (System Settings): currency fields 2 decimals
/// (`currency_precision` unset, `number_format` "#,###.##"), floats 3 (`float_precision`).
const RATE_DP: u32 = 2;
const QTY_DP: u32 = 3;

/// Item code, quantity, rate.
type Line = (String, Decimal, Decimal);

fn lines_of(doc: &Doc) -> Vec<Line> {
    normalised(
        doc.table("items")
            .iter()
            .map(|r| {
                (
                    r.str("item_code").unwrap_or_default().to_string(),
                    decimal(r.get("qty")),
                    decimal(r.get("rate")),
                )
            })
            .collect(),
    )
}

/// A number as ERPNext's JSON gives it (`20.0`), read from its text, not through a float.
fn decimal(value: Option<&Value>) -> Decimal {
    let text = match value {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_string(),
        _ => return Decimal::ZERO,
    };
    Decimal::from_str_exact(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .unwrap_or_default()
        .normalize()
}

fn normalised(mut lines: Vec<Line>) -> Vec<Line> {
    lines.sort();
    lines
}

fn same_lines(have: &[Line], want: &[Line]) -> bool {
    have.len() == want.len()
        && have.iter().zip(want).all(|(h, w)| {
            h.0 == w.0 && h.1.round_dp(QTY_DP) == w.1.round_dp(QTY_DP) && same_rate(h.2, w.2)
        })
}

/// Whether ERPNext's stored `rate` is what it makes of the rate we send: rounded to the
/// currency's precision, ties to even (Frappe's default); a site set to "Commercial Rounding"
/// rounds ties away from zero, so that reading is accepted too.
fn same_rate(stored: Decimal, sent: Decimal) -> bool {
    let stored = stored.round_dp(RATE_DP);
    [
        RoundingStrategy::MidpointNearestEven,
        RoundingStrategy::MidpointAwayFromZero,
    ]
    .into_iter()
    .any(|s| sent.round_dp_with_strategy(RATE_DP, s) == stored)
}

fn show_lines(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|(code, qty, rate)| format!("{code} × {qty} @ {rate}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Turn ERPNext's rejection of an order line into the operator's fix: an unknown `item_code`
/// comes back as 404 `DoesNotExistError` "Item W-9 not found" (or a 417 link error naming it).
fn explain_rejection(cmd: &SyncDeal, what: String, source: ErpNextError) -> StepError {
    if matches!(source.class(), ErrorClass::Permanent) {
        let message = source.server_message();
        let lower = message.to_lowercase();
        if lower.contains("item")
            && let Some(line) = find_line(&cmd.order.items, &message)
        {
            return StepError::UnknownItem {
                item: line.item_code.clone(),
                message,
            };
        }
    }
    StepError::erp(what, source)
}

fn find_line<'a>(lines: &'a [OrderLine], message: &str) -> Option<&'a OrderLine> {
    // The longest code first, so "W-90" is not mistaken for "W-9".
    let mut by_len: Vec<&OrderLine> = lines.iter().collect();
    by_len.sort_by_key(|l| std::cmp::Reverse(l.item_code.len()));
    by_len.into_iter().find(|l| message.contains(&l.item_code))
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, Utc};
    use shared::commands::{CustomerSpec, SalesOrderSpec};

    use super::*;

    fn cmd(items: Vec<OrderLine>) -> SyncDeal {
        SyncDeal {
            hubspot_deal_id: "d1".into(),
            deal_name: "Deal".into(),
            deal_modified: Utc::now(),
            customer: CustomerSpec {
                hubspot_company_id: "c1".into(),
                customer_name: "Globex".into(),
                customer_type: "Company".into(),
                customer_group: "Commercial".into(),
                territory: "United States".into(),
                default_currency: None,
                website: None,
                tax_id: None,
                modified: Utc::now(),
            },
            address: None,
            contacts: vec![],
            order: SalesOrderSpec {
                company: "Acme".into(),
                currency: "USD".into(),
                transaction_date: NaiveDate::from_ymd_opt(2026, 11, 24).expect("date"),
                delivery_date: NaiveDate::from_ymd_opt(2026, 12, 15).expect("date"),
                selling_price_list: None,
                taxes_and_charges: None,
                set_warehouse: None,
                submit: false,
                items,
                receivable_account: None,
            },
        }
    }

    fn line(code: &str, qty: &str, rate: &str) -> OrderLine {
        OrderLine {
            item_code: code.into(),
            qty: qty.parse().expect("qty"),
            rate: rate.parse().expect("rate"),
            hubspot_line_item_id: format!("li-{code}"),
            description: None,
        }
    }

    fn so(items: Value) -> Doc {
        let Value::Object(m) = json!({
            "name": "SAL-ORD-2026-00001", "customer": "Globex", "currency": "USD",
            "delivery_date": "2026-12-15", "docstatus": 1, "items": items
        }) else {
            unreachable!()
        };
        Doc(m)
    }

    #[test]
    fn identical_lines_in_another_order_are_no_difference() {
        let c = cmd(vec![
            line("SKU-WIDGET", "10", "25"),
            line("SKU-SERVICE", "4", "150"),
        ]);
        let doc = so(json!([
            {"item_code": "SKU-SERVICE", "qty": 4.0, "rate": 150.0},
            {"item_code": "SKU-WIDGET", "qty": 10.0, "rate": 25.0}
        ]));
        let parties = Parties {
            customer: "Globex",
            ..Default::default()
        };
        assert!(differences(&doc, &c, &parties, None).is_empty());
        // ERPNext rounds rates to the cent.
        let c = cmd(vec![
            line("SKU-WIDGET", "10", "24.999"),
            line("SKU-SERVICE", "4", "150"),
        ]);
        assert!(differences(&doc, &c, &parties, None).is_empty());
    }

    /// Issue 16: what the real site stores for 19.995, 0.125 and 0.135
    /// (`live-findings/sales_order_insert_rates_rounded_to_currency_precision.json`) is the same
    /// as what was sent, and a quantity of 0.333 is kept at three decimals; a cent or a
    /// thousandth off is a difference. (With floats, 19.995 × 100 rounds to 1999 against the
    /// stored 2000, and a deal that never changed read as changed.)
    #[test]
    fn rates_and_quantities_compare_at_erpnext_precision() {
        let parties = Parties {
            customer: "Globex",
            ..Default::default()
        };
        let stored = so(json!([
            {"item_code": "SKU-GADGET", "qty": 1.0, "rate": 0.12},
            {"item_code": "SKU-GADGET", "qty": 2.0, "rate": 0.14},
            {"item_code": "SKU-SERVICE", "qty": 0.333, "rate": 150.0},
            {"item_code": "SKU-WIDGET", "qty": 3.0, "rate": 20.0}
        ]));
        let sent = |widget_rate: &str, service_qty: &str| {
            cmd(vec![
                line("SKU-WIDGET", "3", widget_rate),
                line("SKU-GADGET", "1", "0.125"),
                line("SKU-GADGET", "2", "0.135"),
                line("SKU-SERVICE", service_qty, "150"),
            ])
        };
        assert_eq!(
            differences(&stored, &sent("19.995", "0.333"), &parties, None),
            Vec::<String>::new()
        );
        assert_eq!(
            differences(&stored, &sent("19.99", "0.333"), &parties, None).len(),
            1
        );
        assert_eq!(
            differences(&stored, &sent("19.995", "0.334"), &parties, None).len(),
            1
        );
    }

    #[test]
    fn changed_lines_and_dates_are_listed() {
        let c = cmd(vec![line("SKU-WIDGET", "12", "25")]);
        let doc = so(json!([{"item_code": "SKU-WIDGET", "qty": 10.0, "rate": 25.0}]));
        let parties = Parties {
            customer: "Globex - 1",
            ..Default::default()
        };
        let d = differences(&doc, &c, &parties, None);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("customer"), "{d:?}");
        assert!(
            d[1].contains("SKU-WIDGET × 10 @ 25") && d[1].contains("SKU-WIDGET × 12 @ 25"),
            "{d:?}"
        );
    }

    #[test]
    fn unknown_item_rejections_name_the_sku() {
        let c = cmd(vec![line("W-9", "1", "1"), line("W-90", "1", "1")]);
        let err = ErpNextError::Api {
            operation: "insert",
            doctype: "Sales Order".into(),
            status: 404,
            exc_type: Some("DoesNotExistError".into()),
            message: "Item W-90 not found".into(),
            retry_after: None,
        };
        match explain_rejection(&c, "SO".into(), err) {
            StepError::UnknownItem { item, message } => {
                assert_eq!(item, "W-90");
                assert_eq!(message, "Item W-90 not found");
            }
            other => panic!("{other:?}"),
        }
        // A customer that does not exist is not an item problem.
        let err = ErpNextError::Api {
            operation: "insert",
            doctype: "Sales Order".into(),
            status: 404,
            exc_type: Some("DoesNotExistError".into()),
            message: "Customer Nope not found".into(),
            retry_after: None,
        };
        assert!(matches!(
            explain_rejection(&c, "SO".into(), err),
            StepError::Erp { .. }
        ));
    }
}
