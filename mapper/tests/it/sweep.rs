//! No fact depends on one ERPNext delivery: an invoice paid while ingest is down (Frappe's three
//! webhook tries all fail) reaches the deal through the sweep — by hand (`mapper reconcile
//! --fix`, or one [`mapper::sweep::Sweep`]) and periodically inside `mapper run`.
//!
//! The whole loop runs here (both simulators, ingest, mapper, erp-writer, crm-writer), with
//! ingest started by the test so it can be stopped while the other services keep running; the
//! last test uses the mapper alone on a site without `erp-writer setup`.

use std::collections::BTreeMap;
use std::time::Duration;

use l2l_tests::sim::erpnext::DeliveryState;
use l2l_tests::stack::{Stack, StackOptions};
use mapper::emit::Emitter;
use mapper::sweeper::{Acquired, SweepLease};
use mapper::watermark::Origin;
use serde_json::json;
use shared::broker::Broker;
use shared::testkit::eventually;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{TestEnv, seed_won_deal};

const WAIT: Duration = Duration::from_secs(30);
const LINES: &[(&str, u32, f64)] = &[("SKU-WIDGET", 2, 25.0), ("SKU-GADGET", 1, 40.0)];

/// The stack with ingest under the test's control.
struct Gap {
    stack: Stack,
    ingest: Option<(CancellationToken, JoinHandle<std::io::Result<()>>)>,
}

impl Gap {
    /// Services started with `interval` as `reconcile.interval`.
    async fn start(interval: Duration) -> Self {
        let mut stack = Stack::start(StackOptions {
            services: false,
            ..StackOptions::default()
        })
        .await
        .expect("stack");
        stack.settings.reconcile.interval = interval;
        let listener = stack.take_ingest_listener().expect("ingest listener");
        stack.start_services();
        let stop = CancellationToken::new();
        let ingest = tokio::spawn(ingest::run(stack.settings.clone(), listener, stop.clone()));
        Self {
            stack,
            ingest: Some((stop, ingest)),
        }
    }

    /// A deal won, synced, and its Sales Order invoiced, with the deal showing `unpaid` — all
    /// through the live path. Returns (deal, invoice).
    async fn invoiced_deal(&self, n: usize) -> (String, String) {
        let s = &self.stack;
        let deal = s.seed_deal(n, 1, LINES).expect("seed").deal_id;
        s.win_deal(&deal).expect("win");
        let so = eventually(WAIT, "the deal shows its Sales Order", || async {
            s.deal_property(&deal, "erpnext_sales_order")
        })
        .await;
        let invoice = s.erpnext.invoice_sales_order(&so).expect("invoice");
        eventually(WAIT, "the deal shows unpaid", || async {
            (s.deal_property(&deal, "invoice_status").as_deref() == Some("unpaid")).then_some(())
        })
        .await;
        (deal, invoice)
    }

    /// Ingest goes away; ERPNext's deliveries to it now fail.
    async fn stop_ingest(&mut self) {
        if let Some((stop, task)) = self.ingest.take() {
            stop.cancel();
            task.await
                .expect("ingest task")
                .expect("ingest stopped cleanly");
        }
    }

    /// Pay `invoice` and wait until Frappe has given up its webhook (three failed tries).
    async fn pay_unheard(&self, invoice: &str) {
        let erp = &self.stack.erpnext;
        let before = erp.webhook_deliveries().len();
        erp.pay_invoice(invoice, None).expect("pay");
        let dropped = eventually(WAIT, "Frappe gives the webhook up", || async {
            let new: Vec<_> = erp
                .webhook_deliveries()
                .into_iter()
                .skip(before)
                .filter(|d| d.docname == invoice)
                .collect();
            (!new.is_empty() && new.iter().all(|d| d.state == DeliveryState::Failed)).then_some(new)
        })
        .await;
        assert!(dropped.iter().all(|d| d.attempts.len() == 3), "{dropped:?}");
    }

    fn invoice_status(&self, deal: &str) -> Option<String> {
        self.stack.deal_property(deal, "invoice_status")
    }

    async fn shows_paid(&self, deal: &str) {
        eventually(WAIT, "the deal shows paid", || async {
            (self.invoice_status(deal).as_deref() == Some("paid")).then_some(())
        })
        .await;
    }

    async fn finish(mut self) {
        self.stop_ingest().await;
        self.stack.stop().await.expect("stack stops cleanly");
    }
}

/// Calls per simulator endpoint.
fn erp_calls(stack: &Stack, endpoint: &str) -> u64 {
    stack.erpnext.calls().get(endpoint).copied().unwrap_or(0)
}

