//! `ingest backfill` against the HubSpot simulator and the real broker: every won deal enqueued
//! exactly once past the 10,000-result search cap within the search budget, resuming after an
//! interrupt without repeating confirmed pages, and `--since`/`--until` narrowing the set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ingest::backfill::{self, BackfillError, Options, Progress, Query, State, parse_instant};
use l2l_tests::sim::hubspot::{self as sim, HubSpotSim, HubSpotSimConfig, HubSpotSimHandle};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use shared::broker::Broker;
use shared::budget::{BudgetLimits, RateBudget};
use shared::config::BudgetConfig;
use shared::envelope::{Envelope, Source};
use shared::events::HubSpotEvent;
use shared::hubspot::{HubSpotClient, SecretString};
use shared::mapping::TriggerConfig;
use shared::names::WorkQueue;
use shared::testkit::{TestNamespace, queue_len};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "sim-token";
const SEARCH: &str = "POST /crm/v3/objects/deals/search";

struct Fixture {
    ns: TestNamespace,
    sim: HubSpotSimHandle,
    broker: Broker,
    stop: CancellationToken,
    dir: PathBuf,
}

impl Fixture {
    /// Simulator and budget at `search_per_second` (HubSpot's 4/s would make 51 pages take 13 s).
    async fn start(search_per_second: u32) -> Self {
        let ns = TestNamespace::new();
        let config = HubSpotSimConfig {
            tokens: vec![TOKEN.into()],
            first_object_id: Some(5_000),
            rate_limits: sim::RateLimitConfig {
                search_per_second,
                ..sim::RateLimitConfig::default()
            },
            ..HubSpotSimConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let sim = HubSpotSim::start(config, listener).expect("simulator");
        let stop = CancellationToken::new();
        let broker = Broker::start(
            &ns.settings.amqp.url,
            ns.names(),
            ns.topology(),
            ns.settings.amqp.reconnect_max_delay,
            stop.clone(),
        );
        assert!(
            broker.wait_ready(Duration::from_secs(10)).await,
            "broker up"
        );
        let dir = std::env::temp_dir().join(format!("l2l-{}", ns.settings.amqp.namespace));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            ns,
            sim,
            broker,
            stop,
            dir,
        }
    }

    fn client(&self, search_per_second: u32) -> HubSpotClient {
        let limits = BudgetLimits::from_config(&BudgetConfig {
            per_10s: 100,
            search_per_second,
            daily: 0,
        });
        let budget = RateBudget::connect(
            &self.ns.settings.redis.url,
            self.ns.names(),
            "62515",
            limits,
        )
        .expect("budget");
        HubSpotClient::new(
            self.sim.base_url(),
            SecretString::from(TOKEN),
            Some(budget),
            Duration::from_secs(10),
        )
        .expect("client")
    }

    fn query(&self) -> Query {
        Query::new(
            "62515",
            self.ns.names().namespace(),
            &TriggerConfig::default(),
        )
    }

    /// `(stage, pipeline, hs_lastmodifieddate)` per deal; their ids in order.
    fn seed(&self, deals: &[(&str, &str, String)]) -> Vec<u64> {
        let objects = deals
            .iter()
            .map(|(stage, pipeline, modified)| sim::SeedObject {
                reference: None,
                object_type: sim::ObjectType::Deals,
                id: None,
                properties: BTreeMap::from([
                    ("dealname".to_string(), "Backfill deal".to_string()),
                    ("dealstage".to_string(), stage.to_string()),
                    ("pipeline".to_string(), pipeline.to_string()),
                    ("hs_lastmodifieddate".to_string(), modified.clone()),
                ]),
            })
            .collect();
        let result = self
            .sim
            .seed(sim::Seed {
                objects,
                ..sim::Seed::default()
            })
            .expect("seed");
        result
            .objects
            .iter()
            .map(|o| o.id.parse().expect("numeric id"))
            .collect()
    }

    /// Every event on the mapper queue: `(deal id, envelope)`. A consumer with a large prefetch
    /// and no acks (`basic_get` takes a round trip per message: ~45 s for 10,000).
    async fn drain(&self) -> Vec<(u64, Envelope<HubSpotEvent>)> {
        let url = &self.ns.settings.amqp.url;
        let queue = self.ns.names().queue(WorkQueue::Mapper);
        let n = queue_len(url, &queue).await as usize;
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("broker");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .basic_qos(2_000, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "backfill-test".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await
                .expect("the queue's messages arrive")
                .expect("consumer open")
                .expect("delivery");
            assert_eq!(delivery.routing_key.as_str(), "hubspot.deal.propertyChange");
            let e: Envelope<HubSpotEvent> =
                serde_json::from_slice(&delivery.data).expect("envelope");
            out.push((e.payload.object_id.expect("deal id"), e));
        }
        let _ = conn.close(200, "drained".into()).await;
        assert_eq!(queue_len(url, &queue).await, 0, "nothing left behind");
        out
    }

