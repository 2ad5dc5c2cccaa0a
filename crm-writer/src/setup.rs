//! `crm-writer setup`: create the HubSpot custom properties crm-writer writes (DESIGN §8), with
//! the names from `[mapping.writeback]`, idempotently.
//!
//! For each object type the existing properties are listed once; a property already present is
//! left alone (never modified: an admin may have relabelled it or added options) and reported
//! as present — with a note when its type differs or an enumeration lacks values crm-writer
//! writes, because HubSpot would then refuse those writes. A missing one is created; a 409
//! (created meanwhile, e.g. by a second replica running setup) counts as present. A second run
//! therefore creates nothing.

use std::fmt;

use shared::commands::SyncStatus;
use shared::hubspot::types::{FieldType, Property, PropertyCreate, PropertyOption, PropertyType};
use shared::hubspot::{HubSpotClient, HubSpotError, ObjectType, PropertyCreated};
use shared::mapping::{INVOICE_STATUSES, WritebackConfig};

/// One property crm-writer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub object_type: ObjectType,
    pub create: PropertyCreate,
}

/// What setup did with one property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Created,
    /// Already there; `note` says how it differs from what crm-writer writes, if it does.
    Present {
        note: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub object_type: ObjectType,
    pub name: String,
    pub action: Action,
}

/// The table `crm-writer setup` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupReport {
    pub rows: Vec<Row>,
}

impl SetupReport {
    pub fn created(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.action == Action::Created)
            .count()
    }

    pub fn present(&self) -> usize {
        self.rows.len() - self.created()
    }
}

impl fmt::Display for SetupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<10} {:<32} result", "object", "property")?;
        for r in &self.rows {
            let result = match &r.action {
                Action::Created => "created".to_string(),
                Action::Present { note: None } => "already present".to_string(),
                Action::Present { note: Some(n) } => format!("already present — WARNING: {n}"),
            };
            writeln!(f, "{:<10} {:<32} {result}", r.object_type.as_str(), r.name)?;
        }
        write!(
            f,
            "{} created, {} already present",
            self.created(),
            self.present()
        )
    }
}

/// The properties of `[mapping.writeback]`: company Customer ID; deal Sales Order, its link,
/// invoice status, sync status and the sync status's reason.
pub fn wanted(w: &WritebackConfig) -> Vec<Wanted> {
    let text = |object_type, name: &str, label: &str, group: &str, description: &str| Wanted {
        object_type,
        create: PropertyCreate {
            name: name.to_string(),
            label: label.to_string(),
            property_type: PropertyType::String,
            field_type: FieldType::Text,
            group_name: group.to_string(),
            description: Some(description.to_string()),
            options: Vec::new(),
            display_order: None,
            has_unique_value: None,
            hidden: None,
            form_field: Some(false),
        },
    };
    let select =
        |name: &str, label: &str, description: &str, options: Vec<PropertyOption>| Wanted {
            object_type: ObjectType::Deals,
            create: PropertyCreate {
                name: name.to_string(),
                label: label.to_string(),
                property_type: PropertyType::Enumeration,
                field_type: FieldType::Select,
                group_name: "dealinformation".into(),
                description: Some(description.to_string()),
                options,
                display_order: None,
                has_unique_value: None,
                hidden: None,
                form_field: Some(false),
            },
        };
    let option = |i: usize, value: &str, label: &str| PropertyOption {
        label: label.to_string(),
        value: value.to_string(),
        hidden: false,
        display_order: i32::try_from(i).ok(),
        description: None,
    };
    vec![
        text(
            ObjectType::Companies,
            &w.company_customer_id,
            "ERPNext Customer ID",
            "companyinformation",
            "The ERPNext Customer this company is synced to. Written by lead2ledger.",
        ),
        text(
            ObjectType::Deals,
            &w.deal_sales_order,
            "ERPNext Sales Order",
            "dealinformation",
            "The ERPNext Sales Order created for this deal. Written by lead2ledger.",
        ),
        text(
            ObjectType::Deals,
            &w.deal_sales_order_url,
            "ERPNext Sales Order link",
            "dealinformation",
            "Link to the Sales Order in ERPNext. Written by lead2ledger.",
        ),
        select(
            &w.deal_invoice_status,
            "Invoice status",
            "Status of the deal's latest ERPNext Sales Invoice. Written by lead2ledger.",
            INVOICE_STATUSES
                .iter()
                .enumerate()
                .map(|(i, (_, value, label))| option(i, value, label))
                .collect(),
        ),
        select(
            &w.deal_sync_status,
            "ERPNext sync status",
            "Whether lead2ledger synced this deal to ERPNext, or a person must look at it. Written by lead2ledger.",
            [
                (SyncStatus::Synced, "Synced"),
                (SyncStatus::NeedsReview, "Needs review"),
                (SyncStatus::Error, "Error"),
            ]
            .iter()
            .enumerate()
            .map(|(i, (s, label))| option(i, s.as_str(), label))
            .collect(),
        ),
        Wanted {
            create: PropertyCreate {
                field_type: FieldType::Textarea,
                ..text(
                    ObjectType::Deals,
                    &w.deal_sync_message,
                    "ERPNext sync message",
                    "dealinformation",
                    "Why the sync status is needs review or error; empty when synced. Written by lead2ledger.",
                )
                .create
            },
            object_type: ObjectType::Deals,
        },
        Wanted {
            object_type: ObjectType::Deals,
            create: PropertyCreate {
                property_type: PropertyType::Datetime,
                field_type: FieldType::Date,
                form_field: Some(false),
                ..text(
                    ObjectType::Deals,
                    &w.deal_invoice_status_at,
                    "Invoice status as of",
                    "dealinformation",
                    "When the invoice status became true in ERPNext. Written by lead2ledger with the status; an older status never replaces a newer one.",
                )
                .create
            },
        },
    ]
}

