//! Property definitions (`/crm/v3/properties/{objectType}`): the built-in properties of each
//! object type, custom ones created through the API, and the validation HubSpot applies to every
//! write — a property that does not exist, a value outside an enumeration's options or a read-only
//! property is a 400 `VALIDATION_ERROR` for the whole request. That is what makes `crm-writer setup`
//! (creating `erpnext_*` properties first) necessary against the simulator as against HubSpot.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::{ApiError, HsJson, standard_error};
use super::model::{ObjectType, from_ms, iso, parse_instant_ms};
use super::portal::Portal;

/// A property definition as the API answers it (`Property` in the spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyDef {
    pub updated_at: String,
    pub created_at: String,
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub field_type: String,
    pub description: String,
    pub group_name: String,
    pub options: Vec<PropertyOption>,
    pub display_order: i64,
    pub calculated: bool,
    pub external_options: bool,
    pub has_unique_value: bool,
    pub hidden: bool,
    pub hubspot_defined: bool,
    pub modification_metadata: ModificationMetadata,
    pub form_field: bool,
    pub archived: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOption {
    pub label: String,
    pub value: String,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub display_order: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModificationMetadata {
    pub archivable: bool,
    pub read_only_definition: bool,
    pub read_only_value: bool,
}

/// `PropertyCreate` (README §6). Fields HubSpot accepts but the simulator has no use for are
/// accepted and ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyCreate {
    pub name: Option<String>,
    pub label: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub field_type: Option<String>,
    pub group_name: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub options: Vec<PropertyOption>,
    pub display_order: Option<i64>,
    #[serde(default)]
    pub has_unique_value: bool,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub form_field: bool,
}

const TYPES: [&str; 7] = [
    "string",
    "number",
    "date",
    "datetime",
    "enumeration",
    "bool",
    "phone_number",
];
const FIELD_TYPES: [&str; 12] = [
    "text",
    "textarea",
    "number",
    "date",
    "select",
    "radio",
    "checkbox",
    "booleancheckbox",
    "file",
    "html",
    "phonenumber",
    "calculation_equation",
];

/// Properties every object type has, maintained by the simulator (read-only through the API).
pub const SYSTEM_READ_ONLY: [&str; 3] = ["hs_object_id", "hs_lastmodifieddate", "lastmodifieddate"];

impl PropertyCreate {
    /// Check the required fields and enums, then build the definition.
    pub fn into_def(self, now: DateTime<Utc>) -> Result<PropertyDef, ApiError> {
        let missing: Vec<&str> = [
            ("name", self.name.is_none()),
            ("label", self.label.is_none()),
            ("type", self.kind.is_none()),
            ("fieldType", self.field_type.is_none()),
            ("groupName", self.group_name.is_none()),
        ]
        .into_iter()
        .filter_map(|(n, missing)| missing.then_some(n))
        .collect();
        if !missing.is_empty() {
            return Err(ApiError::validation(format!(
                "Invalid input JSON: missing required fields {missing:?}"
            )));
        }
        let (Some(name), Some(label), Some(kind), Some(field_type), Some(group_name)) = (
            self.name,
            self.label,
            self.kind,
            self.field_type,
            self.group_name,
        ) else {
            return Err(ApiError::validation("Invalid input JSON"));
        };
        if !TYPES.contains(&kind.as_str()) {
            return Err(ApiError::validation(format!(
                "Invalid property type '{kind}'"
            )));
        }
        if !FIELD_TYPES.contains(&field_type.as_str()) {
            return Err(ApiError::validation(format!(
                "Invalid property fieldType '{field_type}'"
            )));
        }
        let valid_name = !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_name {
            return Err(ApiError::validation(format!(
                "Property name '{name}' must start with a lowercase letter and contain only lowercase letters, digits and underscores"
            )));
        }
        Ok(PropertyDef {
            updated_at: iso(now),
            created_at: iso(now),
            name,
            label,
            kind,
            field_type,
            description: self.description,
            group_name,
            options: self.options,
            display_order: self.display_order.unwrap_or(-1),
            calculated: false,
            external_options: false,
            has_unique_value: self.has_unique_value,
            hidden: self.hidden,
            hubspot_defined: false,
            modification_metadata: ModificationMetadata {
                archivable: true,
                read_only_definition: false,
                read_only_value: false,
            },
            form_field: self.form_field,
            archived: false,
        })
    }
}

