//! `ingest backfill`: enqueue every deal that is in a trigger stage (DESIGN §1 "before go-live"),
//! as if HubSpot had just sent a `deal.propertyChange` of `dealstage` for it. The mapper then
//! reads, maps and syncs each deal exactly like a webhook, with the same checks.
//!
//! # Paging past the 10,000-result cap
//! HubSpot stops one search query at 10,000 results. Instead of offset paging inside windows,
//! every page is its own query: `hs_object_id GT <last id of the previous page>`, sorted by
//! `hs_object_id` ascending, `after` never set (keyset paging). So no query ever comes near the
//! cap, a page costs exactly one search call (10,000 deals ≈ 50 calls at 200 per page), and the
//! order is stable while the pipeline runs: crm-writer writes back to the very deals being
//! backfilled, which bumps their `hs_lastmodifieddate` — sorting by that date would move them to
//! the end of the result set and shift every offset, skipping or repeating deals. `--since` /
//! `--until` still filter on `hs_lastmodifieddate`; they just do not drive the cursor.
//!
//! # Resuming
//! After each page's messages are confirmed by the broker, a small JSON state file (the query,
//! the cursor = last deal ID, counts) is replaced atomically (write a temporary file, rename). A
//! new invocation with the same query resumes after the cursor; an interrupt (Ctrl-C) stops after
//! the current page's confirms. A completed backfill deletes its state file.
//!
//! # Idempotency
//! Each synthetic event is keyed `backfill:<deal>:<hs_lastmodifieddate ms>`: running the backfill
//! again (after an interrupt without a state file, or by mistake) does not multiply the mapper's
//! work — it drops the repeat as a duplicate — while a deal changed since is looked at again.
//!
//! What this module does not do: read deals in full (the mapper does, on its own budget), or
//! decide anything about them beyond "in a trigger stage".

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use shared::broker::{Broker, BrokerError, Outgoing};
use shared::envelope::{Envelope, Kind, Source};
use shared::events::HubSpotEvent;
use shared::hubspot::types::{
    Filter, FilterGroup, FilterOperator, SearchRequest, SimplePublicObject, Sort, SortDirection,
};
use shared::hubspot::{HubSpotClient, HubSpotError, ObjectType};
use shared::mapping::TriggerConfig;
use shared::names::{Exchange, routing};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// HubSpot's maximum search page size.
pub const MAX_PAGE_SIZE: u32 = 200;
const STATE_VERSION: u32 = 1;
/// A page whose publish fails for a transient reason is tried this many times in all.
const PUBLISH_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("searching HubSpot: {0}")]
    HubSpot(#[from] HubSpotError),
    #[error("publishing to the broker: {0}")]
    Publish(#[from] BrokerError),
    #[error("no broker given (only a dry run works without one)")]
    NoBroker,
    #[error("mapping.trigger.stages is empty: there is no trigger stage to backfill")]
    NoStages,
    #[error("page size {0} is outside 1..={MAX_PAGE_SIZE}")]
    PageSize(u32),
    #[error("state file {path}: {source}")]
    StateIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not a backfill state: {source}")]
    StateFormat {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "state file {path} belongs to a different backfill ({theirs}); delete it or pass another --state-file"
    )]
    StateMismatch { path: PathBuf, theirs: String },
    #[error(
        "HubSpot returned no deal after ID {after}: the search ignored the ID filter; stopping rather than looping"
    )]
    Stalled { after: u64 },
}

/// Which deals: everything that must match for a state file to be resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub portal: String,
    pub namespace: String,
    pub stages: Vec<String>,
    pub pipelines: Vec<String>,
    /// `hs_lastmodifieddate >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `hs_lastmodifieddate < until`.
    pub until: Option<DateTime<Utc>>,
}

impl Query {
    pub fn new(
        portal: impl Into<String>,
        namespace: impl Into<String>,
        trigger: &TriggerConfig,
    ) -> Self {
        Self {
            portal: portal.into(),
            namespace: namespace.into(),
            stages: trigger.stages.clone(),
            pipelines: trigger.pipelines.clone(),
            since: None,
            until: None,
        }
    }

