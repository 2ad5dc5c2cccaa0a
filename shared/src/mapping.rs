//! The declarative mapping from HubSpot records to ERPNext documents (DESIGN §8): which deals
//! trigger a sync, which HubSpot property fills which ERPNext field, SKU → Item, defaults, and the
//! HubSpot property names written back. Read by the mapper; checked by every `config check`.
//!
//! Every default works against the simulators' demo data (company `Acme Test Ltd`, warehouse
//! `Stores - ATL`, price list `Standard Selling`, items `SKU-WIDGET`/`SKU-GADGET`/`SKU-SERVICE`,
//! HubSpot's `default` pipeline and `closedwon` stage), so the demo needs no `[mapping]` at all.
//!
//! Tables (`items.map`, `order.tax_templates`, …) are *merged* with their defaults by the config
//! loader (figment merges dictionaries key by key), so a default entry cannot be removed, only
//! overridden; an empty string value means "no value" (e.g. `"United States" = ""` under
//! `[mapping.order.tax_templates]` means no tax template for US customers).
//!
//! What this module deliberately does not do: apply the mapping (the mapper's `map` module does,
//! as pure functions) or check it against live systems (items existing in ERPNext are verified by
//! the mapper at run time, per deal).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::Problem;

/// `[mapping]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MappingConfig {
    pub trigger: TriggerConfig,
    pub customer: CustomerMapping,
    pub address: AddressMapping,
    pub contact: ContactMapping,
    pub items: ItemMapping,
    pub order: OrderMapping,
    pub writeback: WritebackConfig,
}

/// `[mapping.trigger]`: which deals become Sales Orders. A deal triggers when its `pipeline` is
/// one of `pipelines` (any pipeline when empty) and its `dealstage` one of `stages`. Stage IDs of
/// custom pipelines are numeric strings, unique across pipelines.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerConfig {
    pub pipelines: Vec<String>,
    pub stages: Vec<String>,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            pipelines: vec!["default".into()],
            stages: vec!["closedwon".into()],
        }
    }
}

impl TriggerConfig {
    /// Whether a deal in `pipeline` at `stage` triggers a sync.
    pub fn matches(&self, pipeline: Option<&str>, stage: Option<&str>) -> bool {
        let pipeline_ok = self.pipelines.is_empty()
            || pipeline.is_some_and(|p| self.pipelines.iter().any(|x| x == p));
        pipeline_ok && stage.is_some_and(|s| self.stages.iter().any(|x| x == s))
    }
}

/// `[mapping.customer]`: HubSpot company → ERPNext Customer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CustomerMapping {
    /// Company property holding the Customer name.
    pub name_property: String,
    /// Company property for the Customer's website; the `domain` property is the fallback.
    pub website_property: String,
    /// Company property for the Customer's tax ID; none by default.
    pub tax_id_property: Option<String>,
    /// ERPNext `customer_type`: `Company`, `Individual` or `Partnership`.
    pub customer_type: String,
    pub customer_group: String,
    /// Territory when `territories` has no entry for the customer's country.
    pub territory: String,
    /// ERPNext Country (after `[mapping.address.countries]`) → Territory.
    pub territories: BTreeMap<String, String>,
    /// The Customer's `default_currency`; none by default (ERPNext then uses the company's).
    pub default_currency: Option<String>,
}

impl Default for CustomerMapping {
    fn default() -> Self {
        Self {
            name_property: "name".into(),
            website_property: "website".into(),
            tax_id_property: None,
            customer_type: "Company".into(),
            customer_group: "Commercial".into(),
            territory: "All Territories".into(),
            // ERPNext's setup wizard creates a Territory for the company's country.
            territories: [("United States".to_string(), "United States".to_string())].into(),
            default_currency: None,
        }
    }
}

