//! A writer that dies between its ERPNext writes and its ack: the next delivery must complete
//! the work without a second Sales Order.

use std::time::Duration;

use erp_writer::apply_sync_deal;
use l2l_tests::sim::faults::FaultConfig;
use shared::commands::ErpOutcome;
use shared::testkit::eventually;
use tokio_util::sync::CancellationToken;

use crate::common::{
    ChildWriter, World, Writer, deal, outcomes_until, publish, sales_order_outcomes, sync_envelope,
};

/// The Sales Order requests: the look-up and the insert (a new Customer's order is inserted
/// without a look-up, so the insert is the first).
const SALES_ORDERS: &str = "/api/resource/Sales%20Order";

#[tokio::test]
async fn a_crash_after_the_sales_order_insert_is_completed_by_the_next_delivery() {
    let w = World::start().await;
    let site = w.site();

    // Writer A's insert of the submitted order committed, but the answer never came (it hangs
    // past the client's timeout) and A died: no outcome, no ack, no done marker.
    let answer_lost = deal("answer-lost");
    w.sim.set_faults(FaultConfig {
        timeout_rate: 1.0,
        hang_ms: 3_000,
        path_prefix: SALES_ORDERS.into(),
        ..Default::default()
    });
    let failure = apply_sync_deal(&site, &answer_lost)
        .await
        .expect_err("the insert's answer is lost");
    assert!(failure.error.is_transient(), "{failure}");
    assert_eq!(
        failure.applied.len(),
        5,
        "customer, address, 3 contacts applied"
    );
    w.sim.set_faults(FaultConfig::default());
    let orders = w.docs_where("Sales Order", "hubspot_deal_id", "deal-answer-lost");
    assert_eq!(orders.len(), 1);
    assert_eq!(
        orders[0]["docstatus"], 1,
        "inserted submitted: no Draft window"
    );

    // Writer B left a Draft (as a writer in draft mode, or one that inserted and crashed before
    // submitting, leaves one); the deal now says submit.
    let mut draft_left = deal("draft-left");
    draft_left.order.submit = false;
    apply_sync_deal(&site, &draft_left).await.expect("draft");
    draft_left.order.submit = true;
    assert_eq!(
        w.docs_where("Sales Order", "hubspot_deal_id", "deal-draft-left")[0]["docstatus"],
        0
    );

    // Writer C applied everything, then died before publishing and acking.
    let all_done = deal("all-done");
    apply_sync_deal(&site, &all_done).await.expect("applied");

    // The broker redelivers the three commands to a healthy writer.
    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;
    let writer = Writer::spawn(w.settings());
    publish(&broker, &sync_envelope(&answer_lost, "evt-answer-lost")).await;
    publish(&broker, &sync_envelope(&draft_left, "evt-draft-left")).await;
    publish(&broker, &sync_envelope(&all_done, "evt-all-done")).await;
    let outcomes = outcomes_until(
        &w,
        Duration::from_secs(15),
        "the three Sales Order outcomes",
        |o| {
            ["deal-answer-lost", "deal-draft-left", "deal-all-done"]
                .iter()
                .all(|d| sales_order_outcomes(o, d) == 1)
        },
    )
    .await;
    writer.stop().await;

    for tag in ["answer-lost", "draft-left", "all-done"] {
        let orders = w.docs_where("Sales Order", "hubspot_deal_id", &format!("deal-{tag}"));
        assert_eq!(orders.len(), 1, "{tag}: one Sales Order");
        assert_eq!(orders[0]["docstatus"], 1, "{tag}: submitted");
        assert_eq!(orders[0]["status"], "To Deliver and Bill", "{tag}");
        assert_eq!(
            w.docs_where("Customer", "hubspot_company_id", &format!("co-{tag}"))
                .len(),
            1
        );
    }
    assert_eq!(w.docs("Contact").len(), 9);
    assert_eq!(w.docs("Address").len(), 3);
    assert!(
        outcomes
            .iter()
            .all(|o| !matches!(o, ErpOutcome::SalesOrderUpserted { created: true, .. })),
        "found, not created: {outcomes:#?}"
    );
    stop.cancel();
    w.cleanup().await;
}

#[tokio::test]
async fn sigkilled_writer_between_sales_order_insert_and_ack_leaves_one_sales_order() {
    let w = World::start().await;
    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;
    let child = ChildWriter::new(&w);

    // The insert of the submitted order is applied, then its answer is held back: the writer
    // is stuck after its last ERPNext write, before publishing and acking.
    w.sim.set_faults(FaultConfig {
        timeout_rate: 1.0,
        hang_ms: 4000,
        path_prefix: SALES_ORDERS.into(),
        ..Default::default()
    });
    let mut first = child.spawn();
    let cmd = deal("kill");
    publish(&broker, &sync_envelope(&cmd, "evt-kill")).await;
    eventually(
        Duration::from_secs(15),
        "the Sales Order inserted submitted",
        || async {
            let so = w.docs_where("Sales Order", "hubspot_deal_id", "deal-kill");
            (so.len() == 1 && so[0]["docstatus"] == 1).then_some(())
        },
    )
    .await;
    first.kill().await.expect("SIGKILL");
    assert!(
        w.take_outcomes().await.is_empty(),
        "killed before publishing"
    );
    w.sim.set_faults(FaultConfig::default());

    // Restarted: the broker redelivers the unacked command (after the dead writer's lease
    // expires, the new one gets it).
    let mut second = child.spawn();
    let outcomes = outcomes_until(
        &w,
        Duration::from_secs(15),
        "the Sales Order outcome",
        |o| sales_order_outcomes(o, "deal-kill") >= 1,
    )
    .await;
    second.kill().await.expect("stop");

    let orders = w.docs_where("Sales Order", "hubspot_deal_id", "deal-kill");
    assert_eq!(orders.len(), 1, "still exactly one Sales Order");
    assert_eq!(w.docs("Sales Order").len(), 1);
    assert_eq!(orders[0]["docstatus"], 1);
    assert_eq!(w.docs("Contact").len(), 3);
    match outcomes
        .iter()
        .find(|o| matches!(o, ErpOutcome::SalesOrderUpserted { .. }))
    {
        Some(ErpOutcome::SalesOrderUpserted {
            created,
            sales_order,
            ..
        }) => {
            assert!(!created, "found by hubspot_deal_id, not created again");
            assert_eq!(sales_order, orders[0]["name"].as_str().unwrap_or_default());
        }
        other => panic!("{other:?}"),
    }
    assert!(w.take_dead_letters().await.is_empty());
    stop.cancel();
    w.cleanup().await;
}
