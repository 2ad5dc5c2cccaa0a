//! The CRM objects API (`/crm/v3/objects/{type}`): read, create, update, archive one object, and
//! the batch read/create/update/archive endpoints with HubSpot's limits (100 inputs), its 207
//! answers listing missing ids, and the property selection each endpoint answers with — as the
//! contract examples show it (README §1, §2, §5).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{ApiError, HsJson, standard_error};
use super::model::{ObjectType, association_by_type_id, iso, v3_association_type};
use super::portal::Portal;
use super::properties::validate_write;
use super::state::{Change, Object, Store, StoreError};
use super::webhooks::ChangeSource;

/// HubSpot's batch size limit.
pub const BATCH_MAX: usize = 100;

/// Which properties an answer carries.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// The type's default properties (no `properties` asked for).
    Default,
    /// Asked-for properties plus `createdate`, `hs_lastmodifieddate`, `hs_object_id` (single GET,
    /// search).
    Requested(&'a [String]),
    /// Asked-for properties plus `hs_object_id` (batch read, `batch_read_response_207.json`).
    BatchRead(&'a [String]),
    /// The properties just written plus `hs_lastmodifieddate` (`batch_update_response.json`).
    Written(&'a BTreeSet<String>),
    /// Everything stored (create answers).
    All,
}

/// The `properties` map of an answer. Asked-for properties without a value are `null` (or left
/// out, per `unset_properties_as_null`).
pub fn render_properties(
    ty: ObjectType,
    o: &Object,
    sel: Selection<'_>,
    null_unset: bool,
) -> Map<String, Value> {
    let mut names: Vec<&str> = Vec::new();
    let always: &[&str] = match sel {
        Selection::Requested(_) => &["createdate", "hs_lastmodifieddate", "hs_object_id"],
        Selection::BatchRead(_) => &["hs_object_id"],
        Selection::Written(_) => &["hs_lastmodifieddate"],
        Selection::Default | Selection::All => &[],
    };
    let mut asked = true;
    match sel {
        Selection::Requested(list) | Selection::BatchRead(list) if !list.is_empty() => {
            names.extend(list.iter().map(String::as_str));
        }
        Selection::Written(set) => names.extend(set.iter().map(String::as_str)),
        Selection::All => {
            names.extend(o.properties.keys().map(String::as_str));
            asked = false;
        }
        _ => {
            names.extend(ty.default_properties());
            asked = false;
        }
    }
    names.extend(always);
    let mut out = Map::new();
    for name in names {
        match o.properties.get(name) {
            Some(v) => {
                out.insert(name.to_string(), json!(v));
            }
            None if matches!(sel, Selection::Written(_)) => {
                out.insert(name.to_string(), json!(""));
            }
            None if asked && null_unset => {
                out.insert(name.to_string(), Value::Null);
            }
            None => {}
        }
    }
    out
}

/// Associations per type listed inline by a v3 object read before the list is cut with
/// `paging.next` (tests/contracts/hubspot/api/README.md §1: more than 100 per type are paged).
pub const V3_INLINE_PAGE: usize = 100;

/// `SimplePublicObject` (plus `associations` when asked for and present).
pub fn render(
    store: &Store,
    ty: ObjectType,
    o: &Object,
    sel: Selection<'_>,
    null_unset: bool,
    associations: &[ObjectType],
) -> Value {
    let mut v = json!({
        "id": o.id.to_string(),
        "properties": render_properties(ty, o, sel, null_unset),
        "createdAt": iso(o.created_at),
        "updatedAt": iso(o.updated_at),
        "archived": o.archived,
    });
    if let Some(at) = o.archived_at {
        v["archivedAt"] = json!(iso(at));
    }
    let mut assoc = Map::new();
    for to in associations {
        let linked = store.associated(ty, o.id, *to);
        let results: Vec<Value> = linked
            .iter()
            .take(V3_INLINE_PAGE)
            .map(|(id, _)| json!({"id": id.to_string(), "type": v3_association_type(ty, *to)}))
            .collect();
        // HubSpot leaves out types with no associations rather than answering an empty list.
        if !results.is_empty() {
            let mut collection = json!({ "results": results });
            // A longer list is cut after one page; the rest is read with the associations API.
            if linked.len() > V3_INLINE_PAGE {
                collection["paging"] = json!({ "next": {
                    "after": V3_INLINE_PAGE.to_string(),
                    "link": format!(
                        "/crm/v3/objects/{}/{}/associations/{}?after={V3_INLINE_PAGE}",
                        ty.path_name(), o.id, to.association_key()
                    ),
                }});
            }
            assoc.insert(to.association_key().to_string(), collection);
        }
    }
    if !assoc.is_empty() {
        v["associations"] = Value::Object(assoc);
    }
    v
}

/// A batch answer: 200/201 `COMPLETE`, or 207 with `numErrors` and `errors` when any input failed.
pub fn batch_response(
    results: Vec<Value>,
    errors: Vec<Value>,
    started: DateTime<Utc>,
    completed: DateTime<Utc>,
    ok: StatusCode,
) -> Response {
    let mut body = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso(started),
        "completedAt": iso(completed),
    });
    if errors.is_empty() {
        return (ok, Json(body)).into_response();
    }
    body["numErrors"] = json!(errors.len());
    body["errors"] = Value::Array(errors);
    (StatusCode::MULTI_STATUS, Json(body)).into_response()
}