/// `[mapping.address]`: the company's address → one ERPNext Address linked to the Customer.
/// A company without street or city gets no Address (ERPNext requires both).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AddressMapping {
    /// `false`: never send an Address.
    pub enabled: bool,
    /// ERPNext `address_type` (`Billing`, `Shipping`, `Office`, …).
    pub address_type: String,
    pub line1_property: String,
    pub line2_property: String,
    pub city_property: String,
    pub state_property: String,
    pub pincode_property: String,
    pub country_property: String,
    pub phone_property: String,
    /// Company property for the address e-mail; none by default.
    pub email_property: Option<String>,
    /// ERPNext Country when the company has none.
    pub default_country: String,
    /// HubSpot country value (case-insensitive) → ERPNext Country name. Values not listed pass
    /// through unchanged, so "Germany" needs no entry.
    pub countries: BTreeMap<String, String>,
}

impl Default for AddressMapping {
    fn default() -> Self {
        let countries = [
            ("US", "United States"),
            ("USA", "United States"),
            ("United States of America", "United States"),
            ("UK", "United Kingdom"),
            ("GB", "United Kingdom"),
            ("Great Britain", "United Kingdom"),
            ("DE", "Germany"),
            ("Deutschland", "Germany"),
            ("FR", "France"),
            ("CA", "Canada"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self {
            enabled: true,
            address_type: "Billing".into(),
            line1_property: "address".into(),
            line2_property: "address2".into(),
            city_property: "city".into(),
            state_property: "state".into(),
            pincode_property: "zip".into(),
            country_property: "country".into(),
            phone_property: "phone".into(),
            email_property: None,
            default_country: "United States".into(),
            countries,
        }
    }
}

impl AddressMapping {
    /// The ERPNext Country for a HubSpot country value (or the default when there is none).
    pub fn country(&self, hubspot_value: Option<&str>) -> String {
        let Some(v) = hubspot_value.map(str::trim).filter(|v| !v.is_empty()) else {
            return self.default_country.clone();
        };
        self.countries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(v))
            .map(|(_, erp)| erp.clone())
            .filter(|erp| !erp.is_empty())
            .unwrap_or_else(|| v.to_string())
    }
}

/// `[mapping.contact]`: HubSpot contact → ERPNext Contact. A contact without first name, last
/// name and e-mail is skipped (ERPNext requires a first name; the fallbacks are the last name,
/// then the e-mail address).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContactMapping {
    pub first_name_property: String,
    pub last_name_property: String,
    pub email_property: String,
    pub phone_property: String,
}

impl Default for ContactMapping {
    fn default() -> Self {
        Self {
            first_name_property: "firstname".into(),
            last_name_property: "lastname".into(),
            email_property: "email".into(),
            phone_property: "phone".into(),
        }
    }
}

/// What to do with a line item whose SKU has no ERPNext Item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSkuPolicy {
    /// Dead-letter the deal with a message naming the SKU (the default: never guess on an order).
    #[default]
    Fail,
    /// Order `fallback_item` instead, with the HubSpot SKU and name in the row's description.
    FallbackItem,
}

/// `[mapping.items]`: line item → Sales Order item.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ItemMapping {
    /// Line item property holding the SKU. When a line item has none, the SKU of its product
    /// (same property name on the product) is used: one more HubSpot call, only then.
    pub sku_property: String,
    pub quantity_property: String,
    /// Unit price; when absent, `amount / quantity`.
    pub rate_property: String,
    /// Line item property copied into the row's description.
    pub description_property: String,
    /// HubSpot SKU → ERPNext Item code, for SKUs that differ from the item code. SKUs not listed
    /// are used as the item code.
    pub map: BTreeMap<String, String>,
    pub unknown_sku: UnknownSkuPolicy,
    /// The Item ordered for unknown SKUs under `unknown_sku = "fallback_item"`.
    pub fallback_item: Option<String>,
    /// Check that every item code exists in ERPNext before emitting the command (one ERPNext
    /// call per deal, cached), so an unknown SKU is reported by the mapper with the deal's name
    /// instead of by ERPNext. Needs `[erpnext]` credentials; without them nothing is checked.
    pub verify_in_erpnext: bool,
}

