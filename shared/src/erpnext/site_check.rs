//! The configuration checked against the ERPNext site it names: what `config check` cannot see
//! in the file alone.
//!
//! - **Time zone.** ERPNext stamps documents with a naive `modified` in the site's time zone
//!   (System Settings → Time Zone); erp-writer reads it in `erpnext.time_zone` to compare it
//!   with HubSpot's UTC times. A site in New York left at the default `UTC` shifts every
//!   comparison by hours and fails silently, so `erp-writer setup` refuses a mismatch
//!   ([`time_zone_problem`]) and `config check` reports it.
//! - **Mapping.** `[mapping.order]` names ERPNext records: the company, the receivable account
//!   per currency (Receivable, of that company, in that currency: ERPNext refuses the invoice
//!   otherwise), the tax templates and the selling price list. Each missing or wrong one is a
//!   [`Problem`] with its key, like the offline problems.
//!
//! What is a failure and what is a warning: an answer from ERPNext that shows the configuration
//! is wrong (a mismatch, a missing record, credentials refused with 401) is a problem, and
//! `config check` fails. Not being able to ask is not: an ERPNext that is down or unreachable
//! from where the check runs (a CI job, an init container before the network policy allows it),
//! or an API user without read access to System Settings or Account (only `setup` needs a System
//! Manager; the workers do not), says nothing about the file. Those are warnings, the check
//! still passes, and the offline verdict stands.
//!
//! This module reads only; it never changes the site.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::{ErpNextClient, ErpNextError, ErrorClass};
use crate::config::{EXIT_INVALID_CONFIG, Problem, Settings};

/// Frappe's answer when System Settings has no time zone (`frappe.utils.get_system_timezone`).
pub const FRAPPE_DEFAULT_TIME_ZONE: &str = "Asia/Kolkata";

/// The single doctype (and document) holding the site's time zone.
pub const SYSTEM_SETTINGS: &str = "System Settings";

/// The time zone the site stamps `modified` in: System Settings `time_zone`, or Frappe's own
/// fallback when it is unset.
pub async fn site_time_zone(client: &ErpNextClient) -> Result<String, ErpNextError> {
    let doc = client.get(SYSTEM_SETTINGS, SYSTEM_SETTINGS).await?;
    let zone = doc
        .as_ref()
        .and_then(|d| d.str("time_zone"))
        .map(str::trim)
        .filter(|z| !z.is_empty())
        .unwrap_or(FRAPPE_DEFAULT_TIME_ZONE);
    Ok(zone.to_string())
}

/// Whether two zone names mean the same clock: equal names, or aliases with the same offsets
/// (`US/Eastern` and `America/New_York`, `Etc/UTC` and `UTC`) at every sampled instant.
pub fn same_zone(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (Ok(za), Ok(zb)) = (a.parse::<Tz>(), b.parse::<Tz>()) else {
        return false;
    };
    // Twice a month over 2000–2040 catches every DST rule difference between two zones.
    (2000..=2040).all(|year| {
        (1..=12).all(|month| {
            [1, 15].iter().all(|&day| {
                Utc.with_ymd_and_hms(year, month, day, 12, 0, 0)
                    .single()
                    .is_none_or(|t| offset_of(za, t) == offset_of(zb, t))
            })
        })
    })
}

fn offset_of(zone: Tz, t: chrono::DateTime<Utc>) -> i32 {
    t.with_timezone(&zone).offset().fix().local_minus_utc()
}

