//! The simulator's own control API under `/_sim/` (no auth, never counted, never faulted): reset,
//! seeding objects and associations, reading and editing objects as a HubSpot user would, call
//! statistics, and changing faults, rate limits and webhook delivery at runtime. The in-process
//! [`super::HubSpotSimHandle`] calls the same functions.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::{ConfigError, RateLimitConfig, WebhookUpdate};
use super::model::{ObjectType, has_primary};
use super::portal::Portal;
use super::state::{Change, ObjectView, StoreError};
use super::webhooks::ChangeSource;
use crate::sim::faults::FaultConfig;

/// Objects and associations to load (`POST /_sim/seed`, `--seed-data`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Seed {
    pub objects: Vec<SeedObject>,
    pub associations: Vec<SeedAssociation>,
    /// Send webhooks for these creations (`deal.creation`, …) as a HubSpot import would.
    pub emit_webhooks: bool,
}

impl Seed {
    /// Read a JSON seed file (`hubspot-sim --seed-data`).
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Json {
            path: path.display().to_string(),
            source,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedObject {
    /// A name for this object that `associations` can use (`"acme"`), answered with its id.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(rename = "type")]
    pub object_type: ObjectType,
    /// A fixed id (numeric string); absent: the next free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Stored as given, without validation; `createdate`/`hs_lastmodifieddate` set the timestamps.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAssociation {
    /// A `ref` of this seed, or `type:id` of an existing object (`companies:9911223344`).
    pub from: String,
    pub to: String,
    /// The "Primary" label; absent: primary if `from` has no primary of that type yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    /// `ref` → id.
    pub ids: BTreeMap<String, String>,
    /// Every created object in seed order.
    pub objects: Vec<SeededObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeededObject {
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    #[serde(rename = "type")]
    pub object_type: ObjectType,
    pub id: String,
}

/// Why an admin request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("seed object id {0:?} is not numeric")]
    BadId(String),
    #[error("duplicate seed ref {0:?}")]
    DuplicateRef(String),
    #[error("{0:?} is neither a ref of this seed nor `type:id`")]
    UnknownRef(String),
    #[error("{0}")]
    Config(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match self {
            AdminError::Store(StoreError::NotFound(..)) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// Load a seed. Objects first, then associations; not atomic — a failing association leaves the
/// objects before it in place (the error names it).
pub fn seed(portal: &Portal, seed: Seed) -> Result<SeedResult, AdminError> {
    let mut result = SeedResult::default();
    let mut refs: BTreeMap<String, (ObjectType, u64)> = BTreeMap::new();
    let mut changes: Vec<Change> = Vec::new();
    {
        let mut store = portal.store();
        for o in seed.objects {
            let id = match &o.id {
                Some(raw) => Some(
                    raw.trim()
                        .parse::<u64>()
                        .map_err(|_| AdminError::BadId(raw.clone()))?,
                ),
                None => None,
            };
            if let Some(r) = &o.reference
                && refs.contains_key(r)
            {
                return Err(AdminError::DuplicateRef(r.clone()));
            }
            let (id, c) = store.create(o.object_type, o.properties, id)?;
            changes.extend(c);
            if let Some(r) = &o.reference {
                refs.insert(r.clone(), (o.object_type, id));
                result.ids.insert(r.clone(), id.to_string());
            }
            result.objects.push(SeededObject {
                reference: o.reference,
                object_type: o.object_type,
                id: id.to_string(),
            });
        }
        for a in seed.associations {
            let from = resolve_ref(&refs, &a.from)?;
            let to = resolve_ref(&refs, &a.to)?;
            let primary = a.primary.unwrap_or_else(|| {
                has_primary(from.0, to.0) && !store.has_primary_towards(from.0, from.1, to.0)
            });
            store.associate(from, to, primary)?;
        }
    }
    if seed.emit_webhooks {
        portal.emit(changes, ChangeSource::Import);
    }
    Ok(result)
}

fn resolve_ref(
    refs: &BTreeMap<String, (ObjectType, u64)>,
    s: &str,
) -> Result<(ObjectType, u64), AdminError> {
    if let Some(k) = refs.get(s) {
        return Ok(*k);
    }
    let (ty, id) = s
        .split_once(':')
        .ok_or_else(|| AdminError::UnknownRef(s.to_string()))?;
    let ty: ObjectType = ty
        .parse()
        .map_err(|_| AdminError::UnknownRef(s.to_string()))?;
    let id = id
        .parse()
        .map_err(|_| AdminError::UnknownRef(s.to_string()))?;
    Ok((ty, id))
}

/// Change properties as a user in the HubSpot UI would (no API validation, no budget); the
/// webhooks fire with `changeSource: CRM_UI`. `hs_lastmodifieddate` may be set explicitly.
pub fn ui_update(
    portal: &Portal,
    ty: ObjectType,
    id: u64,
    properties: &BTreeMap<String, String>,
) -> Result<ObjectView, AdminError> {
    let (view, changes) = {
        let mut store = portal.store();
        let changes = store.update(ty, id, properties)?;
        (
            store.view(ty, id).ok_or(StoreError::NotFound(ty, id))?,
            changes,
        )
    };
    portal.emit(changes, ChangeSource::CrmUi);
    Ok(view)
}

/// A user deleting an object in the UI: archived, and a `<type>.deletion` event.
pub fn ui_delete(portal: &Portal, ty: ObjectType, id: u64) -> Result<(), AdminError> {
    let at_ms = {
        let mut store = portal.store();
        if !store.archive(ty, id) {
            return Err(StoreError::NotFound(ty, id).into());
        }
        store.now().timestamp_millis()
    };
    portal.emit(vec![Change::Deleted { ty, id, at_ms }], ChangeSource::CrmUi);
    Ok(())
}

/// A user restoring a deleted object from the recycle bin: live again, and `<type>.restore`.
pub fn ui_restore(portal: &Portal, ty: ObjectType, id: u64) -> Result<(), AdminError> {
    let at_ms = {
        let mut store = portal.store();
        if !store.restore(ty, id) {
            return Err(StoreError::NotFound(ty, id).into());
        }
        store.now().timestamp_millis()
    };
    portal.emit(
        vec![Change::Restored { ty, id, at_ms }],
        ChangeSource::CrmUi,
    );
    Ok(())
}

/// A user associating two records in the UI: `<from type>.associationChange`.
pub fn ui_associate(
    portal: &Portal,
    from: (ObjectType, u64),
    to: (ObjectType, u64),
) -> Result<(), AdminError> {
    let at_ms = {
        let mut store = portal.store();
        store.associate(from, to, false)?;
        store.now().timestamp_millis()
    };
    portal.emit(
        vec![Change::Associated {
            from,
            to,
            removed: false,
            at_ms,
        }],
        ChangeSource::CrmUi,
    );
    Ok(())
}

/// A user merging `merged` into `primary` in the UI: `primary` keeps its ID and takes over the
/// other record's associations, the other is archived, and a `<type>.merge` event names both.
pub fn ui_merge(
    portal: &Portal,
    ty: ObjectType,
    primary: u64,
    merged: u64,
) -> Result<(), AdminError> {
    let at_ms = {
        let mut store = portal.store();
        store
            .live(ty, primary)
            .ok_or(StoreError::NotFound(ty, primary))?;
        store
            .live(ty, merged)
            .ok_or(StoreError::NotFound(ty, merged))?;
        for to in [
            ObjectType::Deals,
            ObjectType::Companies,
            ObjectType::Contacts,
        ] {
            for (other, _) in store.associated(ty, merged, to) {
                if super::model::can_associate(ty, to) {
                    store.associate((ty, primary), (to, other), false)?;
                }
            }
        }
        store.archive(ty, merged);
        store.now().timestamp_millis()
    };
    portal.emit(
        vec![Change::Merged {
            ty,
            primary,
            merged: vec![merged],
            at_ms,
        }],
        ChangeSource::CrmUi,
    );
    Ok(())
}

/// The admin router; its state is the portal.
pub fn router() -> Router<Arc<Portal>> {
    Router::new()
        .route("/_sim/reset", post(reset))
        .route("/_sim/seed", post(seed_route))
        .route("/_sim/objects/{object_type}", get(list_objects))
        .route(
            "/_sim/objects/{object_type}/{object_id}",
            get(get_object).patch(patch_object),
        )
        .route("/_sim/calls", get(calls))
        .route("/_sim/calls/reset", post(reset_calls))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route(
            "/_sim/rate_limits",
            get(get_rate_limits).put(put_rate_limits),
        )
        .route("/_sim/webhooks", get(get_webhooks).put(put_webhooks))
        .route("/_sim/webhooks/deliveries", get(deliveries))
        .route("/_sim/webhooks/events", get(events))
}

async fn reset(State(p): State<Arc<Portal>>) -> StatusCode {
    p.reset();
    StatusCode::NO_CONTENT
}

async fn seed_route(
    State(p): State<Arc<Portal>>,
    Json(s): Json<Seed>,
) -> Result<Json<SeedResult>, AdminError> {
    seed(&p, s).map(Json)
}

fn parse_type(raw: &str) -> Result<ObjectType, AdminError> {
    raw.parse()
        .map_err(|e: super::model::UnknownObjectType| AdminError::Config(e.to_string()))
}

async fn list_objects(
    State(p): State<Arc<Portal>>,
    Path(ty): Path<String>,
) -> Result<Json<Vec<ObjectView>>, AdminError> {
    let ty = parse_type(&ty)?;
    let store = p.store();
    Ok(Json(
        store
            .objects(ty)
            .filter_map(|o| store.view(ty, o.id))
            .collect(),
    ))
}

async fn get_object(
    State(p): State<Arc<Portal>>,
    Path((ty, id)): Path<(String, String)>,
) -> Result<Json<ObjectView>, AdminError> {
    let ty = parse_type(&ty)?;
    let id: u64 = id.parse().map_err(|_| AdminError::BadId(id.clone()))?;
    p.store()
        .view(ty, id)
        .map(Json)
        .ok_or(AdminError::Store(StoreError::NotFound(ty, id)))
}

#[derive(Debug, Deserialize)]
struct PatchBody {
    properties: BTreeMap<String, String>,
}

async fn patch_object(
    State(p): State<Arc<Portal>>,
    Path((ty, id)): Path<(String, String)>,
    Json(body): Json<PatchBody>,
) -> Result<Json<ObjectView>, AdminError> {
    let ty = parse_type(&ty)?;
    let id: u64 = id.parse().map_err(|_| AdminError::BadId(id.clone()))?;
    ui_update(&p, ty, id, &body.properties).map(Json)
}

async fn calls(State(p): State<Arc<Portal>>) -> Json<super::portal::CallStats> {
    Json(p.call_stats())
}

async fn reset_calls(State(p): State<Arc<Portal>>) -> StatusCode {
    p.reset_calls();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(p): State<Arc<Portal>>) -> Json<FaultConfig> {
    Json(p.faults.config())
}

async fn put_faults(State(p): State<Arc<Portal>>, Json(cfg): Json<FaultConfig>) -> StatusCode {
    p.faults.set(cfg);
    StatusCode::NO_CONTENT
}

async fn get_rate_limits(State(p): State<Arc<Portal>>) -> Json<RateLimitConfig> {
    Json(p.limiter().config().clone())
}

async fn put_rate_limits(
    State(p): State<Arc<Portal>>,
    Json(cfg): Json<RateLimitConfig>,
) -> StatusCode {
    p.set_rate_limits(cfg);
    StatusCode::NO_CONTENT
}

async fn get_webhooks(State(p): State<Arc<Portal>>) -> Json<serde_json::Value> {
    let mut cfg = serde_json::to_value(p.webhooks.config()).unwrap_or_default();
    // The secret is the key of the signatures: never echoed.
    cfg["client_secret"] = json!("<redacted>");
    cfg["pending"] = json!(p.webhooks.pending());
    Json(cfg)
}

async fn put_webhooks(
    State(p): State<Arc<Portal>>,
    Json(update): Json<WebhookUpdate>,
) -> Result<StatusCode, AdminError> {
    p.webhooks
        .update(|cfg| cfg.apply(update))
        .map_err(|e| AdminError::Config(e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn deliveries(State(p): State<Arc<Portal>>) -> Json<Vec<super::webhooks::Delivery>> {
    Json(p.webhooks.deliveries())
}

async fn events(State(p): State<Arc<Portal>>) -> Json<Vec<shared::events::HubSpotEvent>> {
    Json(p.webhooks.emitted())
}
