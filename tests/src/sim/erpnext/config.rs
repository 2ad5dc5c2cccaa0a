//! Configuration of the ERPNext simulator: credentials, the company and its defaults, the master
//! data seeded at start (items, price lists, groups, territories...) and the fault settings.
//!
//! Defaults reproduce the site the contracts were captured on (`contracts/erpnext/README.md`,
//! "Setup data"), except the credentials, which are the demo ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sim::faults::FaultConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErpNextSimConfig {
    /// `Authorization: token <api_key>:<api_secret>`.
    pub api_key: String,
    pub api_secret: String,
    /// The user the API key belongs to (`owner`, `modified_by`).
    pub user: String,
    /// Site name, used in log lines only.
    pub site: String,
    pub company: String,
    /// Company abbreviation: suffix of warehouses, accounts and cost centers (`Stores - ATL`).
    pub company_abbr: String,
    pub currency: String,
    pub country: String,
    /// IANA time zone of the site; every timestamp is a naive string in it.
    pub timezone: String,
    /// Pin the site clock: it starts at this naive site time (`2026-11-24 12:17:30`) and runs on
    /// in real time. Tests replaying captures use it so names and dates match the captures.
    pub clock_start: Option<String>,
    pub items: Vec<SeedItem>,
    pub price_lists: Vec<SeedPriceList>,
    pub customer_groups: Vec<String>,
    pub territories: Vec<String>,
    pub item_groups: Vec<String>,
    pub uoms: Vec<String>,
    pub countries: Vec<String>,
    pub currencies: Vec<String>,
    pub modes_of_payment: Vec<String>,
    pub tax_templates: Vec<SeedTaxTemplate>,
    /// The company's chart of accounts as far as the integration touches it: the receivable
    /// accounts (`Debtors - ATL` in the company currency, one per foreign currency), income,
    /// cost of goods sold, cash and the tax account. Each is named `<account_name> - <abbr>`.
    pub accounts: Vec<SeedAccount>,
    /// Currency Exchange records (`for_selling`) into the company currency: currency → rate,
    /// dated the day the site starts. A transaction in a currency without one is refused, as
    /// on a site that cannot reach an exchange-rate API.
    pub exchange_rates: BTreeMap<String, f64>,
    /// Which custom fields the site starts with (`CustomFields::None` to test the setup command
    /// that creates them).
    pub custom_fields: CustomFields,
    /// DocTypes the API user has no role for: every request on them answers 403.
    pub denied_doctypes: Vec<String>,
    pub faults: FaultConfig,
    /// Pause before the 2nd and 3rd webhook attempt. Frappe sleeps `3 * i + 1` s (1 s, 4 s).
    pub webhook_retry_delays_ms: Vec<u64>,
}

impl Default for ErpNextSimConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Self {
            api_key: "demo-key".into(),
            api_secret: "demo-secret".into(),
            user: "hubspot.integration@acme.test".into(),
            site: "erp.localhost".into(),
            company: "Acme Test Ltd".into(),
            company_abbr: "ATL".into(),
            currency: "USD".into(),
            country: "United States".into(),
            timezone: "America/New_York".into(),
            clock_start: None,
            items: vec![
                SeedItem::stock("SKU-WIDGET", "Widget", 10.0),
                SeedItem::stock("SKU-GADGET", "Gadget", 16.0),
                SeedItem {
                    item_code: "SKU-SERVICE".into(),
                    item_name: "Implementation Service (hour)".into(),
                    item_group: "Services".into(),
                    stock_uom: "Hour".into(),
                    is_stock_item: false,
                    description: None,
                    valuation_rate: 0.0,
                    actual_qty: 0.0,
                },
            ],
            price_lists: ["Standard Selling", "HubSpot USD"]
                .iter()
                .map(|name| SeedPriceList {
                    name: name.to_string(),
                    currency: "USD".into(),
                    prices: [
                        ("SKU-WIDGET", 25.0),
                        ("SKU-GADGET", 40.0),
                        ("SKU-SERVICE", 150.0),
                    ]
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                })
                .collect(),
            customer_groups: strings(&[
                "All Customer Groups",
                "Commercial",
                "Individual",
                "Government",
                "Non Profit",
            ]),
            territories: strings(&["All Territories", "United States", "Rest Of The World"]),
            item_groups: strings(&["All Item Groups", "Products", "Services"]),
            uoms: strings(&["Nos", "Hour", "Unit", "Box", "Kg"]),
            countries: strings(&[
                "United States",
                "Canada",
                "Mexico",
                "Brazil",
                "Argentina",
                "United Kingdom",
                "Ireland",
                "France",
                "Germany",
                "Netherlands",
                "Belgium",
                "Luxembourg",
                "Switzerland",
                "Austria",
                "Italy",
                "Spain",
                "Portugal",
                "Denmark",
                "Sweden",
                "Norway",
                "Finland",
                "Poland",
                "Czech Republic",
                "Greece",
                "Turkey",
                "Israel",
                "United Arab Emirates",
                "Saudi Arabia",
                "South Africa",
                "Nigeria",
                "Kenya",
                "Egypt",
                "India",
                "Pakistan",
                "China",
                "Japan",
                "South Korea",
                "Singapore",
                "Malaysia",
                "Indonesia",
                "Philippines",
                "Vietnam",
                "Thailand",
                "Australia",
                "New Zealand",
            ]),
            currencies: strings(&["USD", "EUR", "GBP", "CAD", "AUD", "INR", "JPY", "CHF"]),
            modes_of_payment: strings(&[
                "Cash",
                "Wire Transfer",
                "Bank Draft",
                "Credit Card",
                "Cheque",
            ]),
            tax_templates: vec![SeedTaxTemplate {
                name: "US Sales Tax - ATL".into(),
                account_head: "Sales Tax - ATL".into(),
                rate: 8.0,
                description: Some("US Sales Tax 8%".into()),
            }],
            accounts: vec![
                SeedAccount::new("Debtors", "Receivable", "Asset", None),
                SeedAccount::new("Debtors EUR", "Receivable", "Asset", Some("EUR")),
                SeedAccount::new("Debtors GBP", "Receivable", "Asset", Some("GBP")),
                SeedAccount::new("Sales", "Income Account", "Income", None),
                SeedAccount::new("Cost of Goods Sold", "Cost of Goods Sold", "Expense", None),
                SeedAccount::new("Cash", "Cash", "Asset", None),
                SeedAccount::new("Sales Tax", "Tax", "Liability", None),
            ],
            // EUR as on the captured site (`conversion_rate` 1.08); GBP chosen.
            exchange_rates: [("EUR".to_string(), 1.08), ("GBP".to_string(), 1.27)]
                .into_iter()
                .collect(),
            custom_fields: CustomFields::AsSetUp,
            denied_doctypes: Vec::new(),
            faults: FaultConfig::default(),
            webhook_retry_delays_ms: vec![1000, 4000],
        }
    }
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parse {path}: {message}")]
    Parse { path: String, message: String },
}

