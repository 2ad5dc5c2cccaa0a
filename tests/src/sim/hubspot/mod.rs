//! A stateful, in-memory HubSpot portal faithful to `tests/contracts/hubspot`: the CRM objects,
//! search, associations v4, properties and pipelines endpoints with HubSpot's status codes and
//! error bodies; per-token rate limits with 429s; signed webhook batches with retries; seeded
//! fault injection; and a `/_sim/` admin API. Tests start it in-process on port 0
//! ([`HubSpotSim::start`]); the `hubspot-sim` binary serves the same thing for demos.
//!
//! # Layout
//! - [`config`]: tokens, budgets, webhook subscriptions and delivery, faults.
//! - [`model`]: object types and their spellings, association type ids, timestamps.
//! - [`state`]: objects, associations, property definitions; mutations report [`state::Change`]s.
//! - [`portal`]: the shared state of a running simulator and cross-cutting operations.
//! - [`gate`]: counting, faults, auth and rate limit in front of every API route.
//! - [`objects`], [`search`], [`associations`], [`properties`], [`pipelines`]: the endpoints.
//! - [`rate_limit`], [`webhooks`], [`admin`], [`error`]: as named.

pub mod admin;
pub mod associations;
pub mod config;
pub mod error;
pub mod gate;
pub mod model;
pub mod objects;
pub mod pipelines;
pub mod portal;
pub mod properties;
pub mod rate_limit;
pub mod search;
pub mod state;
pub mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

pub use admin::{AdminError, Seed, SeedAssociation, SeedObject, SeedResult, SeededObject};
pub use config::{HubSpotSimConfig, RateLimitConfig, WebhookConfig, WebhookUpdate};
pub use model::ObjectType;
pub use portal::CallStats;
pub use state::ObjectView;
pub use webhooks::Delivery;

use crate::sim::faults::FaultConfig;
use portal::Portal;

/// The HubSpot API router: every CRM route behind the gate, then the admin routes.
fn router(portal: Arc<Portal>) -> Router {
    let api = Router::new()
        .route(
            "/crm/v3/objects/{object_type}/{object_id}",
            get(objects::get_object)
                .patch(objects::update_object)
                .delete(objects::archive_object),
        )
        .route(
            "/crm/v3/objects/{object_type}",
            post(objects::create_object),
        )
        .route("/crm/v3/objects/{object_type}/search", post(search::search))
        .route(
            "/crm/v3/objects/{object_type}/batch/read",
            post(objects::batch_read),
        )
        .route(
            "/crm/v3/objects/{object_type}/batch/create",
            post(objects::batch_create),
        )
        .route(
            "/crm/v3/objects/{object_type}/batch/update",
            post(objects::batch_update),
        )
        .route(
            "/crm/v3/objects/{object_type}/batch/archive",
            post(objects::batch_archive),
        )
        .route(
            "/crm/v4/associations/{from}/{to}/batch/read",
            post(associations::batch_read),
        )
        .route(
            "/crm/v3/properties/{object_type}",
            get(properties::list).post(properties::create),
        )
        .route(
            "/crm/v3/properties/{object_type}/batch/create",
            post(properties::batch_create),
        )
        .route(
            "/crm/v3/properties/{object_type}/{property_name}",
            get(properties::get_one),
        )
        .route("/crm/v3/pipelines/{object_type}", get(pipelines::list))
        .fallback(gate::not_found)
        .layer(axum::middleware::from_fn_with_state(
            portal.clone(),
            gate::gate,
        ));
    Router::new()
        .merge(admin::router())
        .merge(api)
        .with_state(portal)
}

/// Entry point.
#[derive(Debug)]
pub struct HubSpotSim;

impl HubSpotSim {
    /// Serve a new portal on `listener` (bind `127.0.0.1:0` in tests) until the handle shuts it
    /// down or is dropped.
    pub fn start(
        config: HubSpotSimConfig,
        listener: TcpListener,
    ) -> std::io::Result<HubSpotSimHandle> {
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (outbox, rx) = webhooks::Webhooks::new(config.webhooks.clone());
        let portal = Arc::new(Portal::new(&config, outbox, cancel.clone()));
        tracker.spawn(webhooks::run(
            portal.clone(),
            rx,
            tracker.clone(),
            cancel.clone(),
        ));
        let app = router(portal.clone());
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "hubspot simulator server failed");
            }
        });
        Ok(HubSpotSimHandle {
            addr,
            portal,
            cancel,
            tracker,
            server: Some(server),
        })
    }
}

/// A running simulator. Dropping it stops the server (without waiting).
#[derive(Debug)]
pub struct HubSpotSimHandle {
    addr: SocketAddr,
    portal: Arc<Portal>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    server: Option<JoinHandle<()>>,
}