/// The problem when `erpnext.time_zone` (`configured`) is not the site's zone (`site`).
pub fn time_zone_problem(configured: &str, site: &str) -> Option<Problem> {
    if same_zone(configured, site) {
        return None;
    }
    let now = Utc::now();
    let hours = match (configured.parse::<Tz>(), site.parse::<Tz>()) {
        (Ok(c), Ok(s)) => match offset_of(s, now) - offset_of(c, now) {
            0 => "; their daylight saving rules differ, so ERPNext times would be read an hour off for part of the year".to_string(),
            diff => format!(
                "; every ERPNext `modified` would be read {:.1} hours off",
                f64::from(diff.abs()) / 3600.0
            ),
        },
        _ => String::new(),
    };
    Some(Problem::new(
        "erpnext.time_zone",
        format!(
            "is {configured:?} but the ERPNext site's time zone (System Settings → Time Zone) is {site:?}{hours}"
        ),
        format!(
            "set erpnext.time_zone = {site:?} (or L2L_ERPNEXT__TIME_ZONE={site}); if the site is the one that is wrong, change System Settings instead"
        ),
    ))
}

/// What the online check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteCheck {
    /// The configuration disagrees with the site: the check fails.
    pub problems: Vec<Problem>,
    /// Something could not be checked: said, but the check passes.
    pub warnings: Vec<String>,
    /// What was confirmed, for the verdict line.
    pub verified: Vec<String>,
}