impl ErpNextSimConfig {
    /// Load a TOML or JSON file (by extension); missing keys keep their defaults.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            use figment::providers::{Format, Serialized, Toml};
            figment::Figment::from(Serialized::defaults(Self::default()))
                .merge(Toml::string(&text))
                .extract()
                .map_err(|e| e.to_string())
        };
        parsed.map_err(|message| ConfigFileError::Parse {
            path: shown,
            message,
        })
    }
}

/// An Item with the stock data the Sales Order item rows show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedItem {
    pub item_code: String,
    pub item_name: String,
    pub item_group: String,
    pub stock_uom: String,
    pub is_stock_item: bool,
    /// Defaults to `Sandbox item <item_name>` as on the captured site.
    #[serde(default)]
    pub description: Option<String>,
    /// Cost per unit; `gross_profit` of an order row is `amount - valuation_rate * qty`.
    #[serde(default)]
    pub valuation_rate: f64,
    /// Stock in the default warehouse (`actual_qty`, `projected_qty`).
    #[serde(default)]
    pub actual_qty: f64,
}

impl SeedItem {
    fn stock(code: &str, name: &str, valuation_rate: f64) -> Self {
        Self {
            item_code: code.into(),
            item_name: name.into(),
            item_group: "Products".into(),
            stock_uom: "Nos".into(),
            is_stock_item: true,
            description: None,
            valuation_rate,
            actual_qty: 500.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPriceList {
    pub name: String,
    pub currency: String,
    /// item_code → selling rate.
    pub prices: BTreeMap<String, f64>,
}

/// A Sales Taxes and Charges Template with one "On Net Total" row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedTaxTemplate {
    pub name: String,
    /// An Account of the company; seeded as a Tax account when `accounts` lacks it.
    pub account_head: String,
    pub rate: f64,
    /// The row's description; defaults to the account head.
    #[serde(default)]
    pub description: Option<String>,
}

/// An Account (`<account_name> - <abbr>`), a leaf of the company's chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAccount {
    pub account_name: String,
    /// `Receivable`, `Income Account`, `Cash`, `Tax`...
    pub account_type: String,
    /// `Asset`, `Liability`, `Income`, `Expense`.
    pub root_type: String,
    /// Defaults to the company currency.
    #[serde(default)]
    pub account_currency: Option<String>,
}

impl SeedAccount {
    fn new(name: &str, account_type: &str, root_type: &str, currency: Option<&str>) -> Self {
        Self {
            account_name: name.into(),
            account_type: account_type.into(),
            root_type: root_type.into(),
            account_currency: currency.map(str::to_string),
        }
    }
}

/// The custom fields a simulated site starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomFields {
    /// None: `erp-writer setup` has not run.
    None,
    /// As `erp-writer setup` creates them: `Customer.hubspot_company_id` unique,
    /// `Contact.hubspot_contact_id` unique, `Address.hubspot_address_key` unique,
    /// `Sales Order.hubspot_deal_id` (on every revision), `Sales Order.hubspot_deal_key`
    /// (unique, not copied into amendments) and `Sales Order.hubspot_modified_at` (not copied).
    AsSetUp,
    /// As on the site the contracts were captured from, before amendments were supported:
    /// `Sales Order.hubspot_deal_id` unique, no `hubspot_deal_key` or `hubspot_modified_at`,
    /// `Contact.hubspot_contact_id` not unique, no `Address.hubspot_address_key`.
    Captured,
}
