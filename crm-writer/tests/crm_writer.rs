//! crm-writer against the HubSpot simulator, the real RabbitMQ and the real Redis: ordering of
//! out-of-order invoice statuses, batching under the rate budget, dead letters for deleted
//! deals, and the idempotent `setup`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use crm_writer::{CoalesceConfig, CrmWriterHandler, OrderingGuard};
use l2l_tests::sim::erpnext::{ErpNextSim, ErpNextSimConfig, ErpNextSimHandle};
use l2l_tests::sim::hubspot::{
    HubSpotSim, HubSpotSimConfig, HubSpotSimHandle, ObjectType as SimType,
};
use rand::seq::SliceRandom;
use secrecy::SecretString;
use serde_json::json;
use shared::broker::{Broker, Outgoing};
use shared::commands::UpdateCrmObject;
use shared::config::Settings;
use shared::envelope::{Envelope, Kind, Source, command_key};
use shared::hubspot::ObjectType;
use shared::mapping::invoice_status_value;
use shared::names::{Exchange, WorkQueue};
use shared::runtime::{Handler, Incoming, Outcome};
use shared::testkit::{TestNamespace, drain, eventually, queue_len, rabbitmqctl};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "demo-token";
const PATCH_DEAL: &str = "PATCH /crm/v3/objects/deals/{id}";
const BATCH_DEALS: &str = "POST /crm/v3/objects/deals/batch/update";
const BATCH_READ_DEALS: &str = "POST /crm/v3/objects/deals/batch/read";

/// A namespace, a HubSpot simulator with crm-writer's properties, and a publisher.
struct Harness {
    ns: TestNamespace,
    sim: HubSpotSimHandle,
    publisher: Broker,
    publisher_stop: CancellationToken,
}

/// A running `crm_writer::run`.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Graceful stop: every message taken is written and acked before `run` returns.
    async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(15), self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("crm-writer did not stop cleanly: {other:?}"),
        }
    }
}

impl Harness {
    async fn new(sim_config: HubSpotSimConfig) -> Self {
        let mut ns = TestNamespace::new();
        shared::telemetry::init_tracing(&ns.settings.telemetry);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sim = HubSpotSim::start(sim_config, listener).expect("hubspot sim");
        ns.settings.hubspot.base_url = sim.base_url();
        ns.settings.hubspot.access_token = Some(SecretString::from(TOKEN));
        let publisher_stop = CancellationToken::new();
        let publisher = Broker::start(
            &ns.settings.amqp.url,
            ns.names(),
            ns.topology(),
            ns.settings.amqp.reconnect_max_delay,
            publisher_stop.clone(),
        );
        assert!(
            publisher.wait_ready(Duration::from_secs(10)).await,
            "broker at {} unreachable",
            ns.settings.amqp.url
        );
        let h = Self {
            ns,
            sim,
            publisher,
            publisher_stop,
        };
        let report = crm_writer::run_setup(&h.ns.settings).await.expect("setup");
        assert_eq!(report.created(), 7, "{report}");
        h.sim.reset_calls();
        h
    }

    fn settings(&self) -> Settings {
        self.ns.settings.clone()
    }