    /// The search for one page: deals after `after_id`, in ID order.
    pub fn request(&self, after_id: Option<u64>, limit: u32) -> SearchRequest {
        let mut filters = vec![Filter {
            property_name: "dealstage".into(),
            operator: FilterOperator::In,
            value: None,
            high_value: None,
            values: Some(self.stages.clone()),
        }];
        if !self.pipelines.is_empty() {
            filters.push(Filter {
                property_name: "pipeline".into(),
                operator: FilterOperator::In,
                value: None,
                high_value: None,
                values: Some(self.pipelines.clone()),
            });
        }
        if let Some(since) = self.since {
            filters.push(Filter::new(
                "hs_lastmodifieddate",
                FilterOperator::Gte,
                since.timestamp_millis().to_string(),
            ));
        }
        if let Some(until) = self.until {
            filters.push(Filter::new(
                "hs_lastmodifieddate",
                FilterOperator::Lt,
                until.timestamp_millis().to_string(),
            ));
        }
        if let Some(id) = after_id {
            filters.push(Filter::new(
                "hs_object_id",
                FilterOperator::Gt,
                id.to_string(),
            ));
        }
        SearchRequest {
            filter_groups: vec![FilterGroup { filters }],
            sorts: vec![Sort {
                property_name: "hs_object_id".into(),
                direction: SortDirection::Ascending,
            }],
            properties: vec![
                "dealstage".into(),
                "pipeline".into(),
                "hs_lastmodifieddate".into(),
            ],
            limit,
            after: None,
            query: None,
        }
    }

    fn describe(&self) -> String {
        let range = match (self.since, self.until) {
            (None, None) => String::new(),
            (s, u) => format!(
                ", modified {}..{}",
                s.map(|t| t.to_rfc3339()).unwrap_or_default(),
                u.map(|t| t.to_rfc3339()).unwrap_or_default()
            ),
        };
        format!(
            "portal {}, namespace {}, stages {:?}, pipelines {:?}{range}",
            self.portal, self.namespace, self.stages, self.pipelines
        )
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// 1..=200.
    pub page_size: u32,
    /// Where the cursor lives between pages and runs; `None`: not resumable.
    pub state_file: Option<PathBuf>,
    /// Count the deals (one search call), enqueue nothing, write no state.
    pub dry_run: bool,
    /// Stop (as an interrupt would) after this many pages of this invocation.
    pub max_pages: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            page_size: MAX_PAGE_SIZE,
            state_file: None,
            dry_run: false,
            max_pages: None,
        }
    }
}