impl SiteCheck {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How a look-up went, once transport and permission failures are sorted out.
enum Lookup<T> {
    Found(T),
    /// Said in `warnings`; carry on with the other checks.
    Skipped,
    /// ERPNext cannot be asked at all (down, unreachable, credentials refused): stop.
    Stop,
}

/// Classify a failed read of `doctype` made to check `key`.
fn on_error<T>(
    check: &mut SiteCheck,
    client: &ErpNextClient,
    key: &str,
    doctype: &str,
    e: &ErpNextError,
) -> Lookup<T> {
    match (e.class(), e.status()) {
        (ErrorClass::Configuration, Some(401) | None) => {
            check.problems.push(Problem::new(
                "erpnext.api_key / erpnext.api_secret",
                format!("ERPNext refused the credentials: {}", e.server_message()),
                "use the API key and secret of the integration user (User → API Access → Generate Keys)",
            ));
            Lookup::Stop
        }
        (ErrorClass::Configuration, _) => {
            check.warnings.push(format!(
                "{key}: not verified, the API user may not read {doctype} ({})",
                e.server_message()
            ));
            Lookup::Skipped
        }
        (ErrorClass::Transient, _) => {
            check.warnings.push(format!(
                "ERPNext at {} could not be asked ({e}); only the file was checked",
                client.base_url()
            ));
            Lookup::Stop
        }
        _ => {
            check.warnings.push(format!("{key}: not verified ({e})"));
            Lookup::Skipped
        }
    }
}

async fn get_doc(
    client: &ErpNextClient,
    check: &mut SiteCheck,
    key: &str,
    doctype: &str,
    name: &str,
) -> Lookup<Option<super::Doc>> {
    match client.get(doctype, name).await {
        Ok(doc) => Lookup::Found(doc),
        Err(e) => on_error(check, client, key, doctype, &e),
    }
}

/// Check `settings` against the site `client` talks to; see the module doc.
pub async fn check_site(client: &ErpNextClient, settings: &Settings) -> SiteCheck {
    let mut check = SiteCheck::default();
    match site_time_zone(client).await {
        Ok(zone) => match time_zone_problem(&settings.erpnext.time_zone, &zone) {
            Some(p) => check.problems.push(p),
            None => check.verified.push(format!("time zone {zone}")),
        },
        Err(e) => {
            let key = "erpnext.time_zone";
            if let Lookup::Stop = on_error::<()>(&mut check, client, key, SYSTEM_SETTINGS, &e) {
                return check;
            }
        }
    }
    // `None`: ERPNext stopped answering half-way; what was found so far stands.
    let _ = check_mapping(client, settings, &mut check).await;
    check
}

/// `[mapping.order]` against the site; `None` when ERPNext stopped answering.
async fn check_mapping(
    client: &ErpNextClient,
    settings: &Settings,
    check: &mut SiteCheck,
) -> Option<()> {
    let order = &settings.mapping.order;
    let company = order.company.trim();
    match get_doc(client, check, "mapping.order.company", "Company", company).await {
        Lookup::Found(Some(_)) => check.verified.push(format!("company {company}")),
        Lookup::Found(None) => check.problems.push(Problem::new(
            "mapping.order.company",
            format!("ERPNext has no Company {company:?}"),
            "name an existing Company exactly as ERPNext spells it (Accounting → Company)",
        )),
        Lookup::Skipped => {}
        Lookup::Stop => return None,
    }

    let mut accounts = 0;
    for (currency, account) in &order.receivable_accounts {
        let key = format!("mapping.order.receivable_accounts.{currency:?}");
        let account = account.trim();
        if account.is_empty() {
            continue;
        }
        let doc = match get_doc(client, check, &key, "Account", account).await {
            Lookup::Found(doc) => doc,
            Lookup::Skipped => continue,
            Lookup::Stop => return None,
        };
        let Some(doc) = doc else {
            check.problems.push(Problem::new(
                key,
                format!("ERPNext has no Account {account:?}"),
                format!(
                    "create a Receivable account in {currency} for {company} (Chart of Accounts, under Accounts Receivable) or map {currency} to an existing one"
                ),
            ));
            continue;
        };
        let mut wrong = Vec::new();
        let account_type = doc.str("account_type").unwrap_or_default();
        if account_type != "Receivable" {
            wrong.push(format!(
                "its Account Type is {account_type:?}, not \"Receivable\""
            ));
        }
        let of_company = doc.str("company").unwrap_or_default();
        if of_company != company {
            wrong.push(format!(
                "it belongs to company {of_company:?}, not {company:?} (mapping.order.company)"
            ));
        }
        let in_currency = doc.str("account_currency").unwrap_or_default();
        if in_currency != currency {
            wrong.push(format!(
                "its Account Currency is {in_currency:?}, not {currency:?}: ERPNext refuses to invoice a {currency} order through it"
            ));
        }
        if wrong.is_empty() {
            accounts += 1;
        } else {
            check.problems.push(Problem::new(
                key,
                format!("Account {account:?}: {}", wrong.join("; ")),
                format!(
                    "map {currency} to a Receivable account of {company} whose Account Currency is {currency}"
                ),
            ));
        }
    }
    if accounts > 0 {
        check
            .verified
            .push(format!("{accounts} receivable account(s)"));
    }

    let mut templates: Vec<(String, &str)> = order
        .tax_templates
        .iter()
        .map(|(country, t)| {
            (
                format!("mapping.order.tax_templates.{country:?}"),
                t.as_str(),
            )
        })
        .collect();
    if let Some(t) = &order.default_tax_template {
        templates.push(("mapping.order.default_tax_template".into(), t.as_str()));
    }
    let mut found = 0;
    for (key, template) in templates {
        let template = template.trim();
        if template.is_empty() {
            continue;
        }
        let doctype = "Sales Taxes and Charges Template";
        match get_doc(client, check, &key, doctype, template).await {
            Lookup::Found(Some(doc)) => {
                let of_company = doc.str("company").unwrap_or(company);
                if of_company == company {
                    found += 1;
                } else {
                    check.problems.push(Problem::new(
                        key,
                        format!(
                            "Sales Taxes and Charges Template {template:?} belongs to company {of_company:?}, not {company:?}"
                        ),
                        format!("name a template of {company}"),
                    ));
                }
            }
            Lookup::Found(None) => check.problems.push(Problem::new(
                key,
                format!("ERPNext has no Sales Taxes and Charges Template {template:?}"),
                "name an existing template exactly as ERPNext spells it (Selling → Sales Taxes and Charges Template)",
            )),
            Lookup::Skipped => {}
            Lookup::Stop => return None,
        }
    }
    if found > 0 {
        check.verified.push(format!("{found} tax template(s)"));
    }

    if let Some(list) = order
        .price_list
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let key = "mapping.order.price_list";
        match get_doc(client, check, key, "Price List", list).await {
            Lookup::Found(Some(doc)) if doc.i64("selling") == Some(0) => {
                check.problems.push(Problem::new(
                    key,
                    format!("Price List {list:?} is not a selling price list"),
                    "name a Price List with Selling ticked, e.g. \"Standard Selling\"",
                ))
            }
            Lookup::Found(Some(_)) => check.verified.push(format!("price list {list}")),
            Lookup::Found(None) => check.problems.push(Problem::new(
                key,
                format!("ERPNext has no Price List {list:?}"),
                "name an existing selling Price List, e.g. \"Standard Selling\"",
            )),
            Lookup::Skipped => {}
            Lookup::Stop => return None,
        }
    }
    Some(())
}