impl Default for ItemMapping {
    fn default() -> Self {
        Self {
            sku_property: "hs_sku".into(),
            quantity_property: "quantity".into(),
            rate_property: "price".into(),
            description_property: "name".into(),
            map: BTreeMap::new(),
            unknown_sku: UnknownSkuPolicy::Fail,
            fallback_item: None,
            verify_in_erpnext: true,
        }
    }
}

impl ItemMapping {
    /// The item code for a SKU: the `map` entry, else the SKU itself.
    pub fn item_code(&self, sku: &str) -> String {
        self.map
            .get(sku)
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| sku.to_string())
    }
}

/// `[mapping.order]`: the Sales Order's header.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrderMapping {
    /// ERPNext Company that sells.
    pub company: String,
    /// Deal property with the ISO currency code.
    pub currency_property: String,
    /// Currency when the deal has none.
    pub default_currency: String,
    /// Deal property whose date (in the ERPNext site's time zone) is the order date; today when
    /// the deal has none.
    pub transaction_date_property: String,
    /// `delivery_date` = order date + this many days.
    pub delivery_days: u32,
    pub price_list: Option<String>,
    /// Source warehouse of every row (`set_warehouse`).
    pub warehouse: Option<String>,
    /// ERPNext Country of the customer's address → Sales Taxes and Charges Template.
    pub tax_templates: BTreeMap<String, String>,
    /// Template for countries not in `tax_templates`; none by default.
    pub default_tax_template: Option<String>,
    /// `true`: submit the Sales Order; `false`: leave it as Draft for review in ERPNext.
    pub submit: bool,
    /// Order currency → ERPNext receivable Account in that currency (Account Type Receivable,
    /// Account Currency the same). ERPNext invoices a customer only through a receivable account
    /// in the document's currency, so a customer created for a deal in one of these currencies
    /// gets that account as its party account for `company`. Currencies not listed use the
    /// company's default receivable account.
    pub receivable_accounts: BTreeMap<String, String>,
}

impl Default for OrderMapping {
    fn default() -> Self {
        Self {
            company: "Acme Test Ltd".into(),
            currency_property: "deal_currency_code".into(),
            default_currency: "USD".into(),
            transaction_date_property: "closedate".into(),
            delivery_days: 14,
            price_list: Some("Standard Selling".into()),
            warehouse: Some("Stores - ATL".into()),
            tax_templates: [(
                "United States".to_string(),
                "US Sales Tax - ATL".to_string(),
            )]
            .into(),
            default_tax_template: None,
            submit: false,
            receivable_accounts: [
                ("EUR".to_string(), "Debtors EUR - ATL".to_string()),
                ("GBP".to_string(), "Debtors GBP - ATL".to_string()),
            ]
            .into(),
        }
    }
}

impl OrderMapping {
    /// The tax template for an ERPNext Country.
    pub fn tax_template(&self, country: &str) -> Option<String> {
        match self.tax_templates.get(country) {
            Some(t) => Some(t.clone()),
            None => self.default_tax_template.clone(),
        }
        .filter(|t| !t.is_empty())
    }

    pub fn price_list(&self) -> Option<String> {
        self.price_list.clone().filter(|s| !s.is_empty())
    }

    pub fn warehouse(&self) -> Option<String> {
        self.warehouse.clone().filter(|s| !s.is_empty())
    }

    /// The receivable account for an order currency, when one is mapped.
    pub fn receivable_account(&self, currency: &str) -> Option<String> {
        self.receivable_accounts
            .get(currency)
            .cloned()
            .filter(|a| !a.is_empty())
    }
}

/// `[mapping.writeback]`: the HubSpot properties lead2ledger writes (created by
/// `crm-writer setup`), and where links point.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WritebackConfig {
    /// Company property: the ERPNext Customer ID.
    pub company_customer_id: String,
    /// Deal property: the Sales Order name.
    pub deal_sales_order: String,
    /// Deal property: link to the Sales Order in the ERPNext UI.
    pub deal_sales_order_url: String,
    /// Deal property: the status of the deal's latest Sales Invoice (see [`INVOICE_STATUSES`]).
    pub deal_invoice_status: String,
    /// Deal property (datetime): when that status became true in ERPNext. Written with the
    /// status; crm-writer never writes a status older than it, whatever Redis remembers.
    pub deal_invoice_status_at: String,
    /// Deal property: `synced` | `needs_review` | `error`.
    pub deal_sync_status: String,
    /// Deal property: the short reason behind `needs_review` or `error`; empty when `synced`.
    pub deal_sync_message: String,
    /// Base URL of the ERPNext UI for links; default: `erpnext.base_url`.
    pub erpnext_app_url: Option<Url>,
}