/// The resumable cursor, as written after every confirmed page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub query: Query,
    /// Run ID: the correlation ID of every event of this backfill, across resumes.
    pub run: String,
    /// The last deal ID whose event the broker confirmed.
    pub last_id: Option<u64>,
    /// That deal's `hs_lastmodifieddate`, for humans reading the file.
    pub last_modified: Option<String>,
    pub pages: u64,
    pub enqueued: u64,
    pub search_calls: u64,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl State {
    fn new(query: Query) -> Self {
        let now = Utc::now();
        Self {
            version: STATE_VERSION,
            query,
            run: Uuid::now_v7().simple().to_string(),
            last_id: None,
            last_modified: None,
            pages: 0,
            enqueued: 0,
            search_calls: 0,
            started_at: now,
            updated_at: now,
        }
    }

    /// The state in `path`, `None` when there is no file.
    pub fn load(path: &Path) -> Result<Option<Self>, BackfillError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(BackfillError::StateIo {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| BackfillError::StateFormat {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Replace `path` atomically: a reader (or a crash) sees the old state or the new one.
    pub fn save(&self, path: &Path) -> Result<(), BackfillError> {
        let io = |source| BackfillError::StateIo {
            path: path.to_path_buf(),
            source,
        };
        let json =
            serde_json::to_vec_pretty(self).map_err(|source| BackfillError::StateFormat {
                path: path.to_path_buf(),
                source,
            })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// What a backfill invocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Deals in the trigger stages matching the query (including those enqueued by earlier,
    /// interrupted runs of the same backfill), per HubSpot's `total`.
    pub found: u64,
    /// Events published and confirmed by this invocation.
    pub enqueued: u64,
    /// Events confirmed over all runs of this backfill (with a state file).
    pub enqueued_total: u64,
    /// Deals skipped because their ID is not numeric.
    pub skipped: u64,
    pub pages: u64,
    /// HubSpot search requests made by this invocation.
    pub search_calls: u64,
    /// The cursor this invocation started from, when it resumed.
    pub resumed_after: Option<u64>,
    /// Every matching deal is enqueued (the state file is gone).
    pub complete: bool,
    /// Stopped by a signal (state kept).
    pub interrupted: bool,
    pub dry_run: bool,
    pub correlation_id: String,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dry_run {
            return writeln!(
                f,
                "dry run: {} deal(s) in the trigger stages would be enqueued ({} HubSpot call(s), {:.1?})",
                self.found.saturating_sub(self.enqueued_total),
                self.search_calls,
                self.elapsed
            );
        }
        writeln!(f, "deals found:        {}", self.found)?;
        writeln!(
            f,
            "enqueued:           {} (this run), {} (whole backfill)",
            self.enqueued, self.enqueued_total
        )?;
        if self.skipped > 0 {
            writeln!(f, "skipped (bad id):   {}", self.skipped)?;
        }
        writeln!(
            f,
            "HubSpot calls used: {} search ({} page(s))",
            self.search_calls, self.pages
        )?;
        writeln!(f, "wall time:          {:.1?}", self.elapsed)?;
        writeln!(f, "correlation_id:     {}", self.correlation_id)?;
        if self.complete {
            writeln!(f, "backfill complete")
        } else {
            writeln!(
                f,
                "stopped before the end; run the same command again to resume"
            )
        }
    }
}

/// Progress output: a bar on a terminal, a log line every few seconds otherwise.
#[derive(Debug)]
pub enum Progress {
    Bar(ProgressBar),
    Log {
        every: Duration,
        last: Option<Instant>,
    },
    Quiet,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines when it is not.
    pub fn auto() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} deals enqueued ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            Progress::Bar(bar)
        } else {
            Progress::Log {
                every: Duration::from_secs(2),
                last: None,
            }
        }
    }

    fn note(&self, line: &str) {
        match self {
            Progress::Bar(bar) => bar.println(line),
            Progress::Log { .. } => eprintln!("{line}"),
            Progress::Quiet => {}
        }
    }

    fn update(&mut self, done: u64, total: u64, this_run: u64, started: Instant, last: bool) {
        match self {
            Progress::Bar(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                if last {
                    bar.finish();
                }
            }
            Progress::Log { every, last: when } => {
                if !last && when.is_some_and(|w| w.elapsed() < *every) {
                    return;
                }
                *when = Some(Instant::now());
                let secs = started.elapsed().as_secs_f64().max(0.001);
                let rate = this_run as f64 / secs;
                let eta = if rate > 0.0 {
                    format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
                } else {
                    "?".into()
                };
                eprintln!("backfill: {done}/{total} deals enqueued ({rate:.0}/s, ETA {eta})");
            }
            Progress::Quiet => {}
        }
    }
}

/// Epoch milliseconds of a HubSpot datetime (ISO-8601 or epoch ms).
fn epoch_ms(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    raw.parse::<i64>().ok().or_else(|| {
        DateTime::parse_from_rfc3339(raw)
            .ok()
            .map(|t| t.timestamp_millis())
    })
}

