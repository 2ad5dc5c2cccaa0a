//! The vocabulary of the simulated CRM: object types with every spelling HubSpot accepts or
//! answers with (path names, object type ids, singular names, association keys), the association
//! type table of the v4 API, and how timestamps are written and read.
//!
//! Only the five object types the integration touches exist; tickets, quotes and custom objects
//! answer 400 like an unknown type would.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// A CRM object type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectType {
    Deals,
    Companies,
    Contacts,
    LineItems,
    Products,
}

impl ObjectType {
    pub const ALL: [ObjectType; 5] = [
        ObjectType::Deals,
        ObjectType::Companies,
        ObjectType::Contacts,
        ObjectType::LineItems,
        ObjectType::Products,
    ];

    /// The plural name used in API paths (`line_items`).
    pub fn path_name(self) -> &'static str {
        match self {
            Self::Deals => "deals",
            Self::Companies => "companies",
            Self::Contacts => "contacts",
            Self::LineItems => "line_items",
            Self::Products => "products",
        }
    }

    /// The singular name in association type strings (`deal_to_line_item`) and webhook types.
    pub fn singular(self) -> &'static str {
        match self {
            Self::Deals => "deal",
            Self::Companies => "company",
            Self::Contacts => "contact",
            Self::LineItems => "line_item",
            Self::Products => "product",
        }
    }

    /// The name in error messages ("Could not get some COMPANY objects").
    pub fn upper(self) -> &'static str {
        match self {
            Self::Deals => "DEAL",
            Self::Companies => "COMPANY",
            Self::Contacts => "CONTACT",
            Self::LineItems => "LINE_ITEM",
            Self::Products => "PRODUCT",
        }
    }

    /// The key of this type in a v3 object's `associations` map. HubSpot answers `"line items"`
    /// (with a space) for line items (contracts/hubspot/api/README.md §1).
    pub fn association_key(self) -> &'static str {
        match self {
            Self::LineItems => "line items",
            other => other.path_name(),
        }
    }

    /// Property group of the built-in properties.
    pub fn group_name(self) -> &'static str {
        match self {
            Self::Deals => "dealinformation",
            Self::Companies => "companyinformation",
            Self::Contacts => "contactinformation",
            Self::LineItems => "lineiteminformation",
            Self::Products => "productinformation",
        }
    }

    /// Properties a read returns when the request names none.
    pub fn default_properties(self) -> &'static [&'static str] {
        match self {
            Self::Deals => &[
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ],
            Self::Companies => &[
                "createdate",
                "domain",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
            ],
            Self::Contacts => &[
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ],
            Self::LineItems => &[
                "amount",
                "createdate",
                "hs_lastmodifieddate",
                "hs_object_id",
                "hs_product_id",
                "hs_sku",
                "name",
                "price",
                "quantity",
            ],
            Self::Products => &[
                "createdate",
                "description",
                "hs_lastmodifieddate",
                "hs_object_id",
                "hs_sku",
                "name",
                "price",
            ],
        }
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path_name())
    }
}

/// The path segment was not an object type the simulator knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unable to infer object type from: {0}")]
pub struct UnknownObjectType(pub String);

impl FromStr for ObjectType {
    type Err = UnknownObjectType;

    /// Plural and singular names and the `0-N` object type ids, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = match s.to_ascii_lowercase().as_str() {
            "deals" | "deal" | "0-3" => Self::Deals,
            "companies" | "company" | "0-2" => Self::Companies,
            "contacts" | "contact" | "0-1" => Self::Contacts,
            "line_items" | "line_item" | "lineitems" | "line items" | "0-8" => Self::LineItems,
            "products" | "product" | "0-7" => Self::Products,
            _ => return Err(UnknownObjectType(s.to_string())),
        };
        Ok(t)
    }
}

/// One v4 association type: the type id HubSpot defines for a direction, and its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssociationType {
    pub type_id: u32,
    pub label: Option<&'static str>,
}

/// Type ids of one direction: the unlabeled one every association has, and the "Primary" one for
/// the pairs that know a primary (a deal's or contact's primary company).
struct Pair {
    from: ObjectType,
    to: ObjectType,
    unlabeled: u32,
    primary: Option<u32>,
}

/// HubSpot-defined association type ids (contracts/hubspot/api/README.md §3 and HubSpot's
/// associations v4 docs). Pairs missing here cannot be associated in the simulator.
const PAIRS: [Pair; 8] = [
    Pair {
        from: ObjectType::Deals,
        to: ObjectType::Companies,
        unlabeled: 341,
        primary: Some(5),
    },
    Pair {
        from: ObjectType::Companies,
        to: ObjectType::Deals,
        unlabeled: 342,
        primary: Some(6),
    },
    Pair {
        from: ObjectType::Deals,
        to: ObjectType::Contacts,
        unlabeled: 3,
        primary: None,
    },
    Pair {
        from: ObjectType::Contacts,
        to: ObjectType::Deals,
        unlabeled: 4,
        primary: None,
    },
    Pair {
        from: ObjectType::Deals,
        to: ObjectType::LineItems,
        unlabeled: 19,
        primary: None,
    },
    Pair {
        from: ObjectType::LineItems,
        to: ObjectType::Deals,
        unlabeled: 20,
        primary: None,
    },
    Pair {
        from: ObjectType::Contacts,
        to: ObjectType::Companies,
        unlabeled: 279,
        primary: Some(1),
    },
    Pair {
        from: ObjectType::Companies,
        to: ObjectType::Contacts,
        unlabeled: 280,
        primary: Some(2),
    },
];