    fn start(&self, settings: Settings) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(crm_writer::run(settings, shutdown.clone()));
        Running { shutdown, task }
    }

    fn deals(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.sim
                    .create_object(SimType::Deals, &[("dealname", &format!("Deal {i}"))])
                    .expect("deal")
            })
            .collect()
    }

    fn deal_property(&self, id: &str, name: &str) -> Option<String> {
        self.sim
            .object(SimType::Deals, id)
            .and_then(|o| o.properties.get(name).cloned())
            .filter(|v| !v.is_empty())
    }

    async fn publish(&self, commands: &[Envelope<UpdateCrmObject>]) {
        let exchange = self.ns.names().exchange(Exchange::Commands);
        let messages: Vec<Outgoing> = commands
            .iter()
            .map(|c| {
                Outgoing::envelope(exchange.clone(), c.kind.as_str().to_string(), c, 0)
                    .expect("encode")
            })
            .collect();
        self.publisher
            .publish_all(&messages)
            .await
            .expect("publish");
    }

    async fn queue_len(&self) -> u32 {
        queue_len(
            &self.ns.settings.amqp.url,
            &self.ns.names().queue(WorkQueue::CrmWriter),
        )
        .await
    }

    /// Wait until the broker holds no unacked delivery of the crm-writer queue, before a stop.
    /// Works around the runtime's drain losing acks that come after its `basic.cancel` (seen on
    /// RabbitMQ 3.10 quorum queues; reported): the messages would come back, already applied.
    /// Without `rabbitmqctl` it returns at once.
    async fn wait_acked(&self) {
        let queue = self.ns.names().queue(WorkQueue::CrmWriter);
        eventually(Duration::from_secs(15), "every delivery acked", || {
            let queue = queue.clone();
            async move {
                let out = tokio::process::Command::from(rabbitmqctl(&[
                    "list_queues",
                    "-q",
                    "--no-table-headers",
                    "name",
                    "messages_unacknowledged",
                ]))
                .output()
                .await;
                let Ok(out) = out else {
                    return Some(());
                };
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let unacked = text
                    .lines()
                    .filter_map(|l| l.split_once('\t'))
                    .find(|(name, _)| *name == queue)
                    .and_then(|(_, n)| n.trim().parse::<u64>().ok());
                (!out.status.success() || unacked == Some(0)).then_some(())
            }
        })
        .await;
    }

    async fn dlq_len(&self) -> u32 {
        queue_len(
            &self.ns.settings.amqp.url,
            &self.ns.names().dead_letter_queue(WorkQueue::CrmWriter),
        )
        .await
    }

    async fn cleanup(self) {
        self.publisher_stop.cancel();
        // Bounded: a broker busy with other suites must not hang the test after it passed.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.ns.cleanup()).await;
        self.sim.shutdown().await;
    }
}