impl Default for WritebackConfig {
    fn default() -> Self {
        Self {
            company_customer_id: "erpnext_customer_id".into(),
            deal_sales_order: "erpnext_sales_order".into(),
            deal_sales_order_url: "erpnext_sales_order_url".into(),
            deal_invoice_status: "invoice_status".into(),
            deal_invoice_status_at: "erpnext_invoice_status_at".into(),
            deal_sync_status: "erpnext_sync_status".into(),
            deal_sync_message: "erpnext_sync_message".into(),
            erpnext_app_url: None,
        }
    }
}

impl WritebackConfig {
    /// Every property name lead2ledger writes; a webhook about one of them is our own echo.
    pub fn all(&self) -> [&str; 7] {
        [
            &self.company_customer_id,
            &self.deal_sales_order,
            &self.deal_sales_order_url,
            &self.deal_invoice_status,
            &self.deal_invoice_status_at,
            &self.deal_sync_status,
            &self.deal_sync_message,
        ]
    }
}

/// ERPNext Sales Invoice status → the value written to the deal's invoice status property, with
/// its label (the options `crm-writer setup` gives the enumeration). The ERPNext 15 option list.
pub const INVOICE_STATUSES: &[(&str, &str, &str)] = &[
    ("Draft", "draft", "Draft"),
    ("Return", "return", "Return"),
    (
        "Credit Note Issued",
        "credit_note_issued",
        "Credit note issued",
    ),
    ("Submitted", "submitted", "Submitted"),
    ("Paid", "paid", "Paid"),
    ("Partly Paid", "partly_paid", "Partly paid"),
    ("Unpaid", "unpaid", "Unpaid"),
    (
        "Unpaid and Discounted",
        "unpaid_and_discounted",
        "Unpaid and discounted",
    ),
    (
        "Partly Paid and Discounted",
        "partly_paid_and_discounted",
        "Partly paid and discounted",
    ),
    (
        "Overdue and Discounted",
        "overdue_and_discounted",
        "Overdue and discounted",
    ),
    ("Overdue", "overdue", "Overdue"),
    ("Cancelled", "cancelled", "Cancelled"),
    (
        "Internal Transfer",
        "internal_transfer",
        "Internal transfer",
    ),
];

/// The HubSpot value for an ERPNext invoice status: the table's value, else the status in
/// lower snake case (a status a later ERPNext adds still gets a stable value).
pub fn invoice_status_value(erpnext_status: &str) -> String {
    let s = erpnext_status.trim();
    INVOICE_STATUSES
        .iter()
        .find(|(erp, _, _)| erp.eq_ignore_ascii_case(s))
        .map(|(_, v, _)| v.to_string())
        .unwrap_or_else(|| {
            s.to_ascii_lowercase()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join("_")
        })
}

const CUSTOMER_TYPES: &[&str] = &["Company", "Individual", "Partnership"];
const ADDRESS_TYPES: &[&str] = &[
    "Billing",
    "Shipping",
    "Office",
    "Personal",
    "Plant",
    "Postal",
    "Shop",
    "Subsidiary",
    "Warehouse",
    "Current",
    "Permanent",
    "Other",
];