/// The query parameters of the object endpoints. HubSpot takes lists comma-separated or repeated.
#[derive(Debug, Default)]
pub struct ObjectQuery {
    pub properties: Vec<String>,
    pub associations: Vec<ObjectType>,
    pub archived: bool,
    pub id_property: Option<String>,
}

impl ObjectQuery {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut q = Self::default();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let list = || {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            match k.as_ref() {
                "properties" => q.properties.extend(list()),
                // Unknown association types are ignored, as HubSpot does.
                "associations" => q
                    .associations
                    .extend(list().filter_map(|s| s.parse::<ObjectType>().ok())),
                "archived" => q.archived = v.eq_ignore_ascii_case("true"),
                "idProperty" => q.id_property = Some(v.into_owned()),
                _ => {}
            }
        }
        q
    }
}

pub fn object_type(raw: &str) -> Result<ObjectType, ApiError> {
    raw.parse()
        .map_err(|e: super::model::UnknownObjectType| ApiError::validation(e.to_string()))
}

/// Resolve an id from a path or batch input: the record id, or a unique property's value.
fn resolve(
    store: &Store,
    ty: ObjectType,
    raw: &str,
    id_property: Option<&str>,
    archived: bool,
) -> Option<u64> {
    let id = match id_property {
        Some(p) if p != "hs_object_id" => store.find_by_property(ty, p, raw)?,
        _ => raw.trim().parse().ok()?,
    };
    store
        .get(ty, id)
        .filter(|o| o.archived == archived)
        .map(|o| o.id)
}