fn hubspot_calls(stack: &Stack, endpoint: &str) -> u64 {
    stack
        .hubspot
        .calls()
        .calls
        .get(endpoint)
        .copied()
        .unwrap_or(0)
}

const LIST_INVOICES: &str = "GET /api/resource/Sales Invoice";
const LIST_ORDERS: &str = "GET /api/resource/Sales Order";
const READ_DEALS: &str = "POST /crm/v3/objects/deals/batch/read";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invoices_paid_while_ingest_is_down_show_paid_after_one_sweep() {
    let mut gap = Gap::start(Duration::ZERO).await;
    let mut deals = Vec::new();
    for n in 0..3 {
        deals.push(gap.invoiced_deal(n).await);
    }
    let s = &gap.stack.settings;
    let sweep = mapper::sweep_from_settings(s).expect("sweep");
    let broker_stop = CancellationToken::new();
    let broker = Broker::from_settings(s, broker_stop.clone());
    assert!(broker.wait_ready(WAIT).await, "broker");
    let emitter = Emitter::new(broker);
    // A first sweep while everything was delivered finds nothing to repair.
    let first = sweep.run(Some(&emitter)).await.expect("first sweep");
    assert_eq!(first.origin, Origin::Lost);
    assert_eq!((first.invoices, first.sales_orders), (3, 3));
    assert_eq!(first.repairs, [], "{first}");
    assert_eq!(first.commands, 0);

    gap.stop_ingest().await;
    for (_, invoice) in &deals {
        gap.pay_unheard(invoice).await;
    }
    for (deal, _) in &deals {
        assert_eq!(
            gap.invoice_status(deal).as_deref(),
            Some("unpaid"),
            "the webhook was lost, so the live path cannot know"
        );
    }

    let calls = |stack: &Stack| {
        [
            erp_calls(stack, LIST_INVOICES) + erp_calls(stack, LIST_ORDERS),
            hubspot_calls(stack, READ_DEALS),
        ]
    };
    let before = calls(&gap.stack);
    let report = sweep.run(Some(&emitter)).await.expect("sweep");
    let after = calls(&gap.stack);
    assert_eq!(report.origin, Origin::Redis);
    let repaired: BTreeMap<String, (Option<String>, String)> = report
        .repairs
        .iter()
        .map(|r| {
            assert_eq!(r.property, "invoice_status");
            (r.deal.clone(), (r.hubspot.clone(), r.erpnext.clone()))
        })
        .collect();
    let want: BTreeMap<String, (Option<String>, String)> = deals
        .iter()
        .map(|(d, _)| (d.clone(), (Some("unpaid".into()), "paid".into())))
        .collect();
    assert_eq!(repaired, want, "{report}");
    assert_eq!(report.commands, 3);
    // The cost of a sweep over 3 changed invoices (and their orders, re-stamped by the payment):
    // one list call per doctype, one HubSpot batch read.
    assert_eq!(
        [report.erpnext_calls, report.hubspot_calls],
        [2, 1],
        "{report}"
    );
    assert_eq!(
        [after[0] - before[0], after[1] - before[1]],
        [2, 1],
        "the report counts what the simulators saw"
    );
    for (deal, _) in &deals {
        gap.shows_paid(deal).await;
    }

    // Nothing changed since: the next sweep reads ERPNext (two calls) and publishes nothing;
    // the documents it re-reads in the overlap were verified last time, so HubSpot is not asked.
    let again = sweep.run(Some(&emitter)).await.expect("second sweep");
    assert_eq!(again.repairs, [], "{again}");
    assert_eq!(again.commands, 0);
    assert!(again.invoices >= 3, "the overlap is read again: {again}");
    assert_eq!(
        [again.erpnext_calls, again.hubspot_calls],
        [2, 0],
        "{again}"
    );

    broker_stop.cancel();
    gap.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_watermark_falls_back_to_the_lookback_and_misses_nothing() {
    let mut gap = Gap::start(Duration::ZERO).await;
    let (deal, invoice) = gap.invoiced_deal(0).await;
    let settings = gap.stack.settings.clone();
    let swept = mapper::run_reconcile(&settings, true)
        .await
        .expect("reconcile --fix")
        .sweep
        .expect("a sweep");
    let watermark = swept.watermark.expect("a watermark after --fix");
    assert_eq!(swept.repairs, []);

    gap.stop_ingest().await;
    gap.pay_unheard(&invoice).await;
    // Redis loses the watermark (a flush, a failover).
    let store = mapper::sweep_from_settings(&settings)
        .expect("sweep")
        .watermark;
    assert!(store.clear().await, "watermark deleted");

    // Without --fix: the differences are reported, nothing is published or stored.
    let dry = mapper::run_reconcile(&settings, false)
        .await
        .expect("reconcile")
        .sweep
        .expect("a sweep");
    assert_eq!(dry.origin, Origin::Lost);
    assert_eq!(dry.repairs.len(), 1, "{dry}");
    assert_eq!((dry.commands, dry.watermark), (0, None));
    assert!(dry.to_string().contains("run with --fix"), "{dry}");
    assert_eq!(gap.invoice_status(&deal).as_deref(), Some("unpaid"));

    let report = mapper::run_reconcile(&settings, true)
        .await
        .expect("reconcile --fix")
        .sweep
        .expect("a sweep");
    assert_eq!(report.origin, Origin::Lost);
    let week_ago = mapper::watermark::site_time(
        chrono::Utc::now() - settings.reconcile.lookback,
        settings.erpnext.time_zone.parse().expect("tz"),
    );
    let kept = mapper::watermark::site_time(
        watermark - settings.reconcile.overlap,
        settings.erpnext.time_zone.parse().expect("tz"),
    );
    assert!(
        report.from_site.as_str() <= week_ago.as_str() && report.from_site < kept,
        "the window is the lookback: {} (lookback starts {week_ago}; the lost watermark's window {kept})",
        report.from_site
    );
    assert_eq!(report.repairs.len(), 1, "{report}");
    assert_eq!(report.repairs[0].deal, deal);
    assert_eq!(report.repairs[0].erpnext, "paid");
    assert!(report.watermark.is_some_and(|w| w >= watermark));
    gap.shows_paid(&deal).await;
    gap.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_running_mapper_sweeps_on_its_interval_and_a_sweep_by_hand_respects_its_lease() {
    let mut gap = Gap::start(Duration::from_secs(1)).await;
    let (deal, invoice) = gap.invoiced_deal(0).await;
    gap.stop_ingest().await;
    gap.pay_unheard(&invoice).await;
    gap.shows_paid(&deal).await;

    // While a replica holds the lease, a sweep by hand refuses to run alongside it.
    let settings = gap.stack.settings.clone();
    let conn = shared::redis_conn::connect(&settings.redis.url).expect("redis");
    let lease = eventually(WAIT, "the sweep lease", || async {
        match SweepLease::acquire(conn.clone(), &settings.names(), "test").await {
            Acquired::Held(l) => Some(l),
            _ => None,
        }
    })
    .await;
    let report = mapper::run_reconcile(&settings, true)
        .await
        .expect("the comparison still runs");
    assert_eq!(report.sweep, None);
    assert!(
        report
            .sweep_error
            .as_deref()
            .is_some_and(|e| e.contains("a sweep is running (test/")),
        "{report}"
    );
    assert!(lease.renew().await, "the holder renews");
    lease.release().await;
    gap.finish().await;
}

#[tokio::test]
async fn invoices_without_their_own_deal_id_are_resolved_through_their_sales_orders() {
    // The plain simulator: no `erp-writer setup`, so Sales Invoice has no hubspot_deal_id field
    // and its documents are dated 2026-11-24 (inside a one-year lookback).
    let env = TestEnv::start_with(|s| {
        s.reconcile.interval = Duration::ZERO;
        s.reconcile.lookback = Duration::from_secs(365 * 24 * 3600);
    })
    .await;
    let ids = seed_won_deal(
        &env.hubspot,
        "Invoiced elsewhere",
        1,
        1,
        true,
        &BTreeMap::new(),
    );
    let deal = ids["deal"].clone();
    crate::support::seed_globex(&env.erpnext, &ids["company"]);
    let so = env
        .erpnext
        .seed(
            "Sales Order",
            json!({"customer": "Globex Corporation", "company": "Acme Test Ltd", "transaction_date": "2026-11-24",
                   "delivery_date": "2026-12-15", "currency": "USD", "hubspot_deal_id": deal, "docstatus": 1,
                   "items": [{"item_code": "SKU-WIDGET", "qty": 2, "rate": 25}, {"item_code": "SKU-GADGET", "qty": 1, "rate": 40}]}),
        )
        .expect("sales order")["name"]
        .as_str()
        .expect("name")
        .to_string();
    let invoice = env.erpnext.invoice_sales_order(&so).expect("invoice");
    assert!(
        env.erpnext
            .get("Sales Invoice", &invoice)
            .is_some_and(|i| i.get("hubspot_deal_id").is_none()),
        "the invoice does not name its deal"
    );

    let report = mapper::run_reconcile(&env.settings, false)
        .await
        .expect("reconcile");
    let sweep = report.sweep.expect("a sweep");
    let mut got: Vec<(String, String, String)> = sweep
        .repairs
        .iter()
        .map(|r| (r.deal.clone(), r.property.clone(), r.erpnext.clone()))
        .collect();
    got.sort();
    let url = format!("{}app/sales-order/{so}", env.settings.erpnext.base_url);
    assert_eq!(
        got,
        [
            (deal.clone(), "erpnext_sales_order".into(), so.clone()),
            (deal.clone(), "erpnext_sales_order_url".into(), url),
            (deal.clone(), "invoice_status".into(), "unpaid".into()),
        ],
        "{sweep}"
    );
    // Invoices: the query with hubspot_deal_id (refused), again without it (one row per item,
    // two items); orders: one list; the invoice's order resolved to its deal: one list; the
    // deal's order revisions: one list.
    assert_eq!((sweep.invoices, sweep.sales_orders), (1, 1));
    assert_eq!(
        [sweep.erpnext_calls, sweep.hubspot_calls],
        [5, 1],
        "{sweep}"
    );
    let (_, crm) = env.settle().await;
    assert!(crm.is_empty(), "a report publishes nothing: {crm:?}");
    env.finish().await;
}

#[tokio::test]
async fn cancelled_and_amended_orders_reach_the_deal_as_the_live_path_shows_them() {
    let env = TestEnv::start_with(|s| {
        s.reconcile.interval = Duration::ZERO;
        s.reconcile.lookback = Duration::from_secs(365 * 24 * 3600);
    })
    .await;
    let erp = shared::erpnext::ErpNextClient::new(&env.settings.erpnext).expect("client");
    let amended = seed_won_deal(&env.hubspot, "Amended", 1, 1, true, &BTreeMap::new());
    let cancelled = seed_won_deal(&env.hubspot, "Cancelled", 1, 1, true, &BTreeMap::new());
    crate::support::seed_globex(&env.erpnext, &amended["company"]);
    let first = crate::support::submitted_order(&erp, &amended["deal"], None).await;
    crate::support::cancel_order(&erp, &first).await;
    let amendment = crate::support::submitted_order(&erp, &amended["deal"], Some(&first)).await;
    let gone = crate::support::submitted_order(&erp, &cancelled["deal"], None).await;
    crate::support::cancel_order(&erp, &gone).await;
    // HubSpot shows what the live path wrote before the cancels: both deals synced to their
    // first order. The Sales Order webhooks that followed were lost.
    for (deal, so) in [(&amended["deal"], &first), (&cancelled["deal"], &gone)] {
        env.hubspot
            .update_as_user(
                l2l_tests::sim::hubspot::ObjectType::Deals,
                deal,
                &[
                    ("erpnext_sales_order", so.as_str()),
                    ("erpnext_sync_status", "synced"),
                ],
            )
            .expect("update");
    }

    let report = mapper::run_reconcile(&env.settings, true)
        .await
        .expect("reconcile --fix");
    let sweep = report.sweep.expect("a sweep");
    assert_eq!(sweep.commands, 2, "{sweep}");
    let (_, crm) = env.settle().await;
    let mut got: Vec<(String, BTreeMap<String, String>)> = crm
        .iter()
        .map(|t| {
            assert_eq!(t.routing_key, "crm.update_deal");
            let u = t.crm();
            (u.object_id, u.properties)
        })
        .collect();
    got.sort();
    let url = format!(
        "{}app/sales-order/{amendment}",
        env.settings.erpnext.base_url
    );
    let mut want = vec![
        (
            amended["deal"].clone(),
            BTreeMap::from([
                ("erpnext_sales_order".to_string(), amendment.clone()),
                ("erpnext_sales_order_url".to_string(), url),
                ("erpnext_sync_status".to_string(), "synced".to_string()),
                ("erpnext_sync_message".to_string(), String::new()),
            ]),
        ),
        (
            cancelled["deal"].clone(),
            BTreeMap::from([
                ("erpnext_sales_order".to_string(), gone.clone()),
                (
                    "erpnext_sync_status".to_string(),
                    "needs_review".to_string(),
                ),
                (
                    "erpnext_sync_message".to_string(),
                    format!("Sales Order {gone}: {}", mapper::sales_order::CANCELLED),
                ),
            ]),
        ),
    ];
    want.sort();
    assert_eq!(got, want, "{sweep}");
    env.finish().await;
}
