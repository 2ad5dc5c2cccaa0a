//! crm-writer: writes ERPNext facts back onto HubSpot companies and deals (DESIGN §1 steps 3–4):
//! the ERPNext Customer ID on the company; the Sales Order, its link, the invoice status and the
//! sync status on the deal — so sales sees on the deal that the order exists and whether the
//! invoice is paid.
//!
//! Three promises shape it:
//! - **Inside the rate budget** (DESIGN §6): updates are coalesced per object and sent as
//!   `batch/update` calls of up to 100 objects; every call is paid for from the portal's budget
//!   shared in Redis with the mapper; a 429 slows every process down.
//! - **Never an older fact over a newer one** (DESIGN §5): each property remembers the
//!   `source_modified` last applied; older updates are skipped. The invoice status also carries
//!   its source time in HubSpot, so it never moves backwards even when Redis forgets.
//! - **Ack after the effect** (DESIGN §3): a message is acked only after the HubSpot call that
//!   carried it succeeded; a failure fails exactly the messages of the objects it concerns.
//!
//! # Layout
//! - [`handler`]: decodes `crm.update_company` / `crm.update_deal`, submits to a batcher, waits.
//! - [`coalesce`]: the per-object-type batcher (merge, window, batch size, in-flight objects).
//! - [`ordering`]: the Redis guard (leases + compare-and-set of applied times).
//! - [`versions`]: source times kept in HubSpot beside the values they date (the invoice status).
//! - [`apply`]: a batch → HubSpot calls (PATCH / batch update, 207 isolation, bisection).
//! - [`error`]: HubSpot errors → transient / permanent.
//! - [`setup`]: `crm-writer setup` (custom properties); [`metrics`]; health routes from [`shared::health`].

pub mod apply;
pub mod coalesce;
pub mod error;
pub mod handler;
pub mod metrics;
pub mod ordering;
pub mod setup;
pub mod versions;

use std::sync::Arc;

use anyhow::Context;
use shared::broker::Broker;
use shared::budget::RateBudget;
use shared::config::{Settings, WorkerConfig};
use shared::hubspot::{HubSpotClient, ObjectType};
use shared::mapping::WritebackConfig;
use shared::names::WorkQueue;
use shared::runtime::Worker;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use coalesce::{Applied, Batcher, CoalesceConfig};
pub use handler::CrmWriterHandler;
pub use ordering::OrderingGuard;
pub use setup::SetupReport;
pub use versions::SourceVersions;

/// How long the batchers may take to stop once the worker has drained (see [`run`]).
const BATCHER_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The HubSpot client of `settings`, paying every call from the portal's shared Redis budget.
pub fn hubspot_client(settings: &Settings) -> anyhow::Result<HubSpotClient> {
    let budget = RateBudget::connect(
        &settings.redis.url,
        settings.names(),
        settings.hubspot.portal_id.clone(),
        shared::budget::BudgetLimits::from_config(&settings.hubspot.budget),
    )
    .context("redis.url")?;
    HubSpotClient::from_config(&settings.hubspot, Some(budget))
        .context("building the HubSpot client")
}

/// The consumer runtime settings crm-writer runs with: `crm_writer.in_flight` as prefetch and
/// concurrency (see [`coalesce`] for why), everything else from `[worker]`.
pub fn worker_config(settings: &Settings) -> WorkerConfig {
    WorkerConfig {
        prefetch: settings.crm_writer.in_flight,
        concurrency: usize::from(settings.crm_writer.in_flight),
        ..settings.worker.clone()
    }
}

/// Consume the `crm-writer` queue until `shutdown`, then write what is pending, ack, and return.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = hubspot_client(&settings)?;
    let guard = Arc::new(
        OrderingGuard::connect(
            &settings.redis.url,
            settings.names(),
            settings.redis.lease_ttl,
            settings.crm_writer.ordering_ttl,
        )
        .context("redis.url")?,
    );
    // The broker outlives the worker's drain: in-flight messages are still acked.
    let broker_stop = CancellationToken::new();
    let broker = Broker::from_settings(&settings, broker_stop.clone());
    shared::health::spawn(
        settings.worker.metrics_listen,
        broker.clone(),
        None,
        shutdown.clone(),
    )
    .await?;
    let cfg = CoalesceConfig {
        window: settings.crm_writer.coalesce_window,
        max_batch: settings
            .crm_writer
            .max_batch
            .clamp(1, shared::hubspot::BATCH_LIMIT),
        parallel: settings.crm_writer.parallel_batches.max(1),
    };
    let (handler, batchers) =
        start_batchers(&cfg, client, Some(guard), &settings.mapping.writeback);
    tracing::info!(
        namespace = settings.amqp.namespace,
        hubspot = %settings.hubspot.base_url,
        in_flight = settings.crm_writer.in_flight,
        window = ?cfg.window,
        max_batch = cfg.max_batch,
        "crm-writer starting"
    );
    let result = Worker::new(
        broker,
        WorkQueue::CrmWriter,
        worker_config(&settings),
        handler,
    )
    .run(shutdown)
    .await;
    // The worker (and with it the handler's batcher handles) is gone: the batchers write what
    // is left and stop. After a clean drain nothing is left (every handler waited for its
    // write), so they stop at once; only deliveries abandoned after `worker.drain_timeout` still
    // hold handles, and waiting for those would add to the drain the operator bounded. Hence a
    // short wait (their messages are redelivered).
    let batchers = async {
        for task in batchers {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a batcher task failed");
            }
        }
    };
    if tokio::time::timeout(
        BATCHER_STOP_WAIT.min(settings.worker.drain_timeout),
        batchers,
    )
    .await
    .is_err()
    {
        tracing::warn!(
            "batchers still writing for deliveries abandoned by the drain; stopping without them"
        );
    }
    broker_stop.cancel();
    result.context("crm-writer worker")
}

/// The handler and its two batchers (companies, deals); the tasks end once the handler is
/// dropped and what was pending is written.
pub fn start_batchers(
    cfg: &CoalesceConfig,
    client: HubSpotClient,
    guard: Option<Arc<OrderingGuard>>,
    writeback: &WritebackConfig,
) -> (CrmWriterHandler, Vec<JoinHandle<()>>) {
    let (companies, companies_task) = Batcher::start(
        ObjectType::Companies,
        cfg.clone(),
        client.clone(),
        guard.clone(),
        SourceVersions::for_object(ObjectType::Companies, writeback),
    );
    let (deals, deals_task) = Batcher::start(
        ObjectType::Deals,
        cfg.clone(),
        client,
        guard,
        SourceVersions::for_object(ObjectType::Deals, writeback),
    );
    (
        CrmWriterHandler::new(companies, deals),
        vec![companies_task, deals_task],
    )
}

/// `crm-writer setup`: create the custom properties; the report says what was created.
pub async fn run_setup(settings: &Settings) -> anyhow::Result<SetupReport> {
    let client = hubspot_client(settings)?;
    setup::setup(&client, &settings.mapping.writeback)
        .await
        .context("creating the HubSpot properties")
}