/// `GET /crm/v3/objects/{type}/{id}`
pub async fn get_object(
    State(portal): State<Arc<Portal>>,
    Path((ty, raw_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let ty = object_type(&ty)?;
    let q = ObjectQuery::parse(query.as_deref());
    let store = portal.store();
    let id = resolve(&store, ty, &raw_id, q.id_property.as_deref(), q.archived)
        .ok_or_else(|| ApiError::not_found(ty, &raw_id))?;
    let o = store
        .get(ty, id)
        .ok_or_else(|| ApiError::not_found(ty, &raw_id))?;
    let sel = if q.properties.is_empty() {
        Selection::Default
    } else {
        Selection::Requested(&q.properties)
    };
    Ok(Json(render(
        &store,
        ty,
        o,
        sel,
        portal.unset_as_null,
        &q.associations,
    )))
}

#[derive(Debug, Deserialize)]
pub struct PropertiesInput {
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

/// `PATCH /crm/v3/objects/{type}/{id}`
pub async fn update_object(
    State(portal): State<Arc<Portal>>,
    Path((ty, raw_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    HsJson(input): HsJson<PropertiesInput>,
) -> Result<Json<Value>, ApiError> {
    let ty = object_type(&ty)?;
    let q = ObjectQuery::parse(query.as_deref());
    let (body, changes) = {
        let mut store = portal.store();
        let id = resolve(&store, ty, &raw_id, q.id_property.as_deref(), false)
            .ok_or_else(|| ApiError::not_found(ty, &raw_id))?;
        let props = validate_write(store.property_defs(ty), &input.properties)?;
        let changes = store
            .update(ty, id, &props)
            .map_err(|_| ApiError::not_found(ty, &raw_id))?;
        let written: BTreeSet<String> = props.keys().cloned().collect();
        let o = store
            .get(ty, id)
            .ok_or_else(|| ApiError::not_found(ty, &raw_id))?;
        (
            render(
                &store,
                ty,
                o,
                Selection::Written(&written),
                portal.unset_as_null,
                &[],
            ),
            changes,
        )
    };
    portal.emit(changes, ChangeSource::Api);
    Ok(Json(body))
}

/// `DELETE /crm/v3/objects/{type}/{id}`: archive; 204 even when already gone, like HubSpot.
pub async fn archive_object(
    State(portal): State<Arc<Portal>>,
    Path((ty, raw_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ty = object_type(&ty)?;
    if let Ok(id) = raw_id.parse() {
        portal.store().archive(ty, id);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct AssociationSpec {
    to: AssociationTarget,
    #[serde(default)]
    types: Vec<AssociationTypeSpec>,
}

#[derive(Debug, Deserialize)]
pub struct AssociationTarget {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationTypeSpec {
    #[serde(default)]
    association_category: Option<String>,
    association_type_id: u32,
}

#[derive(Debug, Deserialize)]
pub struct CreateInput {
    #[serde(default)]
    properties: BTreeMap<String, String>,
    #[serde(default)]
    associations: Vec<AssociationSpec>,
}

/// An association to make on create: target type, target id, primary.
type Link = (ObjectType, u64, bool);

/// Validate one create input fully (properties and association targets), so a batch either
/// applies completely or not at all.
fn check_create(
    store: &Store,
    ty: ObjectType,
    input: &CreateInput,
) -> Result<(BTreeMap<String, String>, Vec<Link>), ApiError> {
    let props = validate_write(store.property_defs(ty), &input.properties)?;
    let mut links = Vec::new();
    for a in &input.associations {
        for t in &a.types {
            if t.association_category
                .as_deref()
                .is_some_and(|c| c != "HUBSPOT_DEFINED")
            {
                return Err(ApiError::validation(format!(
                    "association category {:?} is not defined for typeId {}",
                    t.association_category, t.association_type_id
                )));
            }
            let (to, primary) =
                association_by_type_id(ty, t.association_type_id).ok_or_else(|| {
                    ApiError::validation(format!(
                        "{} is not a valid association type id for {}",
                        t.association_type_id,
                        ty.upper()
                    ))
                })?;
            let id =
                a.to.id
                    .parse()
                    .ok()
                    .filter(|id| store.live(to, *id).is_some())
                    .ok_or_else(|| {
                        ApiError::validation(format!(
                            "One or more association targets do not exist: {} {}",
                            to.upper(),
                            a.to.id
                        ))
                    })?;
            links.push((to, id, primary));
        }
    }
    Ok((props, links))
}

fn apply_create(
    store: &mut Store,
    ty: ObjectType,
    props: BTreeMap<String, String>,
    links: Vec<Link>,
) -> Result<(u64, Vec<Change>), ApiError> {
    let (id, changes) = store
        .create(ty, props, None)
        .map_err(|e| ApiError::validation(e.to_string()))?;
    for (to, to_id, primary) in links {
        store
            .associate((ty, id), (to, to_id), primary)
            .map_err(|e: StoreError| ApiError::validation(e.to_string()))?;
    }
    Ok((id, changes))
}

/// `POST /crm/v3/objects/{type}`: 201 with the new object.
pub async fn create_object(
    State(portal): State<Arc<Portal>>,
    Path(ty): Path<String>,
    HsJson(input): HsJson<CreateInput>,
) -> Result<Response, ApiError> {
    let ty = object_type(&ty)?;
    let (body, changes) = {
        let mut store = portal.store();
        let (props, links) = check_create(&store, ty, &input)?;
        let (id, changes) = apply_create(&mut store, ty, props, links)?;
        let o = store
            .get(ty, id)
            .ok_or_else(|| ApiError::not_found(ty, &id.to_string()))?;
        (
            render(&store, ty, o, Selection::All, portal.unset_as_null, &[]),
            changes,
        )
    };
    portal.emit(changes, ChangeSource::Api);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn check_batch_size(n: usize) -> Result<(), ApiError> {
    if n > BATCH_MAX {
        return Err(ApiError::validation(format!(
            "Batch input contains {n} inputs; the limit is {BATCH_MAX}"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct IdInput {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReadInput {
    inputs: Vec<IdInput>,
    #[serde(default)]
    properties: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)] // accepted as HubSpot requires it; history is not simulated
    properties_with_history: Vec<String>,
    id_property: Option<String>,
}

/// `POST /crm/v3/objects/{type}/batch/read`: missing ids make it a 207 with `OBJECT_NOT_FOUND`.
pub async fn batch_read(
    State(portal): State<Arc<Portal>>,
    Path(ty): Path<String>,
    RawQuery(query): RawQuery,
    HsJson(input): HsJson<BatchReadInput>,
) -> Result<Response, ApiError> {
    let ty = object_type(&ty)?;
    check_batch_size(input.inputs.len())?;
    let archived = ObjectQuery::parse(query.as_deref()).archived;
    let mut store = portal.store();
    let started = store.now();
    let mut results = Vec::new();
    let mut missing = Vec::new();
    let mut seen = BTreeSet::new();
    for i in &input.inputs {
        match resolve(&store, ty, &i.id, input.id_property.as_deref(), archived) {
            Some(id) if seen.insert(id) => {
                if let Some(o) = store.get(ty, id) {
                    results.push(render(
                        &store,
                        ty,
                        o,
                        Selection::BatchRead(&input.properties),
                        portal.unset_as_null,
                        &[],
                    ));
                }
            }
            Some(_) => {}
            None => missing.push(i.id.clone()),
        }
    }
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![standard_error(
            "OBJECT_NOT_FOUND",
            None,
            format!(
                "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
                ty.upper()
            ),
            json!({ "ids": missing }),
        )]
    };
    let completed = store.now();
    Ok(batch_response(
        results,
        errors,
        started,
        completed,
        StatusCode::OK,
    ))
}

#[derive(Debug, Deserialize)]
pub struct BatchCreateInput {
    inputs: Vec<CreateInput>,
}

/// `POST /crm/v3/objects/{type}/batch/create`: 201; any invalid input refuses the whole batch.
pub async fn batch_create(
    State(portal): State<Arc<Portal>>,
    Path(ty): Path<String>,
    HsJson(input): HsJson<BatchCreateInput>,
) -> Result<Response, ApiError> {
    let ty = object_type(&ty)?;
    check_batch_size(input.inputs.len())?;
    let (response, changes) = {
        let mut store = portal.store();
        let started = store.now();
        let checked = input
            .inputs
            .iter()
            .map(|i| check_create(&store, ty, i))
            .collect::<Result<Vec<_>, _>>()?;
        let mut results = Vec::new();
        let mut changes = Vec::new();
        for (props, links) in checked {
            let (id, c) = apply_create(&mut store, ty, props, links)?;
            changes.extend(c);
            if let Some(o) = store.get(ty, id) {
                results.push(render(
                    &store,
                    ty,
                    o,
                    Selection::All,
                    portal.unset_as_null,
                    &[],
                ));
            }
        }
        let completed = store.now();
        (
            batch_response(results, Vec::new(), started, completed, StatusCode::CREATED),
            changes,
        )
    };
    portal.emit(changes, ChangeSource::Api);
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateInput {
    id: String,
    #[serde(default)]
    properties: BTreeMap<String, String>,
    id_property: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct BatchUpdateInput {
    inputs: Vec<UpdateInput>,
}

/// `POST /crm/v3/objects/{type}/batch/update`: 200, 207 for missing ids; an invalid property or a
/// duplicate id refuses the whole batch with 400, as HubSpot does.
pub async fn batch_update(
    State(portal): State<Arc<Portal>>,
    Path(ty): Path<String>,
    HsJson(input): HsJson<BatchUpdateInput>,
) -> Result<Response, ApiError> {
    let ty = object_type(&ty)?;
    check_batch_size(input.inputs.len())?;
    let (response, changes) = {
        let mut store = portal.store();
        let started = store.now();
        let mut targets = Vec::new();
        let mut missing = Vec::new();
        let mut seen = BTreeSet::new();
        for i in &input.inputs {
            let props = validate_write(store.property_defs(ty), &i.properties)?;
            if !seen.insert((i.id_property.clone(), i.id.clone())) {
                return Err(ApiError::validation(format!(
                    "Duplicate IDs found in batch input: [{}]",
                    i.id
                )));
            }
            match resolve(&store, ty, &i.id, i.id_property.as_deref(), false) {
                Some(id) => targets.push((id, props)),
                None => missing.push(i.id.clone()),
            }
        }
        let mut results = Vec::new();
        let mut changes = Vec::new();
        for (id, props) in targets {
            changes.extend(
                store
                    .update(ty, id, &props)
                    .map_err(|e| ApiError::validation(e.to_string()))?,
            );
            let written: BTreeSet<String> = props.keys().cloned().collect();
            if let Some(o) = store.get(ty, id) {
                results.push(render(
                    &store,
                    ty,
                    o,
                    Selection::Written(&written),
                    portal.unset_as_null,
                    &[],
                ));
            }
        }
        let errors = if missing.is_empty() {
            Vec::new()
        } else {
            vec![standard_error(
                "OBJECT_NOT_FOUND",
                None,
                format!(
                    "Could not update some {} objects, they may be deleted or not exist. Check that ids are valid.",
                    ty.upper()
                ),
                json!({ "ids": missing }),
            )]
        };
        let completed = store.now();
        (
            batch_response(results, errors, started, completed, StatusCode::OK),
            changes,
        )
    };
    portal.emit(changes, ChangeSource::Api);
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct BatchArchiveInput {
    inputs: Vec<IdInput>,
}

/// `POST /crm/v3/objects/{type}/batch/archive`: 204.
pub async fn batch_archive(
    State(portal): State<Arc<Portal>>,
    Path(ty): Path<String>,
    HsJson(input): HsJson<BatchArchiveInput>,
) -> Result<StatusCode, ApiError> {
    let ty = object_type(&ty)?;
    check_batch_size(input.inputs.len())?;
    let mut store = portal.store();
    for i in &input.inputs {
        if let Ok(id) = i.id.parse() {
            store.archive(ty, id);
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
