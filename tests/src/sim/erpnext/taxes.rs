//! Sales taxes: when a document gets rows from its Sales Taxes and Charges Template, and how the
//! rows are computed.
//!
//! Over REST, ERPNext does not fill `taxes` from `taxes_and_charges` when a Sales Order or
//! Sales Invoice is inserted (`live-findings/sales_order_create_tax_template_without_rows.json`:
//! grand total = net total): the desk's JavaScript does that, the server only when Accounts
//! Settings `add_taxes_from_taxes_and_charges_template` is on (off by default,
//! `AccountsController.set_taxes_and_charges`). `make_sales_invoice` does apply the template
//! (`SellingController.set_missing_lead_customer_details` outside validation), so an order
//! saved without rows is invoiced for a different total. The rows a template gives are what
//! `erpnext.controllers.accounts_controller.get_taxes_and_charges` returns
//! (`live-findings/taxes_from_template_method.json`).

use serde_json::{Map, Value, json};

use super::controllers::{fl, s};
use super::doctypes::{CHILD_TAIL, HEAD};
use super::errors::FrappeError;
use super::money::round2;
use super::pyjson::{PyValue, float_repr};
use super::state::Site;

const TEMPLATE: &str = "Sales Taxes and Charges Template";
const ROW: &str = "Sales Taxes and Charges";

/// Accounts Settings `add_taxes_from_taxes_and_charges_template`.
pub fn added_on_validate(site: &Site) -> bool {
    site.get("Accounts Settings", "Accounts Settings")
        .is_some_and(|a| fl(a, "add_taxes_from_taxes_and_charges_template") != 0.0)
}

/// `get_taxes_and_charges(master_doctype, master_name)`: the template's rows without the
/// standard and child fields, every field of the row doctype present (`null` when unset).
pub fn template_rows(site: &Site, name: &str) -> Result<Vec<Map<String, Value>>, FrappeError> {
    let template = site
        .get(TEMPLATE, name)
        .ok_or_else(|| FrappeError::not_found(TEMPLATE, name))?;
    let fields = site
        .reg
        .get(ROW)
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    Ok(template
        .get("taxes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|row| {
            fields
                .iter()
                .filter(|f| !HEAD.contains(&f.fieldname.as_str()))
                .filter(|f| !CHILD_TAIL.contains(&f.fieldname.as_str()))
                .map(|f| {
                    let v = row.get(&f.fieldname).cloned().unwrap_or(f.default.clone());
                    (f.fieldname.clone(), v)
                })
                .collect()
        })
        .collect())
}

/// Compute the rows on the items (`calculate_taxes`): each "On Net Total" row is its rate of
/// every item's net amount, "Actual" keeps its amount; `total` runs on. Returns the grand
/// total before rounding.
pub fn compute(
    site: &Site,
    taxes: &mut [Map<String, Value>],
    items: &[Map<String, Value>],
    net_total: f64,
    conversion_rate: f64,
) -> f64 {
    let mut running = net_total;
    for row in taxes.iter_mut() {
        let charge_type = s(row, "charge_type");
        let rate = fl(row, "rate");
        let mut detail: Vec<(String, PyValue)> = Vec::new();
        let amount = if charge_type == "Actual" {
            round2(fl(row, "tax_amount"))
        } else {
            let mut sum = 0.0;
            for item in items {
                let current = rate / 100.0 * fl(item, "net_amount");
                sum += current;
                let key = match s(item, "item_code") {
                    k if k.is_empty() => s(item, "item_name"),
                    k => k,
                };
                let base = current * conversion_rate;
                match detail.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, PyValue::List(v))) => {
                        if let Some(PyValue::Float(prev)) = v.get(1).cloned() {
                            v[1] = PyValue::Float(prev + base);
                        }
                    }
                    _ => detail.push((
                        key,
                        PyValue::List(vec![PyValue::Float(rate), PyValue::Float(base)]),
                    )),
                }
            }
            round2(sum)
        };
        running = round2(running + amount);
        if s(row, "charge_type").is_empty() {
            row.insert("charge_type".into(), json!("On Net Total"));
        }
        if s(row, "cost_center").is_empty() {
            row.insert("cost_center".into(), json!(site.company_name_of("Main")));
        }
        let account_currency = site
            .get("Account", &s(row, "account_head"))
            .map(|a| s(a, "account_currency"))
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| site.config.currency.clone());
        row.insert("account_currency".into(), json!(account_currency));
        for (k, v) in [
            ("tax_amount", amount),
            ("tax_amount_after_discount_amount", amount),
            ("total", running),
        ] {
            row.insert(k.into(), json!(v));
            row.insert(format!("base_{k}"), json!(round2(v * conversion_rate)));
        }
        // `json.dumps(detail, separators=(",", ":"))`.
        let detail = detail
            .iter()
            .map(|(k, v)| {
                let PyValue::List(pair) = v else {
                    return String::new();
                };
                let nums: Vec<String> = pair
                    .iter()
                    .map(|p| match p {
                        PyValue::Float(f) => float_repr(*f),
                        other => other.dumps(),
                    })
                    .collect();
                format!("{}:[{}]", PyValue::Str(k.clone()).dumps(), nums.join(","))
            })
            .collect::<Vec<_>>()
            .join(",");
        row.insert(
            "item_wise_tax_detail".into(),
            json!(format!("{{{detail}}}")),
        );
    }
    running
}