/// Whether `[erpnext]` has credentials to ask the site with.
pub fn has_credentials(settings: &Settings) -> bool {
    use secrecy::ExposeSecret;
    let key = settings
        .erpnext
        .api_key
        .as_deref()
        .is_some_and(|k| !k.trim().is_empty());
    let secret = settings
        .erpnext
        .api_secret
        .as_ref()
        .is_some_and(|s| !s.expose_secret().trim().is_empty());
    key && secret
}

/// A config check should not hang for the workers' long ERPNext timeout.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// `<binary> config check` for a binary that talks to ERPNext: the offline check, then, when
/// ERPNext credentials are configured, [`check_site`]. Exit 0 when valid (warnings included),
/// 78 (EX_CONFIG) when the file or the site says otherwise.
pub async fn check_command(path: Option<&Path>, binary: &str) -> ExitCode {
    let settings = match crate::config::check_offline(path, binary) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if !has_credentials(&settings) {
        println!(
            "{binary}: ERPNext not checked: erpnext.api_key and erpnext.api_secret are not both set"
        );
        return ExitCode::SUCCESS;
    }
    let mut cfg = settings.erpnext.clone();
    cfg.timeout = cfg.timeout.min(CHECK_TIMEOUT);
    let client = match ErpNextClient::new(&cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{binary}: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let check = check_site(&client, &settings).await;
    print_check(binary, client.base_url().as_str(), &check);
    if check.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID_CONFIG)
    }
}

fn print_check(binary: &str, base: &str, check: &SiteCheck) {
    for w in &check.warnings {
        eprintln!("{binary}: warning: {w}");
    }
    if check.passed() {
        if !check.verified.is_empty() {
            println!(
                "{binary}: ERPNext {base} agrees: {}",
                check.verified.join(", ")
            );
        }
    } else {
        eprintln!("{binary}: ERPNext {base} disagrees with the configuration:");
        for p in &check.problems {
            eprintln!("  - {p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_the_same_zone_and_neighbours_are_not() {
        assert!(same_zone("America/New_York", "America/New_York"));
        assert!(same_zone("US/Eastern", "America/New_York"));
        assert!(same_zone("Etc/UTC", "UTC"));
        assert!(!same_zone("UTC", "America/New_York"));
        // Same offset in winter, different DST rules.
        assert!(!same_zone("Europe/London", "Africa/Abidjan"));
        assert!(!same_zone("Mars/Olympus", "UTC"));
    }

    #[test]
    fn a_mismatch_names_both_zones_and_the_key() {
        let p = time_zone_problem("UTC", "America/New_York").expect("mismatch");
        assert_eq!(p.key, "erpnext.time_zone");
        let text = p.to_string();
        assert!(
            text.contains("\"UTC\"") && text.contains("\"America/New_York\""),
            "{text}"
        );
        assert!(text.contains("hours off"), "{text}");
        assert!(
            text.contains("L2L_ERPNEXT__TIME_ZONE=America/New_York"),
            "{text}"
        );
        assert!(time_zone_problem("America/New_York", "US/Eastern").is_none());
    }
}
