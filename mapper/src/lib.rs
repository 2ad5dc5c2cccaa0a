//! mapper: where sales language becomes ledger language (DESIGN §1, §2, §5, §8). It consumes
//! every event — HubSpot webhooks, ERPNext webhooks, erp-writer outcomes — reads the current
//! state where the event alone is not enough, and publishes exact commands for the writers:
//! `erp.sync_deal`, `erp.update_customer`, `erp.update_contact`, `crm.update_company`,
//! `crm.update_deal`. It never writes to HubSpot or ERPNext itself.
//!
//! # Layout
//! - [`handler`]: the runtime handler — duplicate check, routing, publishing, the answer.
//! - [`deal`]: `hubspot.deal.*` (trigger, sync, needs-review); [`updates`]: company/contact changes;
//!   [`invoice`]: `erpnext.*` (invoice status, new Customers); [`sales_order`]: cancelled and
//!   amended orders; [`outcomes`]: `outcome.erp.*`.
//! - [`map`]: the mapping as pure functions; [`snapshot`]: reading HubSpot in ≤ 4 calls per deal;
//!   [`catalog`]: which ERPNext Items exist; [`markers`]: which records are already synced.
//! - [`emit`]: decisions and confirmed publishing; [`error`]: transient vs permanent.
//! - [`reconcile`]: `mapper reconcile [--fix]`, won deals vs Sales Orders, plus one sweep.
//! - [`sweep`]: ERPNext's invoices and orders changed since the [`watermark`] vs the deals'
//!   HubSpot values, so no fact depends on one webhook delivery; [`sweeper`]: runs it every
//!   `reconcile.interval` in one replica at a time.
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
pub mod sales_order;
pub mod snapshot;
pub mod sweep;
pub mod sweeper;
pub mod updates;
pub mod watermark;

use anyhow::Context as _;
use shared::broker::Broker;
use shared::budget::RateBudget;
use shared::config::{Settings, WorkerConfig};
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
    let tz = time_zone(settings)?;
    let dedup = Dedup::connect(&settings.redis.url, names).context("redis.url")?;
    let cfg = settings.mapping.clone();
    let catalog = catalog::Catalog::new(if cfg.items.verify_in_erpnext {
        erpnext.clone()
    } else {
        None
    });
    Ok(Services {
        app_url: app_url(settings),
        cfg,
        tz,
        reader: snapshot::Reader::new(hubspot),
        catalog,
        erpnext,
        markers: markers::Markers::new(dedup, settings.redis.done_ttl),
    })
}

/// The ERPNext sweep ([`sweep`]) over these clients.
pub fn sweep(
    settings: &Settings,
    erpnext: ErpNextClient,
    reader: snapshot::Reader,
    tz: chrono_tz::Tz,
    app_url: url::Url,
) -> anyhow::Result<sweep::Sweep> {
    let conn = shared::redis_conn::connect(&settings.redis.url).context("redis.url")?;
    Ok(sweep::Sweep {
        erpnext,
        reader,
        writeback: settings.mapping.writeback.clone(),
        app_url,
        tz,
        site: settings.erpnext.site(),
        cfg: settings.reconcile.clone(),
        watermark: watermark::WatermarkStore::new(conn, &settings.names()),
    })
}

/// The sweep with its own clients, from `settings` (what `mapper reconcile` runs).
pub fn sweep_from_settings(settings: &Settings) -> anyhow::Result<sweep::Sweep> {
    let erpnext = ErpNextClient::new(&settings.erpnext).context("the sweep reads ERPNext")?;
    sweep(
        settings,
        erpnext,
        snapshot::Reader::new(hubspot_client(settings)?),
        time_zone(settings)?,
        app_url(settings),
    )
}

fn time_zone(settings: &Settings) -> anyhow::Result<chrono_tz::Tz> {
    settings.erpnext.time_zone.parse().map_err(|_| {
        anyhow::anyhow!(
            "erpnext.time_zone {:?} is not an IANA time zone",
            settings.erpnext.time_zone
        )
    })
}

/// Base of links to ERPNext documents.
fn app_url(settings: &Settings) -> url::Url {
    settings
        .mapping
        .writeback
        .erpnext_app_url
        .clone()
        .unwrap_or_else(|| settings.erpnext.base_url.clone())
}

/// This process's name in the sweep lease.
fn replica_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("mapper-{}", std::process::id()))
}