/// `other_charges_calculation`: ERPNext's item-wise tax break-up table
/// (`get_itemised_tax_breakup_html`, template `item_tax_breakup.html`), rendered with the
/// template's whitespace: one row per item code with its taxable amount, one cell per tax with
/// its rate and amount (`live-findings/sales_order_insert_submitted_with_status.json`).
pub fn breakup_html(
    items: &[Map<String, Value>],
    taxes: &[Map<String, Value>],
    currency: &str,
) -> String {
    let tab = |n: usize| "\t".repeat(n);
    let mut out = String::from(
        "<div class=\"tax-break-up\" style=\"overflow-x: auto;\">\n\t<table class=\"table table-bordered table-hover\">\n\t\t<thead>\n\t\t\t<tr>\n",
    );
    let headings: Vec<String> = ["Item".to_string(), "Taxable Amount".to_string()]
        .into_iter()
        .chain(taxes.iter().map(|t| s(t, "description")))
        .collect();
    for (i, h) in headings.iter().enumerate() {
        let class = if i == 0 { "text-left" } else { "text-right" };
        out.push_str(&format!(
            "{}\n{}\n{}<th class=\"{class}\">{h}</th>\n{}\n",
            tab(4),
            tab(5),
            tab(6),
            tab(5)
        ));
    }
    out.push_str(&format!(
        "{}\n{}</tr>\n\t\t</thead>\n\t\t<tbody>\n",
        tab(4),
        tab(3)
    ));
    // Taxable amount per item code, in the order the codes first appear.
    let mut codes: Vec<(String, f64)> = Vec::new();
    for item in items {
        let code = s(item, "item_code");
        match codes.iter_mut().find(|(c, _)| *c == code) {
            Some((_, amount)) => *amount += fl(item, "net_amount"),
            None => codes.push((code, fl(item, "net_amount"))),
        }
    }
    for (code, taxable) in &codes {
        out.push_str(&format!(
            "{}\n{}<tr>\n{}<td>{code}</td>\n{}<td class=\"text-right\">\n{}\n{}{}\n{}\n{}</td>\n",
            tab(3),
            tab(4),
            tab(5),
            tab(5),
            tab(6),
            tab(7),
            money(*taxable, currency),
            tab(6),
            tab(5)
        ));
        for tax in taxes {
            let rate = fl(tax, "rate");
            let amount = if s(tax, "charge_type") == "Actual" {
                0.0
            } else {
                round2(rate / 100.0 * taxable)
            };
            out.push_str(&format!(
                "{}\n{}\n{}\n{}<td class=\"text-right\">\n{}\n{}({}%)\n{}\n{}\n{}{}\n{}\n{}</td>\n{}\n",
                tab(5),
                tab(6),
                tab(6),
                tab(7),
                tab(8),
                tab(9),
                float_repr(rate),
                tab(8),
                tab(8),
                tab(9),
                money(amount, currency),
                tab(8),
                tab(7),
                tab(6)
            ));
        }
        out.push_str(&format!("{}\n{}</tr>\n", tab(5), tab(4)));
    }
    out.push_str(&format!("{}\n\t\t</tbody>\n\t</table>\n</div>", tab(3)));
    out
}

/// `fmt_money` with the currency's symbol: `$ 1,250.00`.
fn money(value: f64, currency: &str) -> String {
    let symbol = match currency {
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        other => other,
    };
    let cents = (value.abs() * 100.0).round() as u64;
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if value < 0.0 { "-" } else { "" };
    format!("{symbol} {sign}{grouped}.{:02}", cents % 100)
}