fn update(
    kind: Kind,
    object_id: &str,
    properties: &[(&str, &str)],
    at: DateTime<Utc>,
) -> Envelope<UpdateCrmObject> {
    let now = Utc::now();
    let source_key = format!("test:{}", uuid::Uuid::now_v7());
    Envelope {
        id: uuid::Uuid::now_v7(),
        kind: kind.clone(),
        idempotency_key: command_key(&source_key, &kind, object_id),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: now,
        received_at: now,
        source: Source::Mapper,
        payload: UpdateCrmObject {
            object_id: object_id.to_string(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            source_modified: at,
        },
    }
}

/// One `crm.update_deal` through `handler`, as the runtime would deliver it.
async fn handle_update(
    handler: &CrmWriterHandler,
    deal: &str,
    properties: &[(&str, &str)],
    at: DateTime<Utc>,
) -> Result<Outcome, shared::runtime::HandlerError> {
    let env = update(Kind::CrmUpdateDeal, deal, properties, at);
    let envelope: Envelope = serde_json::from_slice(&env.to_json().expect("enc")).expect("dec");
    handler
        .handle(Incoming {
            envelope,
            routing_key: "crm.update_deal".into(),
            attempt: 0,
            redelivered: false,
        })
        .await
}

/// An invoice in the ERPNext simulator going Unpaid → Overdue → Paid: `(status, modified)` after
/// each step, `modified` read as the mapper would (site time; the test only needs its order).
async fn invoice_history() -> (ErpNextSimHandle, Vec<(String, DateTime<Utc>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let erp = ErpNextSim::start(ErpNextSimConfig::default(), listener)
        .await
        .expect("erpnext sim");
    let customer = erp
        .seed(
            "Customer",
            json!({"customer_name": "Globex", "customer_type": "Company",
                   "customer_group": "Commercial", "territory": "United States"}),
        )
        .expect("customer");
    let delivery = (Utc::now() + chrono::Duration::days(14))
        .date_naive()
        .to_string();
    let order = erp
        .seed(
            "Sales Order",
            json!({"customer": customer["name"], "delivery_date": delivery, "docstatus": 1,
                   "items": [{"item_code": "SKU-WIDGET", "qty": 2, "rate": 25.0,
                              "delivery_date": delivery}]}),
        )
        .expect("sales order");
    let order = order["name"].as_str().expect("order name").to_string();
    let invoice = erp.invoice_sales_order(&order).expect("invoice");
    let snapshot = |erp: &ErpNextSimHandle| {
        let doc = erp.get("Sales Invoice", &invoice).expect("invoice doc");
        let status = doc["status"].as_str().expect("status").to_string();
        let modified = doc["modified"].as_str().expect("modified");
        let modified = NaiveDateTime::parse_from_str(modified, "%Y-%m-%d %H:%M:%S%.f")
            .expect("frappe datetime")
            .and_utc();
        (status, modified)
    };
    let mut history = vec![snapshot(&erp)];
    erp.set_invoice_overdue(&invoice, true).expect("overdue");
    history.push(snapshot(&erp));
    erp.pay_invoice(&invoice, None).expect("pay");
    history.push(snapshot(&erp));
    (erp, history)
}

/// The three invoice statuses reach crm-writer in a shuffled order (never the natural one): the
/// deal ends `paid`, in one coalesced write. (Each status in its own batch, where Redis decides,
/// is `older_update_in_a_later_batch_is_skipped_and_redelivery_rewrites`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_status_unpaid_overdue_paid_out_of_order_ends_paid() {
    let h = Harness::new(HubSpotSimConfig::default()).await;
    let (erp, history) = invoice_history().await;
    let statuses: Vec<&str> = history.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["Unpaid", "Overdue", "Paid"]);
    assert!(
        history.windows(2).all(|w| w[0].1 < w[1].1),
        "ERPNext's modified grows: {history:?}"
    );
    let prop = h.ns.settings.mapping.writeback.deal_invoice_status.clone();
    let deal = h.deals(1).remove(0);
    let mut order: Vec<usize> = vec![0, 1, 2];
    while order == [0, 1, 2] {
        order.shuffle(&mut rand::rng());
    }
    println!(
        "publish order: {:?}",
        order.iter().map(|i| statuses[*i]).collect::<Vec<_>>()
    );
    let commands: Vec<_> = order
        .iter()
        .map(|i| {
            let (status, at) = &history[*i];
            update(
                Kind::CrmUpdateDeal,
                &deal,
                &[(prop.as_str(), invoice_status_value(status).as_str())],
                *at,
            )
        })
        .collect();
    // Queued before the writer starts, so they arrive together in its first prefetch.
    h.publish(&commands).await;
    let writer = h.start(h.settings());
    eventually(Duration::from_secs(10), "the deal is paid", || async {
        (h.deal_property(&deal, &prop).as_deref() == Some("paid")).then_some(())
    })
    .await;
    // Graceful stop: every message taken is written (or skipped) and acked first.
    h.wait_acked().await;
    writer.stop().await;
    assert_eq!(h.deal_property(&deal, &prop).as_deref(), Some("paid"));
    assert_eq!(h.queue_len().await, 0);
    assert_eq!(h.dlq_len().await, 0);
    let calls = h.sim.calls();
    println!("HubSpot calls: {:?}", calls.calls);
    assert_eq!(
        calls.total, 2,
        "one read of the time HubSpot holds, one coalesced PATCH: {:?}",
        calls.calls
    );
    assert_eq!(calls.calls.get(PATCH_DEAL).copied(), Some(1));
    assert_eq!(calls.calls.get(BATCH_READ_DEALS).copied(), Some(1));
    erp.shutdown().await;
    h.cleanup().await;
}