impl HubSpotSimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, to use as the client's HubSpot base URL.
    pub fn base_url(&self) -> Url {
        // A socket address always forms a valid http URL.
        Url::parse(&format!("http://{}", self.addr)).unwrap_or_else(|_| unreachable_url())
    }

    /// Load objects and associations (no webhooks unless `seed.emit_webhooks`).
    pub fn seed(&self, seed: Seed) -> Result<SeedResult, AdminError> {
        admin::seed(&self.portal, seed)
    }

    /// Create one object with the given properties (stored as given); its id.
    pub fn create_object(
        &self,
        ty: ObjectType,
        properties: &[(&str, &str)],
    ) -> Result<String, AdminError> {
        let properties = properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (id, _) = self.portal.store().create(ty, properties, None)?;
        Ok(id.to_string())
    }

    /// Associate two objects (`primary`: the "Primary" label where the pair has one).
    pub fn associate(
        &self,
        from: (ObjectType, &str),
        to: (ObjectType, &str),
        primary: bool,
    ) -> Result<(), AdminError> {
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| AdminError::BadId(s.to_string()))
        };
        self.portal
            .store()
            .associate((from.0, parse(from.1)?), (to.0, parse(to.1)?), primary)?;
        Ok(())
    }

    /// Change properties as a HubSpot user (fires webhooks for subscribed properties).
    pub fn update_as_user(
        &self,
        ty: ObjectType,
        id: &str,
        properties: &[(&str, &str)],
    ) -> Result<ObjectView, AdminError> {
        let id: u64 = id.parse().map_err(|_| AdminError::BadId(id.to_string()))?;
        let props: BTreeMap<String, String> = properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        admin::ui_update(&self.portal, ty, id, &props)
    }

    /// A user deleting an object in the UI (`<type>.deletion` when subscribed).
    pub fn delete_as_user(&self, ty: ObjectType, id: &str) -> Result<(), AdminError> {
        let id: u64 = id.parse().map_err(|_| AdminError::BadId(id.to_string()))?;
        admin::ui_delete(&self.portal, ty, id)
    }

    /// A user restoring a deleted object (`<type>.restore` when subscribed).
    pub fn restore_as_user(&self, ty: ObjectType, id: &str) -> Result<(), AdminError> {
        let id: u64 = id.parse().map_err(|_| AdminError::BadId(id.to_string()))?;
        admin::ui_restore(&self.portal, ty, id)
    }

    /// A user associating two records (`<from type>.associationChange` when subscribed).
    pub fn associate_as_user(
        &self,
        from: (ObjectType, &str),
        to: (ObjectType, &str),
    ) -> Result<(), AdminError> {
        let parse = |id: &str| id.parse().map_err(|_| AdminError::BadId(id.to_string()));
        admin::ui_associate(&self.portal, (from.0, parse(from.1)?), (to.0, parse(to.1)?))
    }

    /// A user merging `merged` into `primary` in the UI (`<type>.merge` when subscribed).
    pub fn merge_as_user(
        &self,
        ty: ObjectType,
        primary: &str,
        merged: &str,
    ) -> Result<(), AdminError> {
        let parse = |id: &str| id.parse().map_err(|_| AdminError::BadId(id.to_string()));
        admin::ui_merge(&self.portal, ty, parse(primary)?, parse(merged)?)
    }

    /// One object with all its properties and associations (archived ones too).
    pub fn object(&self, ty: ObjectType, id: &str) -> Option<ObjectView> {
        let id: u64 = id.parse().ok()?;
        self.portal.store().view(ty, id)
    }

    /// Every object of a type, in id order.
    pub fn objects(&self, ty: ObjectType) -> Vec<ObjectView> {
        let store = self.portal.store();
        store
            .objects(ty)
            .filter_map(|o| store.view(ty, o.id))
            .collect()
    }

    pub fn calls(&self) -> CallStats {
        self.portal.call_stats()
    }

    pub fn reset_calls(&self) {
        self.portal.reset_calls();
    }

    pub fn set_faults(&self, faults: FaultConfig) {
        self.portal.faults.set(faults);
    }

    pub fn set_rate_limits(&self, limits: RateLimitConfig) {
        self.portal.set_rate_limits(limits);
    }

    pub fn set_tokens(&self, tokens: Vec<String>) {
        self.portal.set_tokens(tokens);
    }

    pub fn set_webhooks(&self, update: WebhookUpdate) -> Result<(), AdminError> {
        self.portal
            .webhooks
            .update(|cfg| cfg.apply(update))
            .map_err(|e| AdminError::Config(e.to_string()))
    }

    pub fn webhook_config(&self) -> WebhookConfig {
        self.portal.webhooks.config()
    }

    /// Every webhook event emitted, in order.
    pub fn webhook_events(&self) -> Vec<shared::events::HubSpotEvent> {
        self.portal.webhooks.emitted()
    }

    /// Every delivery attempt.
    pub fn webhook_deliveries(&self) -> Vec<Delivery> {
        self.portal.webhooks.deliveries()
    }

    /// Event deliveries not yet finished (delivered or given up).
    pub fn webhooks_pending(&self) -> usize {
        self.portal.webhooks.pending()
    }

    /// Wait until every queued webhook is delivered or given up; `false` on timeout.
    pub async fn wait_webhooks_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.webhooks_pending() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Empty the portal (see `POST /_sim/reset`).
    pub fn reset(&self) {
        self.portal.reset();
    }

    /// Stop serving, abandon pending webhook retries and wait for every task to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.tracker.close();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.tracker.wait().await;
    }
}

impl Drop for HubSpotSimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cold]
fn unreachable_url() -> Url {
    panic!("a socket address did not form a URL")
}
