//! `config check`'s online part against the ERPNext simulator: the site's time zone and the
//! mapping's ERPNext records (receivable accounts, tax templates, price list), each problem with
//! its key; and what it says when ERPNext cannot be asked.

use std::collections::BTreeMap;

use l2l_tests::sim::erpnext::{ErpNextSimConfig, SeedAccount};
use secrecy::{ExposeSecret, SecretString};
use shared::erpnext::ErpNextClient;
use shared::erpnext::site_check::{SiteCheck, check_site};

use crate::common::World;

async fn check(settings: &shared::config::Settings) -> SiteCheck {
    let client = ErpNextClient::new(&settings.erpnext).expect("client");
    check_site(&client, settings).await
}

fn keys(c: &SiteCheck) -> Vec<&str> {
    c.problems.iter().map(|p| p.key.as_str()).collect()
}

fn problem(c: &SiteCheck, key: &str) -> String {
    c.problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem at {key}: {c:#?}"))
        .to_string()
}

#[tokio::test]
async fn the_default_mapping_agrees_with_the_site() {
    let w = World::start().await;
    let c = check(&w.settings()).await;
    assert!(c.passed(), "{c:#?}");
    assert!(c.warnings.is_empty(), "{c:#?}");
    for v in [
        "time zone America/New_York",
        "company Acme Test Ltd",
        "2 receivable account(s)",
        "1 tax template(s)",
        "price list Standard Selling",
    ] {
        assert!(c.verified.iter().any(|x| x == v), "{v} not in {c:#?}");
    }
    w.cleanup().await;
}

#[tokio::test]
async fn each_wrong_record_is_a_problem_at_its_key() {
    let mut sim = ErpNextSimConfig::default();
    // A "receivable" account in the wrong currency for its key.
    sim.accounts.push(SeedAccount {
        account_name: "Debtors CHF".into(),
        account_type: "Receivable".into(),
        root_type: "Asset".into(),
        account_currency: Some("GBP".into()),
    });
    let w = World::with_sim(sim).await;
    let mut s = w.settings();
    s.erpnext.time_zone = "UTC".into();
    let o = &mut s.mapping.order;
    o.receivable_accounts = BTreeMap::from([
        ("EUR".to_string(), "Debtors GBP - ATL".to_string()),
        ("GBP".to_string(), "Debtors GBP - ATL".to_string()),
        ("CHF".to_string(), "Debtors CHF - ATL".to_string()),
        ("JPY".to_string(), "Debtors JPY - ATL".to_string()),
        ("USD".to_string(), "Sales - ATL".to_string()),
    ]);
    o.tax_templates
        .insert("Germany".into(), "DE VAT 19% - ATL".into());
    o.price_list = Some("Standard Buying".into());
    let c = check(&s).await;
    assert!(!c.passed());
    let mut found = keys(&c);
    found.sort();
    assert_eq!(
        found,
        [
            "erpnext.time_zone",
            "mapping.order.price_list",
            "mapping.order.receivable_accounts.\"CHF\"",
            "mapping.order.receivable_accounts.\"EUR\"",
            "mapping.order.receivable_accounts.\"JPY\"",
            "mapping.order.receivable_accounts.\"USD\"",
            "mapping.order.tax_templates.\"Germany\"",
        ],
        "{c:#?}"
    );
    let tz = problem(&c, "erpnext.time_zone");
    assert!(
        tz.contains("\"UTC\"") && tz.contains("\"America/New_York\"") && tz.contains("fix:"),
        "{tz}"
    );
    let eur = problem(&c, "mapping.order.receivable_accounts.\"EUR\"");
    assert!(
        eur.contains("Account Currency is \"GBP\", not \"EUR\""),
        "{eur}"
    );
    let usd = problem(&c, "mapping.order.receivable_accounts.\"USD\"");
    assert!(usd.contains("not \"Receivable\""), "{usd}");
    let jpy = problem(&c, "mapping.order.receivable_accounts.\"JPY\"");
    assert!(jpy.contains("no Account \"Debtors JPY - ATL\""), "{jpy}");
    let de = problem(&c, "mapping.order.tax_templates.\"Germany\"");
    assert!(de.contains("DE VAT 19% - ATL"), "{de}");
    let pl = problem(&c, "mapping.order.price_list");
    assert!(pl.contains("not a selling price list"), "{pl}");

    // Another company: the company itself, and every account that is not its own.
    let mut s = w.settings();
    s.mapping.order.company = "Other Ltd".into();
    let c = check(&s).await;
    assert!(keys(&c).contains(&"mapping.order.company"), "{c:#?}");
    let eur = problem(&c, "mapping.order.receivable_accounts.\"EUR\"");
    assert!(
        eur.contains("belongs to company \"Acme Test Ltd\", not \"Other Ltd\""),
        "{eur}"
    );
    w.cleanup().await;
}

#[tokio::test]
async fn what_cannot_be_asked_is_a_warning_and_refused_credentials_a_problem() {
    let w = World::start().await;
    // No read permission on Account: those keys are not verified, the rest is.
    w.sim.set_denied_doctypes(vec!["Account".into()]);
    let c = check(&w.settings()).await;
    assert!(c.passed(), "{c:#?}");
    assert_eq!(c.warnings.len(), 2, "{c:#?}");
    assert!(
        c.warnings
            .iter()
            .all(|x| x.contains("may not read Account") && x.contains("receivable_accounts")),
        "{c:#?}"
    );
    assert!(c.verified.iter().any(|v| v == "time zone America/New_York"));
    w.sim.set_denied_doctypes(Vec::new());

    // A wrong API secret: the workers would fail too.
    let mut s = w.settings();
    s.erpnext.api_secret = Some(SecretString::from("wrong".to_string()));
    let c = check(&s).await;
    assert_eq!(keys(&c), ["erpnext.api_key / erpnext.api_secret"], "{c:#?}");

    // Nothing listens: a warning, and the check passes on the file alone.
    let mut s = w.settings();
    s.erpnext.base_url = "http://127.0.0.1:9".parse().expect("url");
    let c = check(&s).await;
    assert!(c.passed(), "{c:#?}");
    assert_eq!(c.warnings.len(), 1, "{c:#?}");
    assert!(c.warnings[0].contains("could not be asked"), "{c:#?}");
    w.cleanup().await;
}

/// `erp-writer config check` through the binary: exit 78 with the key on a mismatch, 0 with a
/// warning when ERPNext cannot be asked.
#[tokio::test]
async fn config_check_of_the_binary_asks_the_site() {
    let w = World::start().await;
    let s = w.settings();
    let secret = s
        .erpnext
        .api_secret
        .as_ref()
        .map(|x| x.expose_secret().to_string())
        .unwrap_or_default();
    let run = |base: String, tz: &'static str| {
        let secret = secret.clone();
        let key = s.erpnext.api_key.clone().unwrap_or_default();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_erp-writer"))
                .args(["config", "check"])
                .env_remove("L2L_CONFIG")
                .env("L2L_ERPNEXT__BASE_URL", base)
                .env("L2L_ERPNEXT__API_KEY", key)
                .env("L2L_ERPNEXT__API_SECRET", secret)
                .env("L2L_ERPNEXT__TIME_ZONE", tz)
                .output()
                .await
                .expect("run erp-writer");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let base = w.sim.base_url();
    let (code, out, err) = run(base.clone(), "UTC").await;
    assert_eq!(code, Some(78), "{out}{err}");
    assert!(out.contains("configuration OK"), "the offline part: {out}");
    assert!(
        err.contains("erpnext.time_zone") && err.contains("America/New_York"),
        "{err}"
    );
    let (code, out, err) = run(base, "America/New_York").await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("agrees: time zone America/New_York"), "{out}");
    assert!(!err.contains(&secret), "{err}");
    let (code, out, err) = run("http://127.0.0.1:9".into(), "UTC").await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("warning:") && err.contains("could not be asked"),
        "{err}"
    );
    w.cleanup().await;
}
