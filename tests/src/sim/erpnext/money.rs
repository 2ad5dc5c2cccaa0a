//! How Frappe rounds money: `flt(value, precision)` with the rounding method the setup wizard
//! sets ("Banker's Rounding", `frappe/desk/page/setup_wizard/setup_wizard.py`), and ERPNext's
//! `rounded_total`, which rounds the grand total to the currency's smallest fraction
//! (`round_based_on_smallest_currency_fraction`): cents for USD and EUR, so a total with cents
//! stays as it is, while GBP and other currencies without a fraction in Frappe's
//! `country_info.json` round to whole units.
//!
//! Totals whose status depends on an exact comparison (an invoice is "Partly Paid" only when
//! `0 < outstanding < total`) must be computed the same way on both sides, which is why the
//! simulator rounds only here.

/// Frappe's `_bankers_rounding(num, precision)`: round to `precision` decimals, ties to even
/// (within a float's representation error, as Frappe's epsilon test does).
pub fn flt(value: f64, precision: u32) -> f64 {
    let multiplier = 10f64.powi(precision as i32);
    // `round(num * multiplier, 12)`: Python rounds the exact binary value, as `{:.12}` does.
    let num: f64 = format!("{:.12}", value * multiplier)
        .parse()
        .unwrap_or(value * multiplier);
    if num == 0.0 {
        return 0.0;
    }
    let floor = num.floor();
    let decimal = num - floor;
    let epsilon = 2f64.powf(num.abs().log2() - 52.0);
    let rounded = if (decimal - 0.5).abs() < epsilon {
        if floor % 2.0 == 0.0 {
            floor
        } else {
            floor + 1.0
        }
    } else {
        num.round()
    };
    rounded / multiplier
}

/// Currency amounts: two decimals, Frappe's default currency precision.
pub fn round2(value: f64) -> f64 {
    flt(value, 2)
}

/// `smallest_currency_fraction_value` of the Currency records a new site gets from Frappe's
/// `geo/country_info.json` (the first country using the currency wins; a patch sets USD's).
fn smallest_fraction(currency: &str) -> Option<f64> {
    match currency {
        "USD" | "EUR" => Some(0.01),
        "CHF" => Some(0.05),
        _ => None,
    }
}

/// Frappe's `round_based_on_smallest_currency_fraction(value, currency, precision=2)`.
pub fn rounded_total(value: f64, currency: &str) -> f64 {
    match smallest_fraction(currency) {
        Some(fraction) => {
            // `remainder(value, fraction, 2)`: the remainder in hundredths, as Frappe computes it.
            let remainder = flt(((value * 100.0) % (fraction * 100.0)) / 100.0, 2);
            let value = if remainder > fraction / 2.0 {
                value + fraction - remainder
            } else {
                value - remainder
            };
            flt(value, 2)
        }
        None => flt(flt(value, 0), 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bankers_rounding_and_currency_fractions() {
        assert_eq!(
            flt(2.675, 2),
            2.68,
            "2.675 is 2.67499.. in binary; Frappe's epsilon"
        );
        assert_eq!(flt(0.125, 2), 0.12);
        assert_eq!(flt(0.135, 2), 0.14);
        assert_eq!(flt(42.5, 0), 42.0);
        assert_eq!(flt(43.5, 0), 44.0);
        assert_eq!(flt(23.148148148, 2), 23.15);
        assert_eq!(rounded_total(972.45, "USD"), 972.45);
        assert_eq!(rounded_total(12.34, "EUR"), 12.34);
        assert_eq!(rounded_total(972.45, "GBP"), 972.0);
        assert_eq!(rounded_total(972.5, "GBP"), 972.0);
        assert_eq!(rounded_total(12.33, "CHF"), 12.35);
        assert_eq!(rounded_total(12.32, "CHF"), 12.3);
    }
}
