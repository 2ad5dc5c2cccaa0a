//! `POST /crm/v4/associations/{from}/{to}/batch/read` (README §3): the associations of up to 100
//! objects in one call, with v4 type ids and labels and `toObjectId` as a string. An object with
//! no associations of that type is not in `results` but reported in `errors` (207), as HubSpot
//! does with `crm.associations.NO_ASSOCIATIONS_FOUND`. Each object's list comes in pages of
//! [`V4_PAGE`]: `paging.next.after` names the next one, which an input's `after` asks for.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, HsJson, standard_error};
use super::model::association_types;
use super::objects::{BATCH_MAX, batch_response, object_type};
use super::portal::Portal;

/// Associations per object and page in v4 batch reads (HubSpot's default limit, 500).
pub const V4_PAGE: usize = 500;

#[derive(Debug, Deserialize)]
pub struct Input {
    id: String,
    #[serde(default)]
    after: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct BatchRead {
    inputs: Vec<Input>,
}

pub async fn batch_read(
    State(portal): State<Arc<Portal>>,
    Path((from, to)): Path<(String, String)>,
    HsJson(req): HsJson<BatchRead>,
) -> Result<Response, ApiError> {
    let (from, to) = (object_type(&from)?, object_type(&to)?);
    if req.inputs.len() > BATCH_MAX {
        return Err(ApiError::validation(format!(
            "Batch input contains {} inputs; the limit is {BATCH_MAX}",
            req.inputs.len()
        )));
    }
    let mut store = portal.store();
    let started = store.now();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in &req.inputs {
        let linked = input
            .id
            .trim()
            .parse()
            .ok()
            .filter(|id| store.live(from, *id).is_some())
            .map(|id| store.associated(from, id, to))
            .unwrap_or_default();
        if linked.is_empty() {
            errors.push(standard_error(
                "OBJECT_NOT_FOUND",
                Some("crm.associations.NO_ASSOCIATIONS_FOUND"),
                format!(
                    "No {} is associated with {} {}.",
                    to.singular(),
                    from.singular(),
                    input.id
                ),
                json!({ "fromObjectId": [input.id], "toObjectType": [to.upper()] }),
            ));
            continue;
        }
        let start: usize = input
            .after
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let end = linked.len().min(start.saturating_add(V4_PAGE));
        let targets: Vec<Value> = linked
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|(id, meta)| {
                let types: Vec<Value> = association_types(from, to, meta.primary)
                    .iter()
                    .map(|t| json!({"category": "HUBSPOT_DEFINED", "typeId": t.type_id, "label": t.label}))
                    .collect();
                json!({ "toObjectId": id.to_string(), "associationTypes": types })
            })
            .collect();
        let mut result = json!({ "from": { "id": input.id }, "to": targets });
        if end < linked.len() {
            result["paging"] = json!({ "next": {
                "after": end.to_string(),
                "link": format!("?after={end}"),
            }});
        }
        results.push(result);
    }
    let completed = store.now();
    Ok(batch_response(
        results,
        errors,
        started,
        completed,
        StatusCode::OK,
    ))
}