/// Create what is missing; report every property.
pub async fn setup(
    client: &HubSpotClient,
    writeback: &WritebackConfig,
) -> Result<SetupReport, HubSpotError> {
    let wanted = wanted(writeback);
    let mut report = SetupReport::default();
    for object_type in [ObjectType::Companies, ObjectType::Deals] {
        let mine: Vec<&Wanted> = wanted
            .iter()
            .filter(|w| w.object_type == object_type)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let existing = client.list_properties(object_type).await?;
        for w in mine {
            let action = match existing.iter().find(|p| p.name == w.create.name) {
                Some(p) => Action::Present {
                    note: difference(&w.create, p),
                },
                None => match client.create_property(object_type, &w.create).await? {
                    PropertyCreated::Created(_) => Action::Created,
                    PropertyCreated::AlreadyExists => Action::Present { note: None },
                },
            };
            tracing::info!(object_type = object_type.as_str(), property = %w.create.name, ?action, "setup");
            report.rows.push(Row {
                object_type,
                name: w.create.name.clone(),
                action,
            });
        }
    }
    Ok(report)
}

/// How an existing property differs in a way that makes crm-writer's writes fail.
fn difference(want: &PropertyCreate, have: &Property) -> Option<String> {
    let want_type = match want.property_type {
        PropertyType::String => "string",
        PropertyType::Enumeration => "enumeration",
        PropertyType::Number => "number",
        PropertyType::Date => "date",
        PropertyType::Datetime => "datetime",
        PropertyType::Bool => "bool",
        PropertyType::PhoneNumber => "phone_number",
    };
    if have.property_type != want_type {
        return Some(format!(
            "type is {:?}, crm-writer writes {want_type} values",
            have.property_type
        ));
    }
    let missing: Vec<&str> = want
        .options
        .iter()
        .filter(|o| !have.options.iter().any(|h| h.value == o.value))
        .map(|o| o.value.as_str())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "options missing: {} (add them in HubSpot → Settings → Properties, or writes of these values fail)",
            missing.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_properties_follow_the_configured_names() {
        let w = WritebackConfig {
            deal_invoice_status: "acme_invoice_status".into(),
            ..WritebackConfig::default()
        };
        let wanted = wanted(&w);
        let names: Vec<(&str, &str)> = wanted
            .iter()
            .map(|w| (w.object_type.as_str(), w.create.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("companies", "erpnext_customer_id"),
                ("deals", "erpnext_sales_order"),
                ("deals", "erpnext_sales_order_url"),
                ("deals", "acme_invoice_status"),
                ("deals", "erpnext_sync_status"),
                ("deals", "erpnext_sync_message"),
                ("deals", "erpnext_invoice_status_at"),
            ]
        );
        assert_eq!(
            (wanted[6].create.property_type, wanted[6].create.field_type),
            (PropertyType::Datetime, FieldType::Date)
        );
        let message = &wanted[5].create;
        assert_eq!(
            (message.property_type, message.field_type),
            (PropertyType::String, FieldType::Textarea)
        );
        let invoice = &wanted[3].create;
        assert_eq!(invoice.property_type, PropertyType::Enumeration);
        let values: Vec<&str> = invoice.options.iter().map(|o| o.value.as_str()).collect();
        for v in [
            "draft",
            "unpaid",
            "paid",
            "partly_paid",
            "overdue",
            "cancelled",
            "return",
            "credit_note_issued",
        ] {
            assert!(values.contains(&v), "{v} in {values:?}");
        }
        let sync: Vec<&str> = wanted[4]
            .create
            .options
            .iter()
            .map(|o| o.value.as_str())
            .collect();
        assert_eq!(sync, ["synced", "needs_review", "error"]);
        assert_eq!(wanted[0].create.group_name, "companyinformation");
        assert!(
            wanted[1..]
                .iter()
                .all(|w| w.create.group_name == "dealinformation")
        );
    }

    #[test]
    fn differences_that_break_writes_are_reported() {
        let wanted = wanted(&WritebackConfig::default());
        let sync = &wanted[4].create;
        let mut have: Property = serde_json::from_value(serde_json::json!({
            "name": "erpnext_sync_status", "label": "x", "type": "enumeration", "fieldType": "select",
            "groupName": "dealinformation",
            "options": [{"label": "Synced", "value": "synced", "hidden": false},
                        {"label": "Error", "value": "error", "hidden": false}]
        }))
        .expect("property");
        let note = difference(sync, &have).expect("a missing option");
        assert!(note.contains("needs_review"), "{note}");
        have.property_type = "string".into();
        assert!(difference(sync, &have).expect("type").contains("type"));
        let text = &wanted[1].create;
        have.options.clear();
        assert_eq!(difference(text, &have), None);
    }
}