/// The built-in properties of `ty` (the subset the integration and its tests touch).
pub fn standard(ty: ObjectType) -> BTreeMap<String, PropertyDef> {
    // (name, label, type, fieldType)
    let common: &[(&str, &str, &str, &str)] = &[
        ("hs_object_id", "Record ID", "number", "number"),
        ("createdate", "Create Date", "datetime", "date"),
        (
            "hs_lastmodifieddate",
            "Last Modified Date",
            "datetime",
            "date",
        ),
    ];
    let own: &[(&str, &str, &str, &str)] = match ty {
        ObjectType::Deals => &[
            ("dealname", "Deal Name", "string", "text"),
            ("dealstage", "Deal Stage", "enumeration", "radio"),
            ("pipeline", "Pipeline", "enumeration", "select"),
            ("amount", "Amount", "number", "number"),
            ("closedate", "Close Date", "datetime", "date"),
            ("deal_currency_code", "Currency", "enumeration", "select"),
            ("dealtype", "Deal Type", "enumeration", "radio"),
            ("description", "Deal Description", "string", "textarea"),
            ("hubspot_owner_id", "Deal owner", "enumeration", "select"),
        ],
        ObjectType::Companies => &[
            ("name", "Company name", "string", "text"),
            ("domain", "Company Domain Name", "string", "text"),
            ("website", "Website URL", "string", "text"),
            ("phone", "Phone Number", "string", "phonenumber"),
            ("address", "Street Address", "string", "text"),
            ("address2", "Street Address 2", "string", "text"),
            ("city", "City", "string", "text"),
            ("zip", "Postal Code", "string", "text"),
            ("state", "State/Region", "string", "text"),
            ("country", "Country/Region", "string", "text"),
            ("industry", "Industry", "enumeration", "select"),
            ("description", "Description", "string", "textarea"),
        ],
        ObjectType::Contacts => &[
            ("email", "Email", "string", "text"),
            ("firstname", "First Name", "string", "text"),
            ("lastname", "Last Name", "string", "text"),
            ("phone", "Phone Number", "string", "phonenumber"),
            (
                "mobilephone",
                "Mobile Phone Number",
                "string",
                "phonenumber",
            ),
            ("company", "Company Name", "string", "text"),
            ("jobtitle", "Job Title", "string", "text"),
            ("address", "Street Address", "string", "text"),
            ("city", "City", "string", "text"),
            ("zip", "Postal Code", "string", "text"),
            ("country", "Country/Region", "string", "text"),
            ("salutation", "Salutation", "string", "text"),
            ("lastmodifieddate", "Last Modified Date", "datetime", "date"),
        ],
        ObjectType::LineItems => &[
            ("name", "Name", "string", "text"),
            ("hs_sku", "SKU", "string", "text"),
            ("price", "Unit price", "number", "number"),
            ("quantity", "Quantity", "number", "number"),
            ("amount", "Net price", "number", "number"),
            ("hs_product_id", "Product ID", "number", "number"),
            ("description", "Description", "string", "textarea"),
            ("discount", "Unit discount", "number", "number"),
            (
                "hs_discount_percentage",
                "Discount Percentage",
                "number",
                "number",
            ),
            (
                "hs_line_item_currency_code",
                "Currency",
                "enumeration",
                "select",
            ),
            ("hs_tax_rate", "Tax rate", "number", "number"),
        ],
        ObjectType::Products => &[
            ("name", "Name", "string", "text"),
            ("hs_sku", "SKU", "string", "text"),
            ("price", "Unit price", "number", "number"),
            ("description", "Description", "string", "textarea"),
        ],
    };
    let epoch = iso(from_ms(1_577_836_800_000));
    common
        .iter()
        .chain(own)
        .enumerate()
        .map(|(order, (name, label, kind, field_type))| {
            let read_only = SYSTEM_READ_ONLY.contains(name);
            let def = PropertyDef {
                updated_at: epoch.clone(),
                created_at: epoch.clone(),
                name: (*name).to_string(),
                label: (*label).to_string(),
                kind: (*kind).to_string(),
                field_type: (*field_type).to_string(),
                description: String::new(),
                group_name: ty.group_name().to_string(),
                options: Vec::new(),
                display_order: i64::try_from(order).unwrap_or(-1),
                calculated: false,
                external_options: false,
                has_unique_value: false,
                hidden: false,
                hubspot_defined: true,
                modification_metadata: ModificationMetadata {
                    archivable: false,
                    read_only_definition: true,
                    read_only_value: read_only,
                },
                form_field: false,
                archived: false,
            };
            ((*name).to_string(), def)
        })
        .collect()
}