/// The event that makes the mapper look at one deal: a `deal.propertyChange` of `dealstage`, as
/// `mapper::reconcile::synthetic_event` builds it, keyed by the deal's modification time.
pub fn synthetic_event(
    portal: &str,
    deal: &SimplePublicObject,
    run: &str,
) -> Option<Envelope<HubSpotEvent>> {
    let deal_id: u64 = deal.id.trim().parse().ok()?;
    let now = Utc::now();
    let modified = deal.property("hs_lastmodifieddate").and_then(epoch_ms);
    let occurred_at = modified
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or(now);
    let idempotency_key = match modified {
        Some(ms) => format!("backfill:{deal_id}:{ms}"),
        None => format!("backfill:{run}:{deal_id}"),
    };
    let event = HubSpotEvent {
        event_id: 0,
        subscription_id: 0,
        portal_id: portal.trim().parse().ok()?,
        app_id: None,
        occurred_at: occurred_at.timestamp_millis(),
        subscription_type: "deal.propertyChange".into(),
        attempt_number: 0,
        object_id: Some(deal_id),
        property_name: Some("dealstage".into()),
        property_value: deal.property("dealstage").map(str::to_string),
        change_source: Some("BACKFILL".into()),
        change_flag: None,
        source_id: None,
        primary_object_id: None,
        merged_object_ids: Vec::new(),
        from_object_id: None,
        to_object_id: None,
        extra: serde_json::Map::new(),
    };
    Some(Envelope {
        id: Uuid::now_v7(),
        kind: Kind::HubSpotEvent,
        idempotency_key,
        correlation_id: correlation_id(run),
        occurred_at,
        received_at: now,
        source: Source::Backfill,
        payload: event,
    })
}

fn correlation_id(run: &str) -> String {
    format!("backfill-{run}")
}

