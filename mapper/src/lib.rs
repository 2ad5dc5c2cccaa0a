//! mapper: where sales language becomes ledger language (DESIGN §1, §2, §5, §8). It consumes
//! every event — HubSpot webhooks, ERPNext webhooks, erp-writer outcomes — reads the current
//! state where the event alone is not enough, and publishes exact commands for the writers:
//! `erp.sync_deal`, `erp.update_customer`, `erp.update_contact`, `crm.update_company`,
//! `crm.update_deal`. It never writes to HubSpot or ERPNext itself.
//!
//! # Layout
//! - [`handler`]: the runtime handler — duplicate check, routing, publishing, the answer.
//! - [`deal`]: `hubspot.deal.*` (trigger, sync, needs-review); [`updates`]: company/contact changes;
//!   [`invoice`]: `erpnext.*` (invoice status, new Customers); [`outcomes`]: `outcome.erp.*`.
//! - [`map`]: the mapping as pure functions; [`snapshot`]: reading HubSpot in ≤ 4 calls per deal;
//!   [`catalog`]: which ERPNext Items exist; [`markers`]: which records are already synced.
//! - [`emit`]: decisions and confirmed publishing; [`error`]: transient vs permanent.
//! - [`reconcile`]: `mapper reconcile [--fix]`, won deals vs Sales Orders.
//! - [`metrics`]; `/healthz`, `/readyz`, `/metrics` come from [`shared::health`].

pub mod catalog;
pub mod deal;
pub mod emit;
pub mod error;
pub mod handler;
pub mod invoice;
pub mod map;
pub mod markers;
pub mod metrics;
pub mod outcomes;
pub mod reconcile;
pub mod snapshot;
pub mod updates;

use anyhow::Context as _;
use shared::broker::Broker;
use shared::budget::RateBudget;
use shared::config::Settings;
use shared::dedup::Dedup;
use shared::erpnext::ErpNextClient;
use shared::hubspot::HubSpotClient;
use shared::names::WorkQueue;
use shared::runtime::Worker;
use tokio_util::sync::CancellationToken;

pub use handler::{MapperHandler, Services};

/// The HubSpot client on the shared rate budget.
pub fn hubspot_client(settings: &Settings) -> anyhow::Result<HubSpotClient> {
    let budget_conn = shared::redis_conn::connect(&settings.redis.url).context("redis.url")?;
    let budget = RateBudget::new(
        budget_conn,
        settings.names(),
        settings.hubspot.portal_id.clone(),
        &settings.hubspot.budget,
    );
    HubSpotClient::from_config(&settings.hubspot, Some(budget))
        .context("building the HubSpot client")
}

/// Everything the flows need, from `settings`. HubSpot credentials are required; ERPNext ones
/// are optional (without them items are not verified and invoices must carry `hubspot_deal_id`).
pub fn services(settings: &Settings) -> anyhow::Result<Services> {
    let names = settings.names();
    let hubspot = hubspot_client(settings)?;
    let erpnext = match ErpNextClient::new(&settings.erpnext) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "no ERPNext client: item codes are not verified and invoices must carry hubspot_deal_id");
            None
        }
    };
    let tz = settings.erpnext.time_zone.parse().map_err(|_| {
        anyhow::anyhow!(
            "erpnext.time_zone {:?} is not an IANA time zone",
            settings.erpnext.time_zone
        )
    })?;
    let dedup = Dedup::connect(&settings.redis.url, names).context("redis.url")?;
    let cfg = settings.mapping.clone();
    let catalog = catalog::Catalog::new(if cfg.items.verify_in_erpnext {
        erpnext.clone()
    } else {
        None
    });
    Ok(Services {
        app_url: cfg
            .writeback
            .erpnext_app_url
            .clone()
            .unwrap_or_else(|| settings.erpnext.base_url.clone()),
        cfg,
        tz,
        reader: snapshot::Reader::new(hubspot),
        catalog,
        erpnext,
        markers: markers::Markers::new(dedup, settings.redis.done_ttl),
    })
}

/// Consume the `mapper` queue until `shutdown`, then drain in-flight messages and return.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let services = services(&settings)?;
    // The broker outlives the worker's drain: in-flight messages still publish and ack.
    let broker_stop = CancellationToken::new();
    let broker = Broker::from_settings(&settings, broker_stop.clone());
    let dedup = Dedup::connect(&settings.redis.url, settings.names()).context("redis.url")?;
    shared::health::spawn(
        settings.worker.metrics_listen,
        broker.clone(),
        None,
        shutdown.clone(),
    )
    .await?;
    tracing::info!(
        namespace = settings.amqp.namespace,
        hubspot = %settings.hubspot.base_url,
        erpnext_lookups = services.erpnext.is_some(),
        trigger_stages = ?settings.mapping.trigger.stages,
        "mapper starting"
    );
    let handler = MapperHandler::new(
        services,
        dedup,
        settings.redis.seen_ttl,
        emit::Emitter::new(broker.clone()),
    );
    let result = Worker::new(broker, WorkQueue::Mapper, settings.worker.clone(), handler)
        .run(shutdown)
        .await;
    broker_stop.cancel();
    result.context("mapper worker")
}

/// `mapper reconcile [--fix]`: compare, print, and with `fix` enqueue the missing deals.
pub async fn run_reconcile(settings: &Settings, fix: bool) -> anyhow::Result<reconcile::Report> {
    let hubspot = hubspot_client(settings)?;
    let erpnext =
        ErpNextClient::new(&settings.erpnext).context("reconcile reads ERPNext's Sales Orders")?;
    let stop = CancellationToken::new();
    let broker = if fix {
        let b = Broker::from_settings(settings, stop.clone());
        if !b.wait_ready(std::time::Duration::from_secs(15)).await {
            stop.cancel();
            anyhow::bail!(
                "cannot reach the broker at {}",
                shared::config::redact_url(&settings.amqp.url)
            );
        }
        Some(b)
    } else {
        None
    };
    let result = reconcile::reconcile(
        &hubspot,
        &erpnext,
        &settings.mapping.trigger,
        &settings.hubspot.portal_id,
        broker.as_ref(),
    )
    .await;
    stop.cancel();
    Ok(result?)
}