/// The handler and the ordering guard without the broker: each update is its own batch, so only
/// Redis can tell that Unpaid and Overdue are older than the Paid already written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_update_in_a_later_batch_is_skipped_and_redelivery_rewrites() {
    let h = Harness::new(HubSpotSimConfig::default()).await;
    let settings = h.settings();
    let prop = settings.mapping.writeback.deal_invoice_status.clone();
    let deal = h.deals(1).remove(0);
    let prometheus = shared::telemetry::prometheus();
    let handler = handler(&settings, Some(&settings.redis.url));
    let t = |s: i64| DateTime::from_timestamp(1_760_000_000 + s, 0).expect("time");
    assert_eq!(
        handle_update(&handler, &deal, &[(prop.as_str(), "paid")], t(3)).await,
        Ok(Outcome::Done)
    );
    assert!(matches!(
        handle_update(&handler, &deal, &[(prop.as_str(), "unpaid")], t(1)).await,
        Ok(Outcome::Ignored { .. })
    ));
    assert!(matches!(
        handle_update(&handler, &deal, &[(prop.as_str(), "overdue")], t(2)).await,
        Ok(Outcome::Ignored { .. })
    ));
    assert_eq!(h.deal_property(&deal, &prop).as_deref(), Some("paid"));
    // Every skip is counted by reason.
    let skipped = prometheus
        .render()
        .lines()
        .find(|l| {
            l.starts_with("l2l_crm_writer_skipped_total")
                && l.contains(r#"reason="superseded""#)
                && l.contains(r#"object_type="deals""#)
        })
        .map(str::to_string);
    assert!(
        skipped.as_deref().is_some_and(|l| l.ends_with(" 2")),
        "{skipped:?}"
    );
    // The same fact again (a redelivery after a crash before the ack) is written again.
    assert_eq!(
        handle_update(&handler, &deal, &[(prop.as_str(), "paid")], t(3)).await,
        Ok(Outcome::Done)
    );
    let calls = h.sim.calls();
    assert_eq!(
        calls.calls.get(PATCH_DEAL).copied(),
        Some(2),
        "{:?}",
        calls.calls
    );
    drop(handler);
    h.cleanup().await;
}

/// Issue 16: "paid" is written; Redis then forgets (restarted empty, or a failover lost the
/// recent writes); a late "unpaid" arrives (out of the retry ladder, or a replayed Frappe
/// delivery). The deal stays paid: the status's source time is kept in HubSpot beside it. The
/// same late "unpaid" with Redis unreachable is refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_unpaid_never_replaces_paid_even_after_redis_forgets() {
    let h = Harness::new(HubSpotSimConfig::default()).await;
    let settings = h.settings();
    let w = &settings.mapping.writeback;
    let (prop, at_prop) = (
        w.deal_invoice_status.clone(),
        w.deal_invoice_status_at.clone(),
    );
    let deal = h.deals(1).remove(0);
    let t = |s: i64| DateTime::from_timestamp(1_760_000_000 + s, 250_000_000).expect("time");
    let handler = handler(&settings, Some(&settings.redis.url));
    assert_eq!(
        handle_update(&handler, &deal, &[(prop.as_str(), "paid")], t(3)).await,
        Ok(Outcome::Done)
    );
    assert_eq!(h.deal_property(&deal, &prop).as_deref(), Some("paid"));
    assert_eq!(
        h.deal_property(&deal, &at_prop).as_deref(),
        Some("2025-10-09T08:53:23.250Z"),
        "the status's ERPNext time is written beside it"
    );

    // Redis forgets everything this namespace remembered.
    h.ns.cleanup_redis().await;
    assert!(matches!(
        handle_update(&handler, &deal, &[(prop.as_str(), "unpaid")], t(1)).await,
        Ok(Outcome::Ignored { .. })
    ));
    assert_eq!(h.deal_property(&deal, &prop).as_deref(), Some("paid"));
    drop(handler);

    let without_redis = crate::handler(&settings, Some("redis://127.0.0.1:1"));
    assert!(matches!(
        handle_update(&without_redis, &deal, &[(prop.as_str(), "overdue")], t(2)).await,
        Ok(Outcome::Ignored { .. })
    ));
    assert_eq!(h.deal_property(&deal, &prop).as_deref(), Some("paid"));
    // A newer status still goes through.
    assert_eq!(
        handle_update(
            &without_redis,
            &deal,
            &[(prop.as_str(), "credit_note_issued")],
            t(4)
        )
        .await,
        Ok(Outcome::Done)
    );
    assert_eq!(
        h.deal_property(&deal, &prop).as_deref(),
        Some("credit_note_issued")
    );
    drop(without_redis);
    h.cleanup().await;
}

