//! The HubSpot webhook subscriptions a portal needs for lead2ledger, derived from the mapping
//! (the properties it reads), so the README's list and `config check` can never disagree with
//! what the mapper acts on.
//!
//! HubSpot sends nothing it was not asked for, and every property change is its own
//! subscription. A missing one is silent: the won deal or the edited line never arrives. Line
//! items have only HubSpot's generic subscriptions (`object.*` with `objectName: line_item`);
//! a deleted line item is seen through the deal's `amount`, which HubSpot recomputes.

use crate::mapping::MappingConfig;

/// One subscription: its type (`deal.propertyChange`, `object.propertyChange`, …), the object of
/// a generic one, and the property of a property change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub subscription_type: &'static str,
    pub object_name: Option<&'static str>,
    pub property: Option<String>,
}

impl std::fmt::Display for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.subscription_type)?;
        if let Some(o) = self.object_name {
            write!(f, " (objectName {o})")?;
        }
        if let Some(p) = &self.property {
            write!(f, ": {p}")?;
        }
        Ok(())
    }
}

fn event(subscription_type: &'static str) -> Subscription {
    Subscription {
        subscription_type,
        object_name: None,
        property: None,
    }
}

fn changes<'a>(
    subscription_type: &'static str,
    object_name: Option<&'static str>,
    properties: impl IntoIterator<Item = &'a str>,
) -> Vec<Subscription> {
    let mut seen: Vec<String> = Vec::new();
    for p in properties {
        let p = p.trim();
        if !p.is_empty() && !seen.iter().any(|s| s == p) {
            seen.push(p.to_string());
        }
    }
    seen.into_iter()
        .map(|property| Subscription {
            subscription_type,
            object_name,
            property: Some(property),
        })
        .collect()
}

/// Every subscription the mapping needs, in a stable order.
pub fn required(m: &MappingConfig) -> Vec<Subscription> {
    let mut out = Vec::new();
    // Deals: the trigger, what the order is made of, and the record's fate.
    out.extend(changes(
        "deal.propertyChange",
        None,
        [
            "dealstage",
            "pipeline",
            "amount",
            "dealname",
            m.order.currency_property.as_str(),
            m.order.transaction_date_property.as_str(),
        ],
    ));
    out.extend(
        [
            "deal.deletion",
            "deal.merge",
            "deal.restore",
            "deal.associationChange",
        ]
        .map(event),
    );
    // Line items: generic subscriptions only.
    out.extend(changes(
        "object.propertyChange",
        Some("line_item"),
        [
            m.items.sku_property.as_str(),
            m.items.quantity_property.as_str(),
            m.items.rate_property.as_str(),
            m.items.description_property.as_str(),
            "amount",
        ],
    ));
    for t in ["object.creation", "object.associationChange"] {
        out.push(Subscription {
            subscription_type: t,
            object_name: Some("line_item"),
            property: None,
        });
    }
    // Companies: the Customer and its Address.
    let c = &m.customer;
    let a = &m.address;
    let mut company: Vec<&str> = vec![c.name_property.as_str(), c.website_property.as_str()];
    company.extend(c.tax_id_property.as_deref());
    if a.enabled {
        company.extend([
            a.line1_property.as_str(),
            a.line2_property.as_str(),
            a.city_property.as_str(),
            a.state_property.as_str(),
            a.pincode_property.as_str(),
            a.country_property.as_str(),
            a.phone_property.as_str(),
        ]);
    }
    out.extend(changes("company.propertyChange", None, company));
    out.extend(["company.deletion", "company.merge"].map(event));
    // Contacts.
    let p = &m.contact;
    out.extend(changes(
        "contact.propertyChange",
        None,
        [
            p.first_name_property.as_str(),
            p.last_name_property.as_str(),
            p.email_property.as_str(),
            p.phone_property.as_str(),
        ],
    ));
    out.extend(["contact.deletion", "contact.merge"].map(event));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_the_trigger_the_lines_and_the_records_fate() {
        let subs: Vec<String> = required(&MappingConfig::default())
            .iter()
            .map(ToString::to_string)
            .collect();
        for want in [
            "deal.propertyChange: dealstage",
            "deal.propertyChange: amount",
            "object.propertyChange (objectName line_item): quantity",
            "object.propertyChange (objectName line_item): price",
            "company.deletion",
            "company.merge",
            "contact.merge",
        ] {
            assert!(subs.iter().any(|s| s == want), "{want} in {subs:#?}");
        }
        let mut unique = subs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), subs.len(), "no subscription twice: {subs:#?}");
    }

    /// The README's table is the same list: every subscription type and property in it.
    #[test]
    fn the_readme_lists_every_required_subscription() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
        )
        .expect("README.md");
        let section = readme
            .split("### HubSpot webhook subscriptions")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("the README's subscription section");
        for sub in required(&MappingConfig::default()) {
            assert!(
                section.contains(&format!("`{}`", sub.subscription_type)),
                "{sub} missing from the README"
            );
            if let Some(p) = &sub.property {
                assert!(
                    section.contains(&format!("`{p}`")),
                    "{sub} missing from the README"
                );
            }
        }
    }
}