/// Consume the `mapper` and `mapper.outcomes` queues ([`run_workers`]) until `shutdown`, then
/// drain in-flight messages and return.
/// With `reconcile.interval` set (and ERPNext credentials) the periodic sweep runs beside it.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let services = services(&settings)?;
    // The broker outlives the worker's drain: in-flight messages still publish and ack.
    let broker_stop = CancellationToken::new();
    let broker = Broker::from_settings(&settings, broker_stop.clone());
    let interval = settings.reconcile.interval;
    let sweeper = match (&services.erpnext, interval.is_zero()) {
        (_, true) => None,
        (None, false) => {
            tracing::warn!(
                "reconcile.interval is set but the mapper has no ERPNext credentials: no periodic sweep"
            );
            None
        }
        (Some(erpnext), false) => {
            let sweep = sweep(
                &settings,
                erpnext.clone(),
                services.reader.clone(),
                services.tz,
                services.app_url.clone(),
            )?;
            let conn = shared::redis_conn::connect(&settings.redis.url).context("redis.url")?;
            Some(tokio::spawn(sweeper::run(
                sweep,
                emit::Emitter::new(broker.clone()),
                conn,
                settings.names(),
                interval,
                replica_name(),
                shutdown.child_token(),
            )))
        }
    };
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
    let result = run_workers(broker, &settings.worker, handler, shutdown).await;
    if let Some(task) = sweeper
        && let Err(e) = task.await
    {
        tracing::warn!(error = %e, "the periodic sweep task failed");
    }
    broker_stop.cancel();
    result.context("mapper worker")
}

/// The outcome worker's share of `worker`: a quarter of the concurrency and prefetch, at least
/// one each. Outcomes are cheap to handle (a Redis marker and one command, no HubSpot or
/// ERPNext read), so a small share keeps up with erp-writer while the raw-event worker keeps
/// nearly all of the configured capacity.
pub fn outcome_worker_config(worker: &WorkerConfig) -> WorkerConfig {
    WorkerConfig {
        concurrency: (worker.concurrency / 4).max(1),
        prefetch: (worker.prefetch / 4).max(1),
        ..worker.clone()
    }
}

/// The mapper's two workers, one handler: raw events from the `mapper` queue with `worker`,
/// erp-writer's outcomes from `mapper.outcomes` with [`outcome_worker_config`], so a backlog of
/// raw events never delays a write-back (issue 15, item 6). Both drain on `shutdown`; if one
/// fails (it cannot consume its queue) the other is stopped too and the error is returned.
pub async fn run_workers(
    broker: Broker,
    worker: &WorkerConfig,
    handler: MapperHandler,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = shutdown.child_token();
    let run = |queue: WorkQueue, cfg: WorkerConfig| {
        let worker = Worker::new(broker.clone(), queue, cfg, handler.clone());
        let stop = stop.clone();
        async move {
            let result = worker.run(stop.clone()).await;
            if result.is_err() {
                stop.cancel();
            }
            result.with_context(|| format!("consuming {}", queue.base_name()))
        }
    };
    let (events, outcomes) = tokio::join!(
        run(WorkQueue::Mapper, worker.clone()),
        run(WorkQueue::MapperOutcomes, outcome_worker_config(worker)),
    );
    events.and(outcomes)
}

/// `mapper reconcile [--fix]`: compare, sweep, print; with `fix` enqueue the missing deals and
/// publish the sweep's repairs (under the sweep lease, advancing the watermark). A sweep that
/// cannot run is reported in [`reconcile::Report::sweep_error`]; the comparison still stands.
pub async fn run_reconcile(settings: &Settings, fix: bool) -> anyhow::Result<reconcile::Report> {
    let hubspot = hubspot_client(settings)?;
    let erpnext =
        ErpNextClient::new(&settings.erpnext).context("reconcile reads ERPNext's Sales Orders")?;
    let sweep = sweep(
        settings,
        erpnext.clone(),
        snapshot::Reader::new(hubspot.clone()),
        time_zone(settings)?,
        app_url(settings),
    )?;
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
    let result = async {
        let mut report = reconcile::reconcile(
            &hubspot,
            &erpnext,
            &settings.mapping.trigger,
            &settings.hubspot.portal_id,
            broker.as_ref(),
        )
        .await?;
        let swept: anyhow::Result<sweep::SweepReport> = match &broker {
            None => sweep.run(None).await.map_err(Into::into),
            Some(b) => sweep_by_hand(settings, &sweep, b).await,
        };
        match swept {
            Ok(s) => report.sweep = Some(s),
            Err(e) => report.sweep_error = Some(format!("{e:#}")),
        }
        Ok(report)
    }
    .await;
    stop.cancel();
    result
}

/// `mapper reconcile --fix`'s sweep: under the lease the periodic sweep takes, refused while a
/// replica holds it.
async fn sweep_by_hand(
    settings: &Settings,
    sweep: &sweep::Sweep,
    broker: &Broker,
) -> anyhow::Result<sweep::SweepReport> {
    let conn = shared::redis_conn::connect(&settings.redis.url).context("redis.url")?;
    let holder = format!("reconcile-{}", replica_name());
    let lease = match sweeper::SweepLease::acquire(conn, &settings.names(), &holder).await {
        sweeper::Acquired::Held(l) => Some(l),
        sweeper::Acquired::Busy(holder) => anyhow::bail!(
            "a sweep is running ({}); it repairs the same deals — try again when it is done",
            holder.as_deref().unwrap_or("holder unknown")
        ),
        sweeper::Acquired::Unavailable => None,
    };
    let swept = sweep.run(Some(&emit::Emitter::new(broker.clone()))).await;
    if let Some(l) = lease {
        l.release().await;
    }
    Ok(swept?)
}