/// Whether HubSpot lets `from` and `to` be associated (in the simulator's subset).
pub fn can_associate(from: ObjectType, to: ObjectType) -> bool {
    PAIRS.iter().any(|p| p.from == from && p.to == to)
}

/// Whether the pair has a "Primary" label (only one primary per object).
pub fn has_primary(from: ObjectType, to: ObjectType) -> bool {
    PAIRS
        .iter()
        .any(|p| p.from == from && p.to == to && p.primary.is_some())
}

/// The v4 association types of one stored association, the primary label first as HubSpot lists it.
pub fn association_types(from: ObjectType, to: ObjectType, primary: bool) -> Vec<AssociationType> {
    let Some(pair) = PAIRS.iter().find(|p| p.from == from && p.to == to) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(2);
    if let (true, Some(id)) = (primary, pair.primary) {
        out.push(AssociationType {
            type_id: id,
            label: Some("Primary"),
        });
    }
    out.push(AssociationType {
        type_id: pair.unlabeled,
        label: None,
    });
    out
}

/// Resolve a HubSpot-defined type id used when creating `from` with an association: the target
/// type and whether it asks for the primary label.
pub fn association_by_type_id(from: ObjectType, type_id: u32) -> Option<(ObjectType, bool)> {
    PAIRS.iter().filter(|p| p.from == from).find_map(|p| {
        if p.unlabeled == type_id {
            Some((p.to, false))
        } else if p.primary == Some(type_id) {
            Some((p.to, true))
        } else {
            None
        }
    })
}

/// The v3 association `type` string: `deal_to_company`.
pub fn v3_association_type(from: ObjectType, to: ObjectType) -> String {
    format!("{}_to_{}", from.singular(), to.singular())
}

/// Timestamps as HubSpot writes them in API responses: ISO-8601 UTC with milliseconds.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Epoch milliseconds of a value HubSpot would accept as a date: epoch-ms digits, RFC 3339, or a
/// bare `YYYY-MM-DD` (midnight UTC).
pub fn parse_instant_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// The instant of an epoch-ms value.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_types_parse_every_spelling() {
        for (s, t) in [
            ("deals", ObjectType::Deals),
            ("0-3", ObjectType::Deals),
            ("COMPANIES", ObjectType::Companies),
            ("line_items", ObjectType::LineItems),
            ("line_item", ObjectType::LineItems),
            ("0-1", ObjectType::Contacts),
            ("products", ObjectType::Products),
        ] {
            assert_eq!(s.parse::<ObjectType>(), Ok(t), "{s}");
        }
        assert!("tickets".parse::<ObjectType>().is_err());
        assert_eq!(ObjectType::LineItems.association_key(), "line items");
    }

    #[test]
    fn association_types_follow_hubspots_ids() {
        let t = association_types(ObjectType::Deals, ObjectType::Companies, true);
        assert_eq!(
            t[0],
            AssociationType {
                type_id: 5,
                label: Some("Primary")
            }
        );
        assert_eq!(t[1].type_id, 341);
        assert_eq!(
            association_types(ObjectType::Deals, ObjectType::LineItems, true)[0].type_id,
            19
        );
        assert_eq!(
            association_by_type_id(ObjectType::Deals, 5),
            Some((ObjectType::Companies, true))
        );
        assert_eq!(
            association_by_type_id(ObjectType::LineItems, 20),
            Some((ObjectType::Deals, false))
        );
        assert!(!can_associate(ObjectType::Products, ObjectType::Deals));
        assert_eq!(
            v3_association_type(ObjectType::Deals, ObjectType::LineItems),
            "deal_to_line_item"
        );
    }

    #[test]
    fn instants_parse_from_all_accepted_forms() {
        assert_eq!(parse_instant_ms("1735689600000"), Some(1_735_689_600_000));
        assert_eq!(
            parse_instant_ms("2025-01-01T00:00:00Z"),
            Some(1_735_689_600_000)
        );
        assert_eq!(
            parse_instant_ms("2025-01-01T00:00:00.000Z"),
            Some(1_735_689_600_000)
        );
        assert_eq!(parse_instant_ms("2025-01-01"), Some(1_735_689_600_000));
        assert_eq!(parse_instant_ms("ACME"), None);
        assert_eq!(iso(from_ms(1_735_689_600_123)), "2025-01-01T00:00:00.123Z");
    }
}