/// With Redis unreachable the write still happens (unguarded), it is not blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_still_writes() {
    let h = Harness::new(HubSpotSimConfig::default()).await;
    let settings = h.settings();
    let prop = settings.mapping.writeback.deal_sales_order.clone();
    let deal = h.deals(1).remove(0);
    let handler = handler(&settings, Some("redis://127.0.0.1:1"));
    let started = Instant::now();
    let outcome = handle_update(&handler, &deal, &[(prop.as_str(), "SO-0001")], Utc::now()).await;
    assert_eq!(outcome, Ok(Outcome::Done));
    assert_eq!(h.deal_property(&deal, &prop).as_deref(), Some("SO-0001"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(handler);
    h.cleanup().await;
}

/// A handler with its own batchers; `redis` for the ordering guard.
fn handler(settings: &Settings, redis: Option<&str>) -> CrmWriterHandler {
    let client = crm_writer::hubspot_client(settings).expect("client");
    let guard = redis.map(|url| {
        Arc::new(
            OrderingGuard::connect(
                url,
                settings.names(),
                settings.redis.lease_ttl,
                settings.crm_writer.ordering_ttl,
            )
            .expect("redis url"),
        )
    });
    let cfg = CoalesceConfig {
        window: Duration::from_millis(50),
        max_batch: 100,
        parallel: 2,
    };
    crm_writer::start_batchers(&cfg, client, guard, &settings.mapping.writeback).0
}

/// 500 deal updates against HubSpot's 100 requests / 10 s: all applied in a handful of
/// `batch/update` calls, and not one 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_deal_updates_batch_inside_the_budget() {
    let h = Harness::new(HubSpotSimConfig::default()).await;
    let mut settings = h.settings();
    settings.hubspot.budget.per_10s = 100;
    let so = settings.mapping.writeback.deal_sales_order.clone();
    let sync = settings.mapping.writeback.deal_sync_status.clone();
    let deals = h.deals(500);
    let at = Utc::now();
    let commands: Vec<_> = deals
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let name = format!("SO-{i:05}");
            update(
                Kind::CrmUpdateDeal,
                d,
                &[(so.as_str(), name.as_str()), (sync.as_str(), "synced")],
                at,
            )
        })
        .collect();
    h.publish(&commands).await;
    let started = Instant::now();
    let writer = h.start(settings);
    eventually(Duration::from_secs(20), "all 500 deals written", || async {
        deals
            .iter()
            .all(|d| h.deal_property(d, &so).is_some())
            .then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    h.wait_acked().await;
    writer.stop().await;
    for (i, d) in deals.iter().enumerate() {
        assert_eq!(h.deal_property(d, &so), Some(format!("SO-{i:05}")));
        assert_eq!(h.deal_property(d, &sync).as_deref(), Some("synced"));
    }
    assert_eq!(h.queue_len().await, 0);
    assert_eq!(h.dlq_len().await, 0);
    let calls = h.sim.calls();
    let batches = calls.calls.get(BATCH_DEALS).copied().unwrap_or(0);
    let patches = calls.calls.get(PATCH_DEAL).copied().unwrap_or(0);
    println!(
        "500 updates in {elapsed:?}: {batches} batch/update + {patches} PATCH calls, {} total, {} 429s ({} throttled)",
        calls.total, calls.too_many_requests, calls.throttled
    );
    assert_eq!(calls.too_many_requests, 0, "{calls:?}");
    assert_eq!(calls.throttled, 0, "{calls:?}");
    assert!(
        batches >= 5,
        "500 objects need at least 5 calls of 100: {calls:?}"
    );
    assert!(batches + patches <= 10, "batching: {calls:?}");
    h.cleanup().await;
}

/// A tight budget (10 requests / 2 s at the simulator, the same in the shared budget): the
/// writer waits for the budget instead of hitting 429s, and batches grow while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tight_budget_no_429_and_bigger_batches() {
    let mut sim_config = HubSpotSimConfig::default();
    // The writer gets its own token, so its budget at the simulator starts fresh after setup.
    sim_config.tokens.push("writer-token".into());
    sim_config.rate_limits.per_10s = 10;
    sim_config.rate_limits.window_ms = 2_000;
    let h = Harness::new(sim_config).await;
    let mut settings = h.settings();
    settings.crm_writer.max_batch = 20;
    settings.crm_writer.in_flight = 100;
    settings.crm_writer.parallel_batches = 4;
    settings.hubspot.access_token = Some(SecretString::from("writer-token"));
    settings.hubspot.portal_id = "tight".into();
    let so = settings.mapping.writeback.deal_sales_order.clone();
    let deals = h.deals(300);
    let client = {
        // The shared budget with the simulator's window: 10 per 2 s.
        let limits = shared::budget::BudgetLimits {
            general: shared::budget::Rate::new(10, Duration::from_secs(2)),
            ..shared::budget::BudgetLimits::from_config(&settings.hubspot.budget)
        };
        let budget = shared::budget::RateBudget::connect(
            &settings.redis.url,
            settings.names(),
            settings.hubspot.portal_id.clone(),
            limits,
        )
        .expect("budget");
        shared::hubspot::HubSpotClient::from_config(&settings.hubspot, Some(budget))
            .expect("client")
    };
    let cfg = CoalesceConfig {
        window: settings.crm_writer.coalesce_window,
        max_batch: settings.crm_writer.max_batch,
        parallel: settings.crm_writer.parallel_batches,
    };
    let guard = Arc::new(
        OrderingGuard::connect(
            &settings.redis.url,
            settings.names(),
            settings.redis.lease_ttl,
            settings.crm_writer.ordering_ttl,
        )
        .expect("guard"),
    );
    let (handler, batchers) =
        crm_writer::start_batchers(&cfg, client, Some(guard), &settings.mapping.writeback);
    let handler = Arc::new(handler);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, d) in deals.iter().enumerate() {
        let (handler, deal, so) = (handler.clone(), d.clone(), so.clone());
        tasks.push(tokio::spawn(async move {
            let value = format!("SO-{i:05}");
            handle_update(
                &handler,
                &deal,
                &[(so.as_str(), value.as_str())],
                Utc::now(),
            )
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), Ok(Outcome::Done));
    }
    let elapsed = started.elapsed();
    drop(handler);
    for batcher in batchers {
        batcher.await.expect("batcher");
    }
    let calls = h.sim.calls();
    let batches = calls.calls.get(BATCH_DEALS).copied().unwrap_or(0);
    println!(
        "300 updates, max_batch 20, budget 10/2 s: {batches} batch calls in {elapsed:?}, {} 429s",
        calls.too_many_requests
    );
    assert!(deals.iter().all(|d| h.deal_property(d, &so).is_some()));
    assert_eq!(calls.too_many_requests, 0, "{calls:?}");
    assert!(batches >= 15, "at most 20 per call: {calls:?}");
    h.cleanup().await;
}

