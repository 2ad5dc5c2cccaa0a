//! An order or invoice row's price as ERPNext sets it (`get_item_details.get_price_list_rate`,
//! `taxes_and_totals.calculate_item_values`/`calculate_margin`).
//!
//! * `price_list_rate` is fetched only when the row does not have one: the Item Price of the
//!   selling price list, converted into the document currency
//!   (`price * plc_conversion_rate / conversion_rate`: 25 USD is 23.15 EUR at 1.08).
//! * The client's `rate` is kept. Above the price list rate it is booked as a margin
//!   (`margin_type` "Amount"), below it as a discount; `discount_amount` is the unrounded
//!   difference (`-1.8500000000000014` in the EUR capture).
//! * With no Item Price for the item, the setup wizard's Stock Settings
//!   (`auto_insert_price_list_rate_if_missing`) make ERPNext add one at the row's rate when the
//!   price list is in the document's currency, with an alert, and the row keeps
//!   `price_list_rate` 0.

use serde_json::{Map, Value, json};

use super::controllers::{fl, s};
use super::doctypes::str_of;
use super::errors::alert_message;
use super::money::round2;
use super::state::Site;

/// What the document contributes to pricing a row.
#[derive(Debug, Clone)]
pub struct PriceContext {
    pub price_list: String,
    pub price_list_currency: String,
    pub currency: String,
    pub conversion_rate: f64,
    pub plc_conversion_rate: f64,
    pub date: String,
}

/// `get_item_price`: the Item Price for the row's UOM (or none) valid on the date, without a
/// customer or supplier, pending ones of this request included.
fn item_price(site: &Site, code: &str, uom: &str, ctx: &PriceContext) -> Option<f64> {
    let mut prices: Vec<&Map<String, Value>> = site
        .all_with_pending("Item Price")
        .filter(|p| {
            s(p, "item_code") == code
                && s(p, "price_list") == ctx.price_list
                && ["", uom].contains(&s(p, "uom").as_str())
                && s(p, "customer").is_empty()
                && s(p, "supplier").is_empty()
                && str_of(p, "valid_from").unwrap_or_else(|| "2000-01-01".into()) <= ctx.date
                && str_of(p, "valid_upto").unwrap_or_else(|| "2500-12-31".into()) >= ctx.date
        })
        .collect();
    prices.sort_by_key(|p| std::cmp::Reverse(s(p, "valid_from")));
    prices.first().map(|p| fl(p, "price_list_rate"))
}

/// `insert_item_price`: a missing Item Price is added at the row's rate, once per item, price
/// list, currency and stock UOM.
fn insert_item_price(site: &mut Site, row: &Map<String, Value>, ctx: &PriceContext) {
    // Also `frappe.has_permission("Item Price", "write")`.
    let auto = site
        .get("Stock Settings", "Stock Settings")
        .is_some_and(|st| fl(st, "auto_insert_price_list_rate_if_missing") != 0.0)
        && !site
            .config
            .denied_doctypes
            .iter()
            .any(|d| d == "Item Price");
    let rate = fl(row, "rate");
    if !auto || rate == 0.0 || ctx.price_list.is_empty() || ctx.price_list_currency != ctx.currency
    {
        return;
    }
    let (code, stock_uom) = (s(row, "item_code"), s(row, "stock_uom"));
    let exists = site.all_with_pending("Item Price").any(|p| {
        s(p, "item_code") == code
            && s(p, "price_list") == ctx.price_list
            && s(p, "currency") == ctx.currency
            && s(p, "uom") == stock_uom
    });
    if exists {
        return;
    }
    let cf = fl(row, "conversion_factor");
    let price = if cf != 0.0 { rate / cf } else { rate };
    let name = site.hash_name();
    let mut doc = site.blank("Item Price", &name);
    let item = site.get("Item", &code).cloned().unwrap_or_default();
    for (k, v) in [
        ("item_code", json!(code)),
        ("uom", json!(stock_uom)),
        ("item_name", json!(s(&item, "item_name"))),
        ("item_description", json!(s(&item, "description"))),
        ("price_list", json!(ctx.price_list)),
        ("selling", json!(1)),
        ("currency", json!(ctx.currency)),
        ("price_list_rate", json!(price)),
        ("valid_from", json!(site.today())),
    ] {
        doc.insert(k.into(), v);
    }
    site.pending.push(("Item Price".into(), doc));
    site.message_log.push(alert_message(&format!(
        "Item Price added for {code} in Price List {}",
        ctx.price_list
    )));
}

/// Price one row: fetch a missing `price_list_rate`, keep the client's `rate` (or derive it
/// from the price list), and set margin, discount and the company-currency rates.
pub fn price_row(site: &mut Site, row: &mut Map<String, Value>, ctx: &PriceContext) {
    let code = s(row, "item_code");
    let uom = s(row, "uom");
    let listed = item_price(site, &code, &uom, ctx)
        .map(|p| p * ctx.plc_conversion_rate / ctx.conversion_rate);
    if listed.is_none() {
        insert_item_price(site, row, ctx);
    }
    if row.get("price_list_rate").is_none_or(Value::is_null) {
        row.insert("price_list_rate".into(), json!(listed.unwrap_or(0.0)));
    }
    // `round_floats_in(item)`.
    let plr = round2(fl(row, "price_list_rate"));
    row.insert("price_list_rate".into(), json!(plr));
    let discount_pct = fl(row, "discount_percentage");
    if discount_pct == 100.0 {
        row.insert("rate".into(), json!(0.0));
    } else if plr != 0.0 && fl(row, "rate") == 0.0 {
        row.insert(
            "rate".into(),
            json!(round2(plr * (1.0 - discount_pct / 100.0))),
        );
        row.insert(
            "discount_amount".into(),
            json!(plr * (discount_pct / 100.0)),
        );
    }
    let rate = round2(fl(row, "rate"));
    row.insert("rate".into(), json!(rate));
    // `calculate_margin` without pricing rules: a rate above the list price is a margin.
    let mut rate_with_margin = 0.0;
    if plr != 0.0 {
        if rate > plr {
            row.insert("margin_type".into(), json!("Amount"));
            row.insert("margin_rate_or_amount".into(), json!(round2(rate - plr)));
        } else if !s(row, "margin_type").is_empty() && fl(row, "margin_rate_or_amount") != 0.0 {
            let margin = fl(row, "margin_rate_or_amount");
            let value = if s(row, "margin_type") == "Amount" {
                margin
            } else {
                plr * margin / 100.0
            };
            rate_with_margin = plr + value;
        }
    }
    row.insert("rate_with_margin".into(), json!(rate_with_margin));
    row.insert(
        "base_rate_with_margin".into(),
        json!(rate_with_margin * ctx.conversion_rate),
    );
    if rate_with_margin > 0.0 {
        let rate = round2(rate_with_margin * (1.0 - discount_pct / 100.0));
        row.insert("rate".into(), json!(rate));
        row.insert("discount_amount".into(), json!(rate_with_margin - rate));
    } else if plr > 0.0 {
        row.insert("discount_amount".into(), json!(plr - rate));
    }
    for (k, v) in [
        ("base_price_list_rate", plr),
        ("base_rate", fl(row, "rate")),
    ] {
        row.insert(k.into(), json!(round2(v * ctx.conversion_rate)));
    }
}