/// Publish one page with confirms; transient broker trouble is waited out a few times (the page
/// is republished whole: its idempotency keys make the repeat harmless).
async fn publish_page(broker: &Broker, messages: &[Outgoing]) -> Result<(), BrokerError> {
    let mut attempt = 1;
    loop {
        match broker.publish_all(messages).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && attempt < PUBLISH_ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "publishing a backfill page failed; retrying");
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                broker.wait_ready(Duration::from_secs(30)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Run (or resume) a backfill. `broker` may be `None` only for a dry run. Stops between pages
/// when `cancel` fires.
pub async fn backfill(
    hubspot: &HubSpotClient,
    broker: Option<&Broker>,
    query: &Query,
    opts: &Options,
    progress: &mut Progress,
    cancel: &CancellationToken,
) -> Result<Summary, BackfillError> {
    let started = Instant::now();
    if query.stages.is_empty() {
        return Err(BackfillError::NoStages);
    }
    if !(1..=MAX_PAGE_SIZE).contains(&opts.page_size) {
        return Err(BackfillError::PageSize(opts.page_size));
    }
    let saved = match &opts.state_file {
        Some(path) => State::load(path)?,
        None => None,
    };
    if let (Some(saved), Some(path)) = (&saved, &opts.state_file)
        && saved.query != *query
    {
        return Err(BackfillError::StateMismatch {
            path: path.clone(),
            theirs: saved.query.describe(),
        });
    }
    let resumed = saved.is_some();
    let mut state = saved.unwrap_or_else(|| State::new(query.clone()));
    let mut summary = Summary {
        resumed_after: state.last_id.filter(|_| resumed),
        enqueued_total: state.enqueued,
        dry_run: opts.dry_run,
        correlation_id: correlation_id(&state.run),
        ..Summary::default()
    };
    if resumed {
        progress.note(&format!(
            "resuming from {}: after deal {} (modified {}), {} deal(s) enqueued in {} page(s) since {}",
            opts.state_file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            state.last_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            state.last_modified.as_deref().unwrap_or("?"),
            state.enqueued,
            state.pages,
            state.started_at.to_rfc3339(),
        ));
    }

    if opts.dry_run {
        let page = hubspot
            .search(ObjectType::Deals, &query.request(state.last_id, 1))
            .await?;
        summary.search_calls = 1;
        summary.found = state.enqueued + page.total;
        summary.elapsed = started.elapsed();
        return Ok(summary);
    }
    let broker = broker.ok_or(BackfillError::NoBroker)?;
    let exchange = broker.names().exchange(Exchange::Events);
    let routing_key = routing::hubspot_event("deal", "propertyChange");

    loop {
        if cancel.is_cancelled() {
            summary.interrupted = true;
            break;
        }
        if opts.max_pages.is_some_and(|max| summary.pages >= max) {
            break;
        }
        let page = hubspot
            .search(
                ObjectType::Deals,
                &query.request(state.last_id, opts.page_size),
            )
            .await?;
        summary.search_calls += 1;
        state.search_calls += 1;
        // `total` counts what is left after the cursor; deals won meanwhile raise it.
        summary.found = state.enqueued + page.total;
        let more = page.next_after().is_some();
        if page.results.is_empty() {
            summary.complete = true;
            break;
        }
        let mut last_id = state.last_id;
        let mut last_modified = None;
        let mut messages = Vec::with_capacity(page.results.len());
        for deal in &page.results {
            let Ok(id) = deal.id.trim().parse::<u64>() else {
                summary.skipped += 1;
                tracing::warn!(deal = %deal.id, "deal ID is not numeric; skipped");
                continue;
            };
            // The previous page's last deal again (a search that treats GT as GTE).
            if last_id.is_some_and(|last| id <= last) {
                continue;
            }
            let Some(event) = synthetic_event(&query.portal, deal, &state.run) else {
                summary.skipped += 1;
                continue;
            };
            messages.push(
                Outgoing::envelope(exchange.clone(), routing_key.clone(), &event, 0)
                    .map_err(BrokerError::Encode)?,
            );
            last_id = Some(id);
            last_modified = deal.property("hs_lastmodifieddate").map(str::to_string);
        }
        if last_id == state.last_id {
            return Err(BackfillError::Stalled {
                after: state.last_id.unwrap_or(0),
            });
        }
        publish_page(broker, &messages).await?;
        let n = messages.len() as u64;
        state.last_id = last_id;
        state.last_modified = last_modified;
        state.pages += 1;
        state.enqueued += n;
        state.updated_at = Utc::now();
        if let Some(path) = &opts.state_file {
            state.save(path)?;
        }
        summary.pages += 1;
        summary.enqueued += n;
        summary.enqueued_total = state.enqueued;
        progress.update(
            state.enqueued,
            summary.found,
            summary.enqueued,
            started,
            !more,
        );
        if !more {
            summary.complete = true;
            break;
        }
    }
    if summary.complete
        && let Some(path) = &opts.state_file
        && let Err(source) = std::fs::remove_file(path)
        && source.kind() != std::io::ErrorKind::NotFound
    {
        return Err(BackfillError::StateIo {
            path: path.clone(),
            source,
        });
    }
    if !summary.complete {
        progress.update(
            state.enqueued,
            summary.found,
            summary.enqueued,
            started,
            true,
        );
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// `ingest backfill` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// Only deals last modified at or after this instant (RFC 3339, or YYYY-MM-DD = 00:00 UTC).
    #[arg(long, value_parser = parse_instant)]
    pub since: Option<DateTime<Utc>>,
    /// Only deals last modified before this instant (exclusive; RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_parser = parse_instant)]
    pub until: Option<DateTime<Utc>>,
    /// Deals per HubSpot search page (= per published batch), at most 200.
    #[arg(long, default_value_t = MAX_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub page_size: u32,
    /// Cursor file for resuming; default `l2l-backfill-<namespace>.json` in the current directory.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Only count the deals that would be enqueued (one search call).
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after this many pages (resume later with the same command).
    #[arg(long)]
    pub max_pages: Option<u64>,
}

/// `2025-01-31` (midnight UTC) or an RFC 3339 instant.
pub fn parse_instant(raw: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("{raw:?} is neither RFC 3339 (2025-01-31T12:00:00Z) nor a date (2025-01-31)")
        })
}

/// The `ingest backfill` command: clients from `settings`, Ctrl-C through `cancel`.
pub async fn command(
    settings: &shared::config::Settings,
    args: BackfillArgs,
    cancel: CancellationToken,
) -> anyhow::Result<Summary> {
    use anyhow::Context;
    let names = settings.names();
    let budget = shared::budget::RateBudget::connect(
        &settings.redis.url,
        names.clone(),
        settings.hubspot.portal_id.clone(),
        shared::budget::BudgetLimits::from_config(&settings.hubspot.budget),
    )
    .context("redis.url")?;
    let hubspot = HubSpotClient::from_config(&settings.hubspot, Some(budget))
        .context("building the HubSpot client")?;
    let mut query = Query::new(
        settings.hubspot.portal_id.clone(),
        names.namespace(),
        &settings.mapping.trigger,
    );
    query.since = args.since;
    query.until = args.until;
    let opts =
        Options {
            page_size: args.page_size,
            state_file: Some(args.state_file.unwrap_or_else(|| {
                PathBuf::from(format!("l2l-backfill-{}.json", names.namespace()))
            })),
            dry_run: args.dry_run,
            max_pages: args.max_pages,
        };
    let stop = CancellationToken::new();
    let broker = if args.dry_run {
        None
    } else {
        let b = Broker::start(
            &settings.amqp.url,
            names,
            shared::broker::TopologySpec {
                delivery_limit: settings.amqp.delivery_limit,
                retry_tiers: settings.worker.retry_tiers.clone(),
            },
            settings.amqp.reconnect_max_delay,
            stop.clone(),
        );
        if !b.wait_ready(Duration::from_secs(15)).await {
            stop.cancel();
            anyhow::bail!(
                "cannot reach the broker at {}",
                shared::config::redact_url(&settings.amqp.url)
            );
        }
        Some(b)
    };
    let mut progress = Progress::auto();
    let result = backfill(
        &hubspot,
        broker.as_ref(),
        &query,
        &opts,
        &mut progress,
        &cancel,
    )
    .await;
    stop.cancel();
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deal(id: &str, modified: Option<&str>) -> SimplePublicObject {
        let mut props = serde_json::json!({ "dealstage": "closedwon" });
        if let Some(m) = modified {
            props["hs_lastmodifieddate"] = m.into();
        }
        serde_json::from_value(serde_json::json!({ "id": id, "properties": props }))
            .expect("object")
    }

    #[test]
    fn events_are_keyed_by_deal_and_modification() {
        let d = deal("42", Some("2025-01-02T03:04:05.678Z"));
        let a = synthetic_event("62515", &d, "run1").expect("event");
        let b = synthetic_event("62515", &d, "run2").expect("event");
        assert_eq!(a.idempotency_key, "backfill:42:1735787045678");
        assert_eq!(a.idempotency_key, b.idempotency_key, "stable across runs");
        assert_eq!(
            a.payload.object_and_event(),
            Some(("deal", "propertyChange"))
        );
        assert_eq!(a.payload.subject_id(), Some(42));
        assert_eq!(a.payload.property_name.as_deref(), Some("dealstage"));
        assert_eq!(a.source, Source::Backfill);
        assert_eq!(a.kind, Kind::HubSpotEvent);
        assert_eq!(a.correlation_id, "backfill-run1");
        let undated = synthetic_event("62515", &deal("42", None), "run1").expect("event");
        assert_eq!(undated.idempotency_key, "backfill:run1:42");
        assert!(synthetic_event("62515", &deal("x", None), "r").is_none());
    }

    #[test]
    fn requests_page_by_id_and_filter_by_date() {
        let mut q = Query::new("62515", "l2l", &TriggerConfig::default());
        q.since = Some(parse_instant("2025-01-01").expect("date"));
        let r = q.request(Some(99), 200);
        let filters = &r.filter_groups[0].filters;
        assert!(filters.iter().any(|f| f.property_name == "hs_object_id"
            && f.operator == FilterOperator::Gt
            && f.value.as_deref() == Some("99")));
        assert!(
            filters
                .iter()
                .any(|f| f.property_name == "hs_lastmodifieddate"
                    && f.operator == FilterOperator::Gte
                    && f.value.as_deref() == Some("1735689600000"))
        );
        assert_eq!(
            r.after, None,
            "never offset paging: the cap cannot be reached"
        );
        assert_eq!(r.sorts[0].property_name, "hs_object_id");
        assert!(parse_instant("2025-01-31T12:00:00+01:00").is_ok());
        assert!(parse_instant("yesterday").is_err());
    }

    #[test]
    fn state_round_trips_through_an_atomic_replace() {
        let dir = std::env::temp_dir().join(format!("l2l-backfill-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        assert_eq!(State::load(&path).expect("load"), None);
        let mut s = State::new(Query::new("1", "ns", &TriggerConfig::default()));
        s.last_id = Some(7);
        s.save(&path).expect("save");
        s.enqueued = 3;
        s.save(&path).expect("save again");
        assert_eq!(State::load(&path).expect("load"), Some(s));
        std::fs::write(&path, "not json").expect("write");
        assert!(matches!(
            State::load(&path),
            Err(BackfillError::StateFormat { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