/// HubSpot internal property names: lowercase letter first, then lowercase letters, digits, `_`.
fn is_property_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl MappingConfig {
    /// Every problem, located by its key, with a fix. Checks what can be known offline; whether
    /// items, warehouses or templates exist in ERPNext is checked at run time.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let property = |p: &mut Vec<Problem>, key: &str, value: &str| {
            if !is_property_name(value) {
                p.push(Problem::new(
                    format!("mapping.{key}"),
                    format!("{value:?} is not a HubSpot internal property name"),
                    "use the internal name from HubSpot → Settings → Properties (lowercase letters, digits, '_'), e.g. \"hs_sku\"",
                ));
            }
        };
        let nonempty = |p: &mut Vec<Problem>, key: &str, value: &str, fix: &str| {
            if value.trim().is_empty() {
                p.push(Problem::new(format!("mapping.{key}"), "is empty", fix));
            }
        };

        // trigger
        if self.trigger.stages.is_empty() {
            p.push(Problem::new(
                "mapping.trigger.stages",
                "is empty: no deal would ever be synced",
                "list the won stage IDs, e.g. [\"closedwon\"] (custom pipelines: the numeric stage ID)",
            ));
        }
        for (i, s) in self.trigger.stages.iter().enumerate() {
            nonempty(
                &mut p,
                &format!("trigger.stages[{i}]"),
                s,
                "remove the empty entry",
            );
        }
        for (i, s) in self.trigger.pipelines.iter().enumerate() {
            nonempty(
                &mut p,
                &format!("trigger.pipelines[{i}]"),
                s,
                "remove the empty entry (an empty list means any pipeline)",
            );
        }

        // customer
        let c = &self.customer;
        property(&mut p, "customer.name_property", &c.name_property);
        property(&mut p, "customer.website_property", &c.website_property);
        if let Some(t) = &c.tax_id_property {
            property(&mut p, "customer.tax_id_property", t);
        }
        if !CUSTOMER_TYPES.contains(&c.customer_type.as_str()) {
            p.push(Problem::new(
                "mapping.customer.customer_type",
                format!("{:?} is not an ERPNext customer type", c.customer_type),
                "use \"Company\", \"Individual\" or \"Partnership\"",
            ));
        }
        nonempty(
            &mut p,
            "customer.customer_group",
            &c.customer_group,
            "name an ERPNext Customer Group, e.g. \"Commercial\"",
        );
        nonempty(
            &mut p,
            "customer.territory",
            &c.territory,
            "name an ERPNext Territory, e.g. \"All Territories\"",
        );
        for (country, territory) in &c.territories {
            nonempty(
                &mut p,
                &format!("customer.territories.{country:?}"),
                territory,
                "name an ERPNext Territory or remove the entry",
            );
        }
        if let Some(cur) = &c.default_currency
            && !is_currency(cur)
        {
            p.push(Problem::new(
                "mapping.customer.default_currency",
                format!("{cur:?} is not an ISO 4217 code"),
                "use three capital letters, e.g. \"USD\", or remove the key",
            ));
        }

        // address
        let a = &self.address;
        for (key, value) in [
            ("address.line1_property", &a.line1_property),
            ("address.line2_property", &a.line2_property),
            ("address.city_property", &a.city_property),
            ("address.state_property", &a.state_property),
            ("address.pincode_property", &a.pincode_property),
            ("address.country_property", &a.country_property),
            ("address.phone_property", &a.phone_property),
        ] {
            property(&mut p, key, value);
        }
        if let Some(e) = &a.email_property {
            property(&mut p, "address.email_property", e);
        }
        if !ADDRESS_TYPES.contains(&a.address_type.as_str()) {
            p.push(Problem::new(
                "mapping.address.address_type",
                format!("{:?} is not an ERPNext address type", a.address_type),
                format!("use one of {}", ADDRESS_TYPES.join(", ")),
            ));
        }
        nonempty(
            &mut p,
            "address.default_country",
            &a.default_country,
            "name an ERPNext Country, e.g. \"United States\"",
        );

        // contact
        let ct = &self.contact;
        property(
            &mut p,
            "contact.first_name_property",
            &ct.first_name_property,
        );
        property(&mut p, "contact.last_name_property", &ct.last_name_property);
        property(&mut p, "contact.email_property", &ct.email_property);
        property(&mut p, "contact.phone_property", &ct.phone_property);

        // items
        let it = &self.items;
        property(&mut p, "items.sku_property", &it.sku_property);
        property(&mut p, "items.quantity_property", &it.quantity_property);
        property(&mut p, "items.rate_property", &it.rate_property);
        property(
            &mut p,
            "items.description_property",
            &it.description_property,
        );
        for (sku, item) in &it.map {
            if sku.trim().is_empty() {
                p.push(Problem::new(
                    "mapping.items.map",
                    "has an empty SKU",
                    "remove the entry with the empty key",
                ));
            }
            nonempty(
                &mut p,
                &format!("items.map.{sku:?}"),
                item,
                "name the ERPNext Item code for this SKU or remove the entry",
            );
        }
        match (it.unknown_sku, it.fallback_item.as_deref().map(str::trim)) {
            (UnknownSkuPolicy::FallbackItem, None | Some("")) => p.push(Problem::new(
                "mapping.items.fallback_item",
                "is not set, but unknown_sku = \"fallback_item\" needs it",
                "set fallback_item to an ERPNext Item code (e.g. \"SKU-SERVICE\") or use unknown_sku = \"fail\"",
            )),
            (UnknownSkuPolicy::Fail, Some(_)) => p.push(Problem::new(
                "mapping.items.fallback_item",
                "is set but unused because unknown_sku = \"fail\"",
                "set unknown_sku = \"fallback_item\" to use it, or remove fallback_item",
            )),
            _ => {}
        }

        // order
        let o = &self.order;
        nonempty(
            &mut p,
            "order.company",
            &o.company,
            "name the ERPNext Company that sells, e.g. \"Acme Test Ltd\"",
        );
        property(&mut p, "order.currency_property", &o.currency_property);
        property(
            &mut p,
            "order.transaction_date_property",
            &o.transaction_date_property,
        );
        if !is_currency(&o.default_currency) {
            p.push(Problem::new(
                "mapping.order.default_currency",
                format!("{:?} is not an ISO 4217 code", o.default_currency),
                "use three capital letters, e.g. \"USD\"",
            ));
        }
        if o.delivery_days > 3650 {
            p.push(Problem::new(
                "mapping.order.delivery_days",
                format!("{} days is more than ten years", o.delivery_days),
                "use the usual lead time in days, e.g. 14",
            ));
        }

        // writeback
        let w = &self.writeback;
        for (key, value) in [
            ("writeback.company_customer_id", &w.company_customer_id),
            ("writeback.deal_sales_order", &w.deal_sales_order),
            ("writeback.deal_sales_order_url", &w.deal_sales_order_url),
            ("writeback.deal_invoice_status", &w.deal_invoice_status),
            (
                "writeback.deal_invoice_status_at",
                &w.deal_invoice_status_at,
            ),
            ("writeback.deal_sync_status", &w.deal_sync_status),
            ("writeback.deal_sync_message", &w.deal_sync_message),
        ] {
            property(&mut p, key, value);
        }
        let deal_props = [
            &w.deal_sales_order,
            &w.deal_sales_order_url,
            &w.deal_invoice_status,
            &w.deal_invoice_status_at,
            &w.deal_sync_status,
            &w.deal_sync_message,
        ];
        for (i, a) in deal_props.iter().enumerate() {
            if deal_props[..i].contains(a) {
                p.push(Problem::new(
                    "mapping.writeback",
                    format!("deal property {a:?} is used for two write-backs"),
                    "give each deal write-back its own property",
                ));
            }
        }
        if let Some(u) = &w.erpnext_app_url
            && !matches!(u.scheme(), "http" | "https")
        {
            p.push(Problem::new(
                "mapping.writeback.erpnext_app_url",
                format!("{u} is not an http(s) URL"),
                "use the URL users open ERPNext with, e.g. \"https://erp.example.com\"",
            ));
        }
        p
    }
}

fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.chars().all(|c| c.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_fit_the_demo() {
        let m = MappingConfig::default();
        assert_eq!(m.validate(), vec![]);
        assert!(m.trigger.matches(Some("default"), Some("closedwon")));
        assert!(!m.trigger.matches(Some("default"), Some("closedlost")));
        assert!(!m.trigger.matches(Some("other"), Some("closedwon")));
        assert!(!m.trigger.matches(None, Some("closedwon")));
        assert_eq!(
            m.order.tax_template("United States").as_deref(),
            Some("US Sales Tax - ATL")
        );
        assert_eq!(m.order.tax_template("Germany"), None);
        assert_eq!(m.order.warehouse().as_deref(), Some("Stores - ATL"));
    }

    #[test]
    fn any_pipeline_when_the_list_is_empty() {
        let t = TriggerConfig {
            pipelines: vec![],
            stages: vec!["123".into()],
        };
        assert!(t.matches(Some("whatever"), Some("123")));
        assert!(t.matches(None, Some("123")));
        assert!(!t.matches(Some("whatever"), None));
    }

    #[test]
    fn countries_map_case_insensitively_and_pass_through() {
        let a = AddressMapping::default();
        assert_eq!(a.country(Some("usa")), "United States");
        assert_eq!(a.country(Some("Germany")), "Germany");
        assert_eq!(a.country(Some("  ")), "United States");
        assert_eq!(a.country(None), "United States");
    }

    #[test]
    fn items_map_and_empty_values() {
        let mut i = ItemMapping::default();
        i.map.insert("W-9".into(), "SKU-WIDGET".into());
        assert_eq!(i.item_code("W-9"), "SKU-WIDGET");
        assert_eq!(i.item_code("SKU-GADGET"), "SKU-GADGET");
        let mut o = OrderMapping::default();
        o.tax_templates
            .insert("United States".into(), String::new());
        o.default_tax_template = Some("World".into());
        assert_eq!(
            o.tax_template("United States"),
            None,
            "empty value = no template"
        );
        assert_eq!(o.tax_template("France").as_deref(), Some("World"));
    }

    #[test]
    fn every_problem_is_located_with_a_fix() {
        let mut m = MappingConfig::default();
        m.trigger.stages.clear();
        m.customer.customer_type = "Corp".into();
        m.address.address_type = "Home".into();
        m.items.sku_property = "HS SKU".into();
        m.items.unknown_sku = UnknownSkuPolicy::FallbackItem;
        m.order.default_currency = "usd".into();
        m.order.company = " ".into();
        m.writeback.deal_sync_status = "erpnext_sales_order".into();
        let problems = m.validate();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "mapping.trigger.stages",
            "mapping.customer.customer_type",
            "mapping.address.address_type",
            "mapping.items.sku_property",
            "mapping.items.fallback_item",
            "mapping.order.default_currency",
            "mapping.order.company",
            "mapping.writeback",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
        assert!(problems.iter().all(|p| !p.fix.is_empty()));
    }

    #[test]
    fn invoice_statuses_have_stable_values() {
        assert_eq!(invoice_status_value("Paid"), "paid");
        assert_eq!(invoice_status_value("Partly Paid"), "partly_paid");
        assert_eq!(invoice_status_value("unpaid"), "unpaid");
        assert_eq!(invoice_status_value("Some New Status"), "some_new_status");
        assert!(INVOICE_STATUSES.iter().all(|(_, v, _)| is_property_name(v)));
    }

    #[test]
    fn toml_sections_parse_and_unknown_keys_are_refused() {
        let m: MappingConfig = toml_from(
            r#"
            [trigger]
            pipelines = []
            stages = ["closedwon", "123"]
            [items]
            unknown_sku = "fallback_item"
            fallback_item = "SKU-SERVICE"
            [items.map]
            "W-9" = "SKU-WIDGET"
            [writeback]
            erpnext_app_url = "https://erp.example.com"
            "#,
        );
        assert_eq!(m.items.unknown_sku, UnknownSkuPolicy::FallbackItem);
        assert_eq!(m.items.item_code("W-9"), "SKU-WIDGET");
        assert_eq!(m.validate(), vec![]);
        let err =
            serde_json::from_value::<MappingConfig>(serde_json::json!({"items": {"skus": {}}}));
        assert!(err.is_err());
    }

    fn toml_from(s: &str) -> MappingConfig {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(s))
            .extract()
            .expect("parses")
    }
}
