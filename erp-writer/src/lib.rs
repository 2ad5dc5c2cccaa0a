//! erp-writer: turns `erp.*` commands into ERPNext documents, exactly once (DESIGN §1 step 2,
//! §4, §5). It is the part that must never create a second Sales Order for one deal, whatever
//! fails: every document is found by the HubSpot ID kept in a custom field before it is
//! created, a unique conflict means "it exists", and the Redis lease and done marker only make
//! the common case cheap.
//!
//! # Layout
//! - [`site`]: the ERPNext client plus the site's time zone (ERPNext `modified` is naive local).
//! - [`upsert`]: the find-or-create pattern; [`diff`]: which owned fields differ.
//! - [`customer`], [`contact`], [`sales_order`]: one step each; [`taxes`]: the order's tax rows
//!   from its template (ERPNext does not fill them over REST).
//! - [`sync_deal`], [`updates`]: the commands as plain functions of the site and the payload.
//! - [`handler`]: the runtime handler — done marker, per-company lock and lease, publishing
//!   outcomes with confirms before the ack.
//! - [`setup`]: `erp-writer setup` (custom fields and webhooks); health routes from [`shared::health`] (not ready while ERPNext refuses our credentials).
//! - [`error`]: step failures and their one mapping to transient/permanent.

pub mod contact;
pub mod customer;
pub mod diff;
pub mod error;
pub mod handler;
pub mod locks;
pub mod metrics;
pub mod sales_order;
pub mod setup;
pub mod site;
pub mod sync_deal;
pub mod taxes;
pub mod updates;
pub mod upsert;

use anyhow::Context;
use shared::broker::Broker;
use shared::config::Settings;
use shared::dedup::Dedup;
use shared::erpnext::ErpNextClient;
use shared::names::WorkQueue;
use shared::runtime::Worker;
use tokio_util::sync::CancellationToken;

pub use handler::{ErpWriterHandler, Guards};
pub use site::ErpSite;
pub use sync_deal::apply_sync_deal;

/// The ERPNext site of `settings`.
pub fn site(settings: &Settings) -> anyhow::Result<ErpSite> {
    let client = ErpNextClient::new(&settings.erpnext).context("building the ERPNext client")?;
    Ok(ErpSite::new(client))
}

/// Consume the `erp-writer` queue until `shutdown`, then drain in-flight commands and return.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let site = site(&settings)?;
    // The broker outlives the worker's drain: in-flight commands still publish and ack.
    let broker_stop = CancellationToken::new();
    let broker = Broker::from_settings(&settings, broker_stop.clone());
    let dedup = Dedup::connect(&settings.redis.url, settings.names()).context("Redis URL")?;
    let guards = Guards {
        lease_ttl: settings.redis.lease_ttl,
        done_ttl: settings.redis.done_ttl,
    };
    // Not ready while ERPNext refuses our credentials: every command would dead-letter.
    let erpnext = site.client.clone();
    let check: shared::health::Check = std::sync::Arc::new(move || erpnext.configuration_problem());
    shared::health::spawn(
        settings.worker.metrics_listen,
        broker.clone(),
        Some(check),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(
        erpnext = %site.client.base_url(),
        namespace = settings.amqp.namespace,
        concurrency = settings.worker.concurrency,
        erpnext_max_concurrency = settings.erpnext.max_concurrency,
        "erp-writer starting"
    );
    let handler = ErpWriterHandler::new(site, broker.clone(), dedup, guards);
    let result = Worker::new(
        broker,
        WorkQueue::ErpWriter,
        settings.worker.clone(),
        handler,
    )
    .run(shutdown)
    .await;
    broker_stop.cancel();
    result.context("erp-writer worker")
}

/// `erp-writer setup`: create the custom fields and webhooks; print the table.
pub async fn run_setup(settings: &Settings) -> anyhow::Result<setup::SetupReport> {
    let client = ErpNextClient::new(&settings.erpnext).context("building the ERPNext client")?;
    let report = setup::setup(&client, settings).await?;
    Ok(report)
}