/// Validate the properties of one write against the definitions and normalise values the way
/// HubSpot stores them (epoch-ms datetimes become ISO-8601). All problems are reported at once in
/// HubSpot's message format (`error_400_validation.json`).
pub fn validate_write(
    defs: &BTreeMap<String, PropertyDef>,
    props: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut problems = Vec::new();
    let mut out = BTreeMap::new();
    for (name, value) in props {
        let Some(def) = defs.get(name) else {
            problems.push(problem(
                name,
                format!("Property \"{name}\" does not exist"),
                "PROPERTY_DOESNT_EXIST",
            ));
            continue;
        };
        if def.modification_metadata.read_only_value {
            problems.push(problem(
                name,
                format!("\"{name}\" is a read only property; its value cannot be set."),
                "READ_ONLY_VALUE",
            ));
            continue;
        }
        if !value.is_empty() && def.kind == "enumeration" && !def.options.is_empty() {
            let allowed: Vec<&str> = def.options.iter().map(|o| o.value.as_str()).collect();
            let given: Vec<&str> = if def.field_type == "checkbox" {
                value.split(';').collect()
            } else {
                vec![value.as_str()]
            };
            if let Some(bad) = given.iter().find(|v| !allowed.contains(v)) {
                problems.push(problem(
                    name,
                    format!(
                        "{bad} was not one of the allowed options: [{}]",
                        allowed.join(", ")
                    ),
                    "INVALID_OPTION",
                ));
                continue;
            }
        }
        if !value.is_empty() && def.kind == "number" && value.trim().parse::<f64>().is_err() {
            problems.push(problem(
                name,
                format!("{value} is not a valid number"),
                "INVALID_DECIMAL",
            ));
            continue;
        }
        let normalised = match def.kind.as_str() {
            "datetime" if !value.is_empty() => match parse_instant_ms(value) {
                Some(ms) if value.bytes().all(|b| b.is_ascii_digit()) => iso(from_ms(ms)),
                Some(_) => value.clone(),
                None => {
                    problems.push(problem(
                        name,
                        format!("{value} is not a valid datetime"),
                        "INVALID_DATE",
                    ));
                    continue;
                }
            },
            _ => value.clone(),
        };
        out.insert(name.clone(), normalised);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::validation(format!(
            "Property values were not valid: {}",
            Value::Array(problems)
        )))
    }
}

fn problem(name: &str, message: String, error: &str) -> Value {
    json!({"isValid": false, "message": message, "error": error, "name": name})
}

fn object_type(raw: &str) -> Result<ObjectType, ApiError> {
    raw.parse()
        .map_err(|e: super::model::UnknownObjectType| ApiError::validation(e.to_string()))
}

/// `GET /crm/v3/properties/{objectType}`
pub async fn list(
    State(portal): State<Arc<Portal>>,
    Path(ty): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ty = object_type(&ty)?;
    let store = portal.store();
    let results: Vec<&PropertyDef> = store.property_defs(ty).values().collect();
    Ok(Json(json!({ "results": results })))
}