    async fn cleanup(self) {
        self.stop.cancel();
        self.ns.cleanup().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.sim.shutdown().await;
    }
}

fn won_ids(seeded: &[u64], deals: &[(&str, &str, String)]) -> BTreeSet<u64> {
    seeded
        .iter()
        .zip(deals)
        .filter(|(_, (stage, pipeline, _))| *stage == "closedwon" && *pipeline == "default")
        .map(|(id, _)| *id)
        .collect()
}

/// One deal per minute from 2025-01-01, so `hs_lastmodifieddate` has many distinct values.
fn minute(i: usize) -> String {
    let t = parse_instant("2025-01-01").expect("date") + chrono::Duration::minutes(i as i64);
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn assert_once_each(events: &[(u64, Envelope<HubSpotEvent>)], want: &BTreeSet<u64>) {
    let got: BTreeSet<u64> = events.iter().map(|(id, _)| *id).collect();
    assert_eq!(events.len(), got.len(), "a deal was enqueued twice");
    assert_eq!(&got, want, "enqueued set differs from the won deals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfills_every_won_deal_past_the_search_cap_once() {
    let fx = Fixture::start(50).await;
    // 10,050 won deals, plus lost/open ones and won deals of another pipeline, interleaved.
    let deals: Vec<(&str, &str, String)> = (0..11_000)
        .map(|i| {
            let (stage, pipeline) = match i % 30 {
                0 => ("closedlost", "default"),
                10 => ("appointmentscheduled", "default"),
                20 if i < 3_000 => ("closedwon", "other"),
                _ => ("closedwon", "default"),
            };
            (stage, pipeline, minute(i))
        })
        .collect();
    let seeded = fx.seed(&deals);
    let want = won_ids(&seeded, &deals);
    assert!(want.len() > 10_000, "seeded {} won deals", want.len());

    let started = Instant::now();
    let summary = backfill::backfill(
        &fx.client(40),
        Some(&fx.broker),
        &fx.query(),
        &Options::default(),
        &mut Progress::Quiet,
        &CancellationToken::new(),
    )
    .await
    .expect("backfill");
    let wall = started.elapsed();

    let stats = fx.sim.calls();
    let pages = want.len().div_ceil(200) as u64;
    eprintln!(
        "{} won deals: {} search calls, {} HubSpot calls in all, {wall:.2?}",
        want.len(),
        summary.search_calls,
        stats.total
    );
    assert!(summary.complete);
    assert_eq!(summary.found, want.len() as u64);
    assert_eq!(summary.enqueued, want.len() as u64);
    assert_eq!(summary.search_calls, pages);
    assert_eq!(stats.calls.get(SEARCH).copied(), Some(pages));
    assert_eq!(stats.total, pages, "nothing but search pages");
    assert_eq!(
        stats.statuses.get(&400),
        None,
        "the 10,000 cap was never hit"
    );
    assert_eq!(stats.throttled, 0, "the search budget kept the pace");

    let events = fx.drain().await;
    assert_once_each(&events, &want);
    let (_, e) = &events[0];
    assert_eq!(e.source, Source::Backfill);
    assert_eq!(e.payload.property_name.as_deref(), Some("dealstage"));
    assert!(e.idempotency_key.starts_with("backfill:"));
    assert_eq!(e.correlation_id, summary.correlation_id);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backfill_resumes_after_the_last_confirmed_page() {
    let fx = Fixture::start(100).await;
    let deals: Vec<(&str, &str, String)> = (0..1_050)
        .map(|i| {
            let stage = if i % 7 == 0 {
                "closedlost"
            } else {
                "closedwon"
            };
            (stage, "default", minute(i))
        })
        .collect();
    let seeded = fx.seed(&deals);
    let want = won_ids(&seeded, &deals);
    let client = fx.client(100);
    let state_file = fx.dir.join("state.json");
    let opts = Options {
        page_size: 100,
        state_file: Some(state_file.clone()),
        ..Options::default()
    };

    // Ctrl-C before the first page: nothing searched, nothing written.
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let none = backfill::backfill(
        &client,
        Some(&fx.broker),
        &fx.query(),
        &opts,
        &mut Progress::Quiet,
        &cancelled,
    )
    .await
    .expect("cancelled run");
    assert!(none.interrupted && !none.complete);
    assert_eq!((none.search_calls, none.enqueued), (0, 0));

    // Stopped after 3 pages, as an interrupt between pages would.
    let first = backfill::backfill(
        &client,
        Some(&fx.broker),
        &fx.query(),
        &Options {
            max_pages: Some(3),
            ..opts.clone()
        },
        &mut Progress::Quiet,
        &CancellationToken::new(),
    )
    .await
    .expect("first run");
    assert!(!first.complete);
    assert_eq!((first.pages, first.enqueued), (3, 300));
    let state = State::load(&state_file)
        .expect("state")
        .expect("state file kept after the interrupt");
    let first_events = fx.drain().await;
    let first_ids: BTreeSet<u64> = first_events.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        state.last_id,
        first_ids.last().copied(),
        "cursor = last confirmed deal"
    );
    assert_eq!(state.enqueued, 300);

    // Another query must not pick up this cursor.
    let mut other = fx.query();
    other.since = Some(parse_instant("2025-01-01").expect("date"));
    let mismatch = backfill::backfill(
        &client,
        Some(&fx.broker),
        &other,
        &opts,
        &mut Progress::Quiet,
        &CancellationToken::new(),
    )
    .await;
    assert!(matches!(mismatch, Err(BackfillError::StateMismatch { .. })));

    fx.sim.reset_calls();
    let second = backfill::backfill(
        &client,
        Some(&fx.broker),
        &fx.query(),
        &opts,
        &mut Progress::Quiet,
        &CancellationToken::new(),
    )
    .await
    .expect("resumed run");
    assert!(second.complete);
    assert_eq!(second.resumed_after, state.last_id);
    assert_eq!(second.enqueued, want.len() as u64 - 300);
    assert_eq!(second.enqueued_total, want.len() as u64);
    assert_eq!(second.found, want.len() as u64);
    assert_eq!(second.correlation_id, first.correlation_id, "same run");
    assert_eq!(
        fx.sim.calls().calls.get(SEARCH).copied(),
        Some((want.len() as u64 - 300).div_ceil(100)),
        "the resumed run searched only what was left"
    );
    assert!(
        !state_file.exists(),
        "a completed backfill removes its state"
    );
    let second_events = fx.drain().await;
    let second_ids: BTreeSet<u64> = second_events.iter().map(|(id, _)| *id).collect();
    assert!(first_ids.is_disjoint(&second_ids), "no deal enqueued twice");
    let mut all = first_events;
    all.extend(second_events);
    assert_once_each(&all, &want);

    // A fresh run over the same, unchanged deals repeats the idempotency keys: the mapper drops them.
    let keys: BTreeMap<u64, String> = all
        .iter()
        .map(|(id, e)| (*id, e.idempotency_key.clone()))
        .collect();
    let again = backfill::backfill(
        &client,
        Some(&fx.broker),
        &fx.query(),
        &Options::default(),
        &mut Progress::Quiet,
        &CancellationToken::new(),
    )
    .await
    .expect("fresh run");
    assert_ne!(again.correlation_id, first.correlation_id);
    let repeat: BTreeMap<u64, String> = fx
        .drain()
        .await
        .into_iter()
        .map(|(id, e)| (id, e.idempotency_key))
        .collect();
    assert_eq!(repeat, keys);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_and_until_narrow_the_backfill_by_modification_date() {
    let fx = Fixture::start(100).await;
    let at = |d: &str| {
        parse_instant(d)
            .expect("date")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let deals: Vec<(&str, &str, String)> = (0..300)
        .map(|i| {
            let month = ["2025-01-15", "2025-02-15", "2025-03-15"][i % 3];
            let stage = if i % 5 == 0 {
                "closedlost"
            } else {
                "closedwon"
            };
            (stage, "default", at(month))
        })
        .collect();
    let seeded = fx.seed(&deals);
    let won = won_ids(&seeded, &deals);
    let in_month = |m: &str| -> BTreeSet<u64> {
        seeded
            .iter()
            .zip(&deals)
            .filter(|(id, (_, _, modified))| won.contains(id) && modified.starts_with(m))
            .map(|(id, _)| *id)
            .collect()
    };
    let client = fx.client(100);
    let run = |query: Query| {
        let client = client.clone();
        let broker = fx.broker.clone();
        async move {
            backfill::backfill(
                &client,
                Some(&broker),
                &query,
                &Options {
                    page_size: 50,
                    ..Options::default()
                },
                &mut Progress::Quiet,
                &CancellationToken::new(),
            )
            .await
            .expect("backfill")
        }
    };

    let mut since = fx.query();
    since.since = Some(parse_instant("2025-02-01").expect("date"));
    let s = run(since.clone()).await;
    let want: BTreeSet<u64> = in_month("2025-02")
        .union(&in_month("2025-03"))
        .copied()
        .collect();
    assert_eq!(s.enqueued, want.len() as u64);
    assert_once_each(&fx.drain().await, &want);

    let mut window = since;
    window.until = Some(parse_instant("2025-03-01T00:00:00Z").expect("instant"));
    let w = run(window).await;
    assert_eq!(w.enqueued, in_month("2025-02").len() as u64);
    assert_once_each(&fx.drain().await, &in_month("2025-02"));

    // A dry run counts with one call and enqueues nothing.
    fx.sim.reset_calls();
    let dry = backfill::backfill(
        &client,
        None,
        &fx.query(),
        &Options {
            dry_run: true,
            ..Options::default()
        },
        &mut Progress::Quiet,
        &CancellationToken::new(),
    )
    .await
    .expect("dry run");
    assert_eq!((dry.found, dry.enqueued), (won.len() as u64, 0));
    assert_eq!(fx.sim.calls().total, 1);
    assert!(fx.drain().await.is_empty());
    fx.cleanup().await;
}