/// A deal deleted in HubSpot: its update is dead-lettered with HubSpot's 404 message and
/// correlationId; the other deals of the same batch are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_deal_goes_to_dlq_while_others_flow() {
    let h = Harness::new(HubSpotSimConfig::default()).await;
    let settings = h.settings();
    let so = settings.mapping.writeback.deal_sales_order.clone();
    let deals = h.deals(20);
    let gone = deals[7].clone();
    let resp = reqwest::Client::new()
        .delete(format!("{}crm/v3/objects/deals/{gone}", h.sim.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 204);
    h.sim.reset_calls();
    let at = Utc::now();
    let commands: Vec<_> = deals
        .iter()
        .map(|d| {
            update(
                Kind::CrmUpdateDeal,
                d,
                &[(so.as_str(), &format!("SO-{d}"))],
                at,
            )
        })
        .collect();
    let writer = h.start(settings);
    h.publish(&commands).await;
    eventually(
        Duration::from_secs(10),
        "19 deals written, 1 dead letter",
        || async {
            let written = deals
                .iter()
                .filter(|d| h.deal_property(d, &so).is_some())
                .count();
            (written == 19 && h.dlq_len().await == 1).then_some(())
        },
    )
    .await;
    // Later updates keep flowing.
    h.publish(&[update(
        Kind::CrmUpdateDeal,
        &deals[0],
        &[(so.as_str(), "SO-LATER")],
        Utc::now(),
    )])
    .await;
    eventually(Duration::from_secs(10), "a later update", || async {
        (h.deal_property(&deals[0], &so).as_deref() == Some("SO-LATER")).then_some(())
    })
    .await;
    h.wait_acked().await;
    writer.stop().await;
    let letters = drain(
        &h.ns.settings.amqp.url,
        &h.ns.names().dead_letter_queue(WorkQueue::CrmWriter),
    )
    .await;
    assert_eq!(letters.len(), 1);
    let letter: Envelope<UpdateCrmObject> =
        serde_json::from_slice(&letters[0].body).expect("body kept");
    assert_eq!(letter.payload.object_id, gone);
    let error = letters[0].header("x-l2l-error").expect("x-l2l-error");
    println!("dead letter: {error}");
    assert!(
        error.contains(&format!("no DEAL with id {gone}")),
        "HubSpot's message: {error}"
    );
    assert!(error.contains("correlationId"), "{error}");
    assert!(error.contains("HTTP 404"), "{error}");
    assert_eq!(
        letters[0].header("x-l2l-error-kind").as_deref(),
        Some("permanent")
    );
    let calls = h.sim.calls();
    assert_eq!(calls.statuses.get(&207).copied(), Some(1), "{calls:?}");
    assert_eq!(calls.statuses.get(&404).copied(), Some(1), "{calls:?}");
    h.cleanup().await;
}