/// `GET /crm/v3/properties/{objectType}/{propertyName}`
pub async fn get_one(
    State(portal): State<Arc<Portal>>,
    Path((ty, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ty = object_type(&ty)?;
    let store = portal.store();
    let def = store
        .property_defs(ty)
        .get(&name)
        .ok_or_else(ApiError::route_not_found)?;
    Ok(Json(json!(def)))
}

/// `POST /crm/v3/properties/{objectType}`: 201, or 409 `OBJECT_ALREADY_EXISTS`.
pub async fn create(
    State(portal): State<Arc<Portal>>,
    Path(ty): Path<String>,
    HsJson(input): HsJson<PropertyCreate>,
) -> Result<Response, ApiError> {
    let ty = object_type(&ty)?;
    let mut store = portal.store();
    let now = store.now();
    let def = input.into_def(now)?;
    if store.property_defs(ty).contains_key(&def.name) {
        return Err(ApiError::property_exists(&def.name));
    }
    let body = json!(def);
    store.add_property(ty, def);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct BatchCreate {
    inputs: Vec<PropertyCreate>,
}

/// `POST /crm/v3/properties/{objectType}/batch/create`: 201, or 207 with an error per duplicate.
pub async fn batch_create(
    State(portal): State<Arc<Portal>>,
    Path(ty): Path<String>,
    HsJson(input): HsJson<BatchCreate>,
) -> Result<Response, ApiError> {
    let ty = object_type(&ty)?;
    if input.inputs.len() > 100 {
        return Err(ApiError::validation(
            "Too many inputs: a batch takes at most 100",
        ));
    }
    let mut store = portal.store();
    let started = store.now();
    let defs = input
        .inputs
        .into_iter()
        .map(|i| i.into_def(started))
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for def in defs {
        if store.property_defs(ty).contains_key(&def.name) {
            let e = ApiError::property_exists(&def.name);
            errors.push(standard_error(
                e.category,
                None,
                e.message,
                json!({"name": [def.name]}),
            ));
        } else {
            results.push(json!(def));
            store.add_property(ty, def);
        }
    }
    let completed = store.now();
    Ok(super::objects::batch_response(
        results,
        errors,
        started,
        completed,
        StatusCode::CREATED,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> BTreeMap<String, PropertyDef> {
        let mut d = standard(ObjectType::Deals);
        let status: PropertyCreate = serde_json::from_value(json!({
            "name": "erpnext_sync_status", "label": "s", "type": "enumeration", "fieldType": "select",
            "groupName": "dealinformation",
            "options": [{"label": "Synced", "value": "synced", "hidden": false}]
        }))
        .expect("create");
        let def = status.into_def(Utc::now()).expect("def");
        d.insert(def.name.clone(), def);
        d
    }

    #[test]
    fn unknown_read_only_and_bad_option_are_all_reported() {
        let props: BTreeMap<String, String> = [
            ("erpnext_sales_orderx", "SO-1"),
            ("hs_object_id", "1"),
            ("erpnext_sync_status", "bogus"),
            ("dealname", "ok"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let err = validate_write(&defs(), &props).expect_err("invalid");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(
            err.message.starts_with("Property values were not valid: ["),
            "{}",
            err.message
        );
        assert!(err.message.contains("PROPERTY_DOESNT_EXIST"));
        assert!(err.message.contains("READ_ONLY_VALUE"));
        assert!(err.message.contains("INVALID_OPTION"));
        assert!(!err.message.contains("\"dealname\""));
    }

    #[test]
    fn epoch_ms_datetimes_are_stored_as_iso() {
        let props = BTreeMap::from([("closedate".to_string(), "1735819200000".to_string())]);
        let out = validate_write(&defs(), &props).expect("valid");
        assert_eq!(out["closedate"], "2025-01-02T12:00:00.000Z");
        let cleared = BTreeMap::from([("amount".to_string(), String::new())]);
        assert_eq!(
            validate_write(&defs(), &cleared).expect("valid")["amount"],
            ""
        );
    }

    #[test]
    fn property_create_requires_fields_and_valid_names() {
        let bad: PropertyCreate = serde_json::from_value(json!({"name": "x"})).expect("parse");
        assert!(bad.into_def(Utc::now()).is_err());
        let bad_name: PropertyCreate = serde_json::from_value(json!({
            "name": "Bad Name", "label": "l", "type": "string", "fieldType": "text", "groupName": "g"
        }))
        .expect("parse");
        assert!(bad_name.into_def(Utc::now()).is_err());
    }
}
