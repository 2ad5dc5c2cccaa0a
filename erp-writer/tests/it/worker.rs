//! The writer as deployed: `erp_writer::run` consuming its queue, with leases and done markers in
//! Redis and outcomes published to the events exchange.

use std::time::Duration;

use l2l_tests::sim::faults::FaultConfig;
use shared::commands::ErpOutcome;
use shared::names::{self, WorkQueue};
use shared::testkit::{eventually, queue_len};
use tokio_util::sync::CancellationToken;

use crate::common::{
    World, Writer, deal, line, outcome_messages_until, outcomes_until, publish,
    sales_order_outcomes, sync_envelope,
};

/// Wait until the work queue and its retry queues hold nothing ready.
async fn queues_settle(w: &World) {
    let url = w.ns.settings.amqp.url.clone();
    let names = w.ns.names();
    let mut queues = vec![names.queue(WorkQueue::ErpWriter)];
    queues.extend(
        w.ns.settings
            .worker
            .retry_tiers
            .iter()
            .map(|t| names.retry_queue(WorkQueue::ErpWriter, *t)),
    );
    eventually(
        Duration::from_secs(15),
        "erp-writer queues to empty",
        || {
            let (url, queues) = (url.clone(), queues.clone());
            async move {
                for q in &queues {
                    if queue_len(&url, q).await > 0 {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;
}

fn one_of_each(w: &World, tag: &str) {
    assert_eq!(
        w.docs_where("Customer", "hubspot_company_id", &format!("co-{tag}"))
            .len(),
        1
    );
    assert_eq!(w.docs("Address").len(), 1, "{:#?}", w.docs("Address"));
    for i in 1..=3 {
        assert_eq!(
            w.docs_where("Contact", "hubspot_contact_id", &format!("ct-{tag}-{i}"))
                .len(),
            1,
            "contact {i}"
        );
    }
    let orders = w.docs_where("Sales Order", "hubspot_deal_id", &format!("deal-{tag}"));
    assert_eq!(orders.len(), 1, "exactly one Sales Order");
    assert_eq!(orders[0]["docstatus"], 1);
    assert_eq!(w.docs("Sales Order").len(), 1);
}

#[tokio::test]
async fn five_racing_copies_on_three_tasks_make_one_of_each_and_later_copies_cost_nothing() {
    let w = World::start().await;
    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;
    let cmd = deal("race");
    let env = sync_envelope(&cmd, "evt-race");
    // Five deliveries of one command (HubSpot re-sent the batch, the mapper ran twice, …), all
    // queued before the writer starts, so three tasks take them at once.
    for _ in 0..5 {
        let mut copy = env.clone();
        copy.id = uuid::Uuid::now_v7();
        publish(&broker, &copy).await;
    }
    let writer = Writer::spawn(w.settings());
    let outcomes = outcomes_until(
        &w,
        Duration::from_secs(15),
        "the Sales Order outcome",
        |o| sales_order_outcomes(o, "deal-race") >= 1,
    )
    .await;
    queues_settle(&w).await;
    writer.stop().await;
    one_of_each(&w, "race");
    let mut outcomes = outcomes;
    outcomes.extend(w.take_outcomes().await.into_iter().map(|(e, _)| e.payload));
    assert_eq!(
        sales_order_outcomes(&outcomes, "deal-race"),
        1,
        "one command applied, four duplicates: {outcomes:#?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, ErpOutcome::SalesOrderUpserted { created: true, .. }))
    );
    assert!(w.take_dead_letters().await.is_empty());

    // The same command five more times: the done marker answers, ERPNext sees no request at all.
    w.sim.reset_calls();
    let writer = Writer::spawn(w.settings());
    for _ in 0..5 {
        let mut copy = env.clone();
        copy.id = uuid::Uuid::now_v7();
        publish(&broker, &copy).await;
    }
    queues_settle(&w).await;
    writer.stop().await;
    assert!(
        w.sim.calls().is_empty(),
        "duplicates reached ERPNext: {:?}",
        w.sim.calls()
    );
    assert!(
        w.take_outcomes().await.is_empty(),
        "duplicates publish nothing"
    );
    one_of_each(&w, "race");
    stop.cancel();
    w.cleanup().await;
}

#[tokio::test]
async fn five_copies_on_two_writers_make_one_of_each() {
    let mut w = World::start().await;
    // Two processes' worth of writers: the Redis lease keeps them apart; the loser retries.
    w.ns.settings.worker.retry_tiers = [100, 200, 400, 800, 1500]
        .map(Duration::from_millis)
        .to_vec();
    w.ns.settings.worker.quick_attempts = 2;
    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;
    let cmd = deal("two");
    let env = sync_envelope(&cmd, "evt-two");
    for _ in 0..5 {
        let mut copy = env.clone();
        copy.id = uuid::Uuid::now_v7();
        publish(&broker, &copy).await;
    }
    let a = Writer::spawn(w.settings());
    let b = Writer::spawn(w.settings());
    outcomes_until(
        &w,
        Duration::from_secs(15),
        "the Sales Order outcome",
        |o| sales_order_outcomes(o, "deal-two") >= 1,
    )
    .await;
    queues_settle(&w).await;
    a.stop().await;
    b.stop().await;
    one_of_each(&w, "two");
    assert!(w.take_dead_letters().await.is_empty());
    stop.cancel();
    w.cleanup().await;
}

#[tokio::test]
async fn with_redis_down_racing_copies_still_make_one_of_each() {
    let mut w = World::start().await;
    // Nothing listens on port 1: every lease and marker call answers "unknown".
    w.ns.settings.redis.url = "redis://127.0.0.1:1".into();
    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;
    let cmd = deal("noredis");
    let env = sync_envelope(&cmd, "evt-noredis");
    for _ in 0..5 {
        let mut copy = env.clone();
        copy.id = uuid::Uuid::now_v7();
        publish(&broker, &copy).await;
    }
    let writer = Writer::spawn(w.settings());
    let outcomes = outcomes_until(
        &w,
        Duration::from_secs(15),
        "five Sales Order outcomes",
        |o| sales_order_outcomes(o, "deal-noredis") >= 5,
    )
    .await;
    queues_settle(&w).await;
    writer.stop().await;
    one_of_each(&w, "noredis");
    // Without markers every copy is applied — and finds what the first one created.
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, ErpOutcome::SalesOrderUpserted { created: true, .. }))
        .count();
    assert_eq!(created, 1, "{outcomes:#?}");
    stop.cancel();
    w.cleanup().await;
}

#[tokio::test]
async fn erpnext_errors_and_timeouts_are_retried_until_applied() {
    let mut w = World::start().await;
    w.ns.settings.worker.retry_tiers = [100, 200, 300, 400, 600, 800, 1000, 1500, 2000, 3000]
        .map(Duration::from_millis)
        .to_vec();
    w.ns.settings.erpnext.timeout = Duration::from_millis(400);
    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;

    // Phase 1: every request answers 500/502/503.
    w.sim.set_faults(FaultConfig {
        seed: 7,
        error_rate: 1.0,
        ..Default::default()
    });
    let writer = Writer::spawn(w.settings());
    publish(&broker, &sync_envelope(&deal("outage"), "evt-outage")).await;
    eventually(Duration::from_secs(10), "three injected 5xx", || async {
        (w.sim.injected().get("error").copied().unwrap_or(0) >= 3).then_some(())
    })
    .await;
    // Phase 2: ERPNext applies each request but answers after the client gave up.
    w.sim.set_faults(FaultConfig {
        seed: 7,
        timeout_rate: 1.0,
        hang_ms: 1500,
        ..Default::default()
    });
    eventually(Duration::from_secs(10), "two injected timeouts", || async {
        (w.sim.injected().get("timeout").copied().unwrap_or(0) >= 2).then_some(())
    })
    .await;
    assert!(
        w.docs("Sales Order").is_empty(),
        "not applied while ERPNext is failing"
    );
    // Phase 3: ERPNext recovers.
    w.sim.set_faults(FaultConfig::default());
    outcomes_until(
        &w,
        Duration::from_secs(15),
        "the Sales Order outcome",
        |o| sales_order_outcomes(o, "deal-outage") >= 1,
    )
    .await;
    queues_settle(&w).await;
    writer.stop().await;
    one_of_each(&w, "outage");
    assert!(
        w.take_dead_letters().await.is_empty(),
        "nothing dead-lettered"
    );
    stop.cancel();
    w.cleanup().await;
}

#[tokio::test]
async fn unknown_item_is_dead_lettered_with_frappes_message() {
    let w = World::start().await;
    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;
    let mut cmd = deal("sku");
    cmd.order.items = vec![line("SKU-WIDGET", 1.0, 25.0), line("W-9", 2.0, 10.0)];
    let writer = Writer::spawn(w.settings());
    publish(&broker, &sync_envelope(&cmd, "evt-sku")).await;
    let letters = eventually(Duration::from_secs(15), "a dead letter", || async {
        let l = w.take_dead_letters().await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    writer.stop().await;
    assert_eq!(letters.len(), 1);
    let dl = &letters[0];
    assert_eq!(
        dl.header(names::HEADER_ERROR_KIND).as_deref(),
        Some("permanent")
    );
    assert_eq!(
        dl.header(names::HEADER_ERROR).as_deref(),
        Some(
            "ERPNext rejected item 'W-9': Item W-9 not found; add the Item or map the SKU under [mapping.items]"
        )
    );
    assert!(w.docs("Sales Order").is_empty());
    // What was applied before the rejection is still reported.
    let outcomes: Vec<ErpOutcome> = w
        .take_outcomes()
        .await
        .into_iter()
        .map(|(e, _)| e.payload)
        .collect();
    assert!(
        outcomes.iter().any(|o| matches!(o, ErpOutcome::CustomerUpserted { hubspot_company_id, .. } if hubspot_company_id == "co-sku")),
        "{outcomes:#?}"
    );
    assert_eq!(sales_order_outcomes(&outcomes, "deal-sku"), 0);
    // …and the deal is told at once, so HubSpot shows `error` with the reason.
    let failed: Vec<&String> = outcomes
        .iter()
        .filter_map(|o| match o {
            ErpOutcome::SyncFailed {
                hubspot_deal_id,
                reason,
            } if hubspot_deal_id == "deal-sku" => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{outcomes:#?}");
    assert!(
        failed[0].contains("permanent") && failed[0].contains("W-9"),
        "{}",
        failed[0]
    );
    stop.cancel();
    w.cleanup().await;
}

#[tokio::test]
async fn with_redis_down_two_writers_still_converge_on_one_of_each() {
    let mut w = World::start().await;
    w.ns.settings.redis.url = "redis://127.0.0.1:1".into();
    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;
    let env = sync_envelope(&deal("split"), "evt-split");
    for _ in 0..6 {
        let mut copy = env.clone();
        copy.id = uuid::Uuid::now_v7();
        publish(&broker, &copy).await;
    }
    // Two processes' worth of writers, no lease between them: only ERPNext's keys and the
    // create-then-converge step keep the documents single.
    let a = Writer::spawn(w.settings());
    let b = Writer::spawn(w.settings());
    outcomes_until(
        &w,
        Duration::from_secs(15),
        "six Sales Order outcomes",
        |o| sales_order_outcomes(o, "deal-split") >= 6,
    )
    .await;
    queues_settle(&w).await;
    a.stop().await;
    b.stop().await;
    one_of_each(&w, "split");
    stop.cancel();
    w.cleanup().await;
}

#[tokio::test]
async fn outcome_envelopes_keep_the_correlation_and_are_routed_by_type() {
    let w = World::start().await;
    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;
    let writer = Writer::spawn(w.settings());
    let env = sync_envelope(&deal("env"), "evt-env");
    publish(&broker, &env).await;
    let taken = outcome_messages_until(&w, Duration::from_secs(15), 6).await;
    writer.stop().await;
    assert_eq!(taken.len(), 6, "customer, address, 3 contacts, sales order");
    for (outcome, msg) in &taken {
        assert_eq!(outcome.kind, shared::envelope::Kind::ErpOutcome);
        assert_eq!(outcome.correlation_id, env.correlation_id);
        assert_eq!(outcome.source, shared::envelope::Source::ErpWriter);
        assert_eq!(msg.routing_key, outcome.payload.routing_key());
        assert!(
            outcome.idempotency_key.ends_with(&env.idempotency_key),
            "{}",
            outcome.idempotency_key
        );
    }
    stop.cancel();
    w.cleanup().await;
}

/// A writer SIGKILLed while holding a company's lease leaves the lease behind. The next writer
/// waits for it to lapse (about one lease TTL) instead of sending the deal up the retry ladder,
/// whose first tier here is a minute away: the order lands within a few seconds, and no copy
/// ever went to a retry queue.
#[tokio::test]
async fn a_dead_writers_lease_delays_its_company_by_about_one_ttl() {
    let mut w = World::start().await;
    let ttl = Duration::from_secs(2);
    w.ns.settings.redis.lease_ttl = ttl;
    w.ns.settings.worker.retry_tiers = vec![Duration::from_secs(60)];
    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;
    let cmd = deal("dead");
    let dedup =
        shared::dedup::Dedup::connect(&w.ns.settings.redis.url, w.ns.names()).expect("redis url");
    let held = dedup
        .acquire_lease("erp-writer:company:co-dead", "erp-writer/killed", ttl)
        .await
        .expect("lease");
    assert!(
        matches!(held, shared::dedup::LeaseResult::Acquired(_)),
        "{held:?}"
    );
    let started = std::time::Instant::now();
    let writer = Writer::spawn(w.settings());
    publish(&broker, &sync_envelope(&cmd, "evt-dead")).await;
    outcomes_until(&w, Duration::from_secs(20), "the Sales Order", |o| {
        sales_order_outcomes(o, "deal-dead") == 1
    })
    .await;
    let took = started.elapsed();
    writer.stop().await;
    assert!(
        took >= ttl - Duration::from_millis(300),
        "the order must wait for the dead writer's lease ({took:?})"
    );
    assert!(
        took < Duration::from_secs(10),
        "about one lease TTL, not a retry tier ({took:?})"
    );
    let retry_queue =
        w.ns.names()
            .retry_queue(WorkQueue::ErpWriter, Duration::from_secs(60));
    assert_eq!(queue_len(&w.ns.settings.amqp.url, &retry_queue).await, 0);
    assert_eq!(
        w.docs_where("Sales Order", "hubspot_deal_id", "deal-dead")
            .len(),
        1
    );
    stop.cancel();
    w.cleanup().await;
}