/// One invalid value makes HubSpot refuse a whole `batch/update`; bisection finds it, and only
/// its message is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_value_fails_only_its_message() {
    let h = Harness::new(HubSpotSimConfig::default()).await;
    let settings = h.settings();
    let status = settings.mapping.writeback.deal_invoice_status.clone();
    let deals = h.deals(16);
    let at = Utc::now();
    let commands: Vec<_> = deals
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let value = if i == 5 { "not_a_status" } else { "unpaid" };
            update(Kind::CrmUpdateDeal, d, &[(status.as_str(), value)], at)
        })
        .collect();
    let writer = h.start(settings);
    h.publish(&commands).await;
    eventually(
        Duration::from_secs(10),
        "15 written, 1 dead letter",
        || async {
            let written = deals
                .iter()
                .filter(|d| h.deal_property(d, &status).is_some())
                .count();
            (written == 15 && h.dlq_len().await == 1).then_some(())
        },
    )
    .await;
    h.wait_acked().await;
    writer.stop().await;
    let letters = drain(
        &h.ns.settings.amqp.url,
        &h.ns.names().dead_letter_queue(WorkQueue::CrmWriter),
    )
    .await;
    let letter: Envelope<UpdateCrmObject> = serde_json::from_slice(&letters[0].body).expect("body");
    assert_eq!(letter.payload.object_id, deals[5]);
    let error = letters[0].header("x-l2l-error").expect("error");
    assert!(error.contains("not_a_status"), "{error}");
    let calls = h.sim.calls();
    println!("bisection calls: {:?}", calls.calls);
    // 16 → 8 → 4 → 2 → 1: about 2·log2(16) calls, far from 16 single PATCHes.
    assert!(calls.total <= 10, "{calls:?}");
    h.cleanup().await;
}

/// `setup` twice: the first creates the six properties, the second changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_twice_changes_nothing_the_second_time() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sim = HubSpotSim::start(HubSpotSimConfig::default(), listener).expect("sim");
    let mut ns = TestNamespace::new();
    ns.settings.hubspot.base_url = sim.base_url();
    ns.settings.hubspot.access_token = Some(SecretString::from(TOKEN));
    let first = crm_writer::run_setup(&ns.settings).await.expect("first");
    println!("{first}");
    assert_eq!((first.created(), first.present()), (7, 0));
    let deal = sim
        .create_object(SimType::Deals, &[("dealname", "x")])
        .expect("deal");
    sim.reset_calls();
    let second = crm_writer::run_setup(&ns.settings).await.expect("second");
    println!("{second}");
    assert_eq!((second.created(), second.present()), (0, 7), "{second}");
    assert!(second.to_string().contains("0 created, 7 already present"));
    assert!(!second.to_string().contains("WARNING"), "{second}");
    let calls = sim.calls();
    assert_eq!(calls.total, 2, "two listings, no create: {calls:?}");
    // The created enumeration takes the values crm-writer writes.
    let client = crm_writer::hubspot_client(&ns.settings).expect("client");
    let mut set = BTreeMap::new();
    set.insert(
        "invoice_status".to_string(),
        "credit_note_issued".to_string(),
    );
    set.insert(
        "erpnext_sync_status".to_string(),
        "needs_review".to_string(),
    );
    set.insert(
        "erpnext_sales_order_url".to_string(),
        "https://erp.example.com/app/sales-order/SO-1".to_string(),
    );
    client
        .update(ObjectType::Deals, &deal, &set)
        .await
        .expect("values accepted");
    let _ = tokio::time::timeout(Duration::from_secs(10), ns.cleanup()).await;
    sim.shutdown().await;
}
