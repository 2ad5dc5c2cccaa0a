//! The tax rows of a Sales Order, sent explicitly from its Sales Taxes and Charges Template.
//!
//! Over REST, ERPNext does not fill `taxes` from `taxes_and_charges`: unless Accounts Settings
//! `add_taxes_from_taxes_and_charges_template` is on (off by default), an order of 900 with an
//! 8 % template is saved as 900 with no tax row, while `make_sales_invoice` applies the template
//! and bills 972 (`live-findings/sales_order_create_tax_template_without_rows.json`). So the
//! writer asks ERPNext for the template's rows, the same method the desk calls
//! (`erpnext.controllers.accounts_controller.get_taxes_and_charges`,
//! `live-findings/taxes_from_template_method.json`), and sends them with the order; ERPNext then
//! computes the amounts and totals itself.
//!
//! Templates change rarely and a process serves many orders, so rows are cached per template for
//! [`CACHE_TTL`]: an edited template reaches new orders within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use shared::erpnext::ErpNextClient;

use crate::error::StepError;

/// How long a template's rows are reused before ERPNext is asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(300);

const METHOD: &str = "erpnext.controllers.accounts_controller.get_taxes_and_charges";

/// The fields of a template row that define the tax; ERPNext computes the rest.
const ROW_FIELDS: &[&str] = &[
    "charge_type",
    "row_id",
    "account_head",
    "description",
    "included_in_print_rate",
    "included_in_paid_amount",
    "cost_center",
    "rate",
    "tax_amount",
];

/// One tax as lead2ledger compares it: account, kind, rate.
#[derive(Debug, Clone, PartialEq)]
pub struct TaxKey {
    pub account_head: String,
    pub charge_type: String,
    pub rate: f64,
}

impl TaxKey {
    fn of(row: &Map<String, Value>) -> Self {
        let s = |f: &str| {
            row.get(f)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Self {
            account_head: s("account_head"),
            charge_type: s("charge_type"),
            rate: row.get("rate").and_then(Value::as_f64).unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for TaxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} % ({})",
            self.account_head, self.rate, self.charge_type
        )
    }
}

/// The tax keys of rows (a template's or an order's), in row order.
pub fn keys(rows: &[Map<String, Value>]) -> Vec<TaxKey> {
    rows.iter().map(TaxKey::of).collect()
}

/// Whether two lists of taxes are the same, in order (row order matters: `On Previous Row`
/// charges refer to rows by index).
pub fn same(a: &[TaxKey], b: &[TaxKey]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.account_head == y.account_head
                && x.charge_type == y.charge_type
                && (x.rate - y.rate).abs() < 1e-9
        })
}

/// A template's rows as the method returned them, reduced to the fields that define a tax.
pub type TaxRows = Vec<Map<String, Value>>;

/// Template rows, cached per template name. Cheap to clone; clones share the cache.
#[derive(Debug, Clone, Default)]
pub struct TaxTemplates {
    cache: Arc<Mutex<HashMap<String, (Instant, TaxRows)>>>,
}

impl TaxTemplates {
    /// The rows to send for `template`, as `taxes` child rows.
    pub async fn rows(&self, client: &ErpNextClient, template: &str) -> Result<TaxRows, StepError> {
        if let Some(rows) = self.cached(template) {
            return Ok(rows);
        }
        let what = format!("Sales Taxes and Charges Template {template}");
        let answer = client
            .call(
                METHOD,
                &json!({
                    "master_doctype": "Sales Taxes and Charges Template",
                    "master_name": template,
                }),
            )
            .await
            .map_err(|e| StepError::erp(&what, e))?;
        let rows = parse_rows(&answer).ok_or_else(|| {
            StepError::Invalid(format!(
                "{what}: ERPNext answered {METHOD} with no list of rows"
            ))
        })?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(template.to_string(), (Instant::now(), rows.clone()));
        }
        Ok(rows)
    }

    fn cached(&self, template: &str) -> Option<TaxRows> {
        let cache = self.cache.lock().ok()?;
        let (at, rows) = cache.get(template)?;
        (at.elapsed() < CACHE_TTL).then(|| rows.clone())
    }
}

/// The method's `message`: a list of rows, each reduced to the fields that define the tax.
fn parse_rows(message: &Value) -> Option<TaxRows> {
    let rows = message.as_array()?;
    Some(
        rows.iter()
            .filter_map(Value::as_object)
            .map(|row| {
                ROW_FIELDS
                    .iter()
                    .filter_map(|f| {
                        row.get(*f)
                            .filter(|v| !v.is_null())
                            .map(|v| (f.to_string(), v.clone()))
                    })
                    .collect()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_captured_template_answer_becomes_one_eight_percent_row() {
        let capture =
            shared::contracts::json("erpnext/live-findings/taxes_from_template_method.json");
        let rows = parse_rows(&capture["response"]["body"]["message"]).expect("rows");
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row["charge_type"], "On Net Total");
        assert_eq!(row["account_head"], "Sales Tax - ATL");
        assert_eq!(row["cost_center"], "Main - ATL");
        assert_eq!(row["rate"], 8.0);
        // Computed amounts and nulls are left for ERPNext.
        assert!(
            !row.contains_key("total") && !row.contains_key("row_id"),
            "{row:?}"
        );
        assert_eq!(
            keys(&rows),
            vec![TaxKey {
                account_head: "Sales Tax - ATL".into(),
                charge_type: "On Net Total".into(),
                rate: 8.0
            }]
        );
    }

    #[test]
    fn taxes_compare_by_account_kind_rate_and_order() {
        let k = |a: &str, r: f64| TaxKey {
            account_head: a.into(),
            charge_type: "On Net Total".into(),
            rate: r,
        };
        assert!(same(&[k("A", 8.0)], &[k("A", 8.0)]));
        assert!(!same(&[k("A", 8.0)], &[k("A", 7.0)]));
        assert!(!same(&[k("A", 8.0)], &[]));
        assert!(!same(
            &[k("A", 8.0), k("B", 1.0)],
            &[k("B", 1.0), k("A", 8.0)]
        ));
    }
}
