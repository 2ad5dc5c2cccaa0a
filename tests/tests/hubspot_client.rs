//! The shared HubSpot client against the stateful HubSpot simulator: what a deal read costs in
//! API calls, 207/404 handling, writes that the simulator validates, search paging, and the shared
//! Redis budget keeping several clients under the simulator's rolling limit (zero 429s) and
//! recovering from injected 429s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use l2l_tests::sim::faults::FaultConfig;
use l2l_tests::sim::hubspot::{
    self as sim, HubSpotSim, HubSpotSimConfig, HubSpotSimHandle, RateLimitConfig,
};
use shared::budget::{Bucket, BudgetLimits, Rate, RateBudget, TryAcquire};
use shared::config::BudgetConfig;
use shared::hubspot::types::{
    BatchUpdateInput, FieldType, Filter, FilterGroup, FilterOperator, PropertyCreate, PropertyType,
    SearchRequest, Sort, SortDirection,
};
use shared::hubspot::{
    DEAL_ASSOCIATIONS, ErrorKind, HubSpotClient, ObjectType, PropertyCreated, RetryPolicy,
    SecretString,
};
use shared::names::Names;

const TOKEN: &str = "sim-token";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

async fn start_sim(rate_limits: RateLimitConfig) -> HubSpotSimHandle {
    let config = HubSpotSimConfig {
        tokens: vec![TOKEN.into()],
        rate_limits,
        first_object_id: Some(1000),
        ..HubSpotSimConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    HubSpotSim::start(config, listener).expect("simulator starts")
}

fn client(sim: &HubSpotSimHandle, budget: Option<RateBudget>) -> HubSpotClient {
    HubSpotClient::new(
        sim.base_url(),
        SecretString::from(TOKEN),
        budget,
        Duration::from_secs(5),
    )
    .expect("client")
    .with_retry(RetryPolicy {
        min_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    })
}

/// A fresh Redis namespace; `cleanup` deletes its keys.
struct Ns(Names);

impl Ns {
    fn new() -> Self {
        Self(Names::new(format!("t{}", uuid::Uuid::now_v7().simple())))
    }

    fn budget(&self, limits: BudgetLimits) -> RateBudget {
        RateBudget::connect(REDIS_URL, self.0.clone(), "62515", limits).expect("lazy connect")
    }

    async fn cleanup(&self) {
        let mut conn = redis::Client::open(REDIS_URL)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0.namespace()))
            .query_async(&mut conn)
            .await
            .expect("keys");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .expect("del");
        }
    }
}

fn calls(sim: &HubSpotSimHandle, endpoint: &str) -> u64 {
    sim.calls().calls.get(endpoint).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_deal_with_its_associations_costs_one_call() {
    let sim = start_sim(RateLimitConfig::default()).await;
    let company = sim
        .create_object(
            sim::ObjectType::Companies,
            &[("name", "ACME GmbH"), ("domain", "acme.example")],
        )
        .expect("company");
    let contact = sim
        .create_object(sim::ObjectType::Contacts, &[("email", "a@acme.example")])
        .expect("contact");
    let items: Vec<String> = (0..3)
        .map(|i| {
            sim.create_object(
                sim::ObjectType::LineItems,
                &[("hs_sku", &format!("W-{i}")), ("quantity", "2")],
            )
            .expect("line item")
        })
        .collect();
    let deal = sim
        .create_object(
            sim::ObjectType::Deals,
            &[
                ("dealname", "ACME – Rahmenvertrag"),
                ("dealstage", "closedwon"),
                ("amount", "12500.50"),
            ],
        )
        .expect("deal");
    sim.associate(
        (sim::ObjectType::Deals, &deal),
        (sim::ObjectType::Companies, &company),
        true,
    )
    .expect("assoc");
    sim.associate(
        (sim::ObjectType::Deals, &deal),
        (sim::ObjectType::Contacts, &contact),
        false,
    )
    .expect("assoc");
    for item in &items {
        sim.associate(
            (sim::ObjectType::Deals, &deal),
            (sim::ObjectType::LineItems, item),
            false,
        )
        .expect("assoc");
    }
    sim.reset_calls();

    let got = client(&sim, None)
        .get_deal_with_associations(
            &deal,
            &["dealname", "dealstage", "amount", "closedate"],
            &DEAL_ASSOCIATIONS,
        )
        .await
        .expect("deal");
    assert_eq!(got.id, deal);
    assert_eq!(got.property("dealstage"), Some("closedwon"));
    assert_eq!(got.property("amount"), Some("12500.50"));
    assert_eq!(
        got.property("closedate"),
        None,
        "unset property (null) reads as absent"
    );
    assert_eq!(got.association_ids(ObjectType::Companies), [company]);
    assert_eq!(got.association_ids(ObjectType::Contacts), [contact]);
    let mut line_items = got.association_ids(ObjectType::LineItems);
    line_items.sort();
    assert_eq!(line_items, items);
    assert_eq!(sim.calls().total, 1, "{:?}", sim.calls().calls);
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_read_reports_missing_ids_and_404_is_typed() {
    let sim = start_sim(RateLimitConfig::default()).await;
    let ids: Vec<String> = (0..3)
        .map(|i| {
            sim.create_object(sim::ObjectType::Companies, &[("name", &format!("C{i}"))])
                .expect("company")
        })
        .collect();
    sim.reset_calls();
    let c = client(&sim, None);
    let mut wanted = ids.clone();
    wanted.push("99999999".into());
    let read = c
        .batch_read(ObjectType::Companies, &wanted, &["name", "domain"])
        .await
        .expect("batch read");
    let mut found: Vec<String> = read.objects.iter().map(|o| o.id.clone()).collect();
    found.sort();
    assert_eq!(found, ids);
    assert_eq!(read.missing, ["99999999"]);
    assert_eq!(calls(&sim, "POST /crm/v3/objects/companies/batch/read"), 1);

    let err = c
        .get_object(ObjectType::Deals, "99999999", &["dealname"], &[])
        .await
        .expect_err("no such deal");
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(!err.is_transient());
    assert_eq!(err.status, Some(404));
    assert!(err.correlation_id.is_some(), "{err}");
    assert_eq!(sim.calls().total, 2, "a 404 is not retried");
    sim.shutdown().await;
}

#[tokio::test]
async fn properties_are_created_once_and_writes_land() {
    let sim = start_sim(RateLimitConfig::default()).await;
    let deals: Vec<String> = (0..2)
        .map(|i| {
            sim.create_object(sim::ObjectType::Deals, &[("dealname", &format!("D{i}"))])
                .expect("deal")
        })
        .collect();
    let c = client(&sim, None);
    let property = |name: &str| PropertyCreate {
        name: name.into(),
        label: name.into(),
        property_type: PropertyType::String,
        field_type: FieldType::Text,
        group_name: "dealinformation".into(),
        description: None,
        options: vec![],
        display_order: None,
        has_unique_value: None,
        hidden: None,
        form_field: None,
    };
    for name in ["erpnext_sales_order", "erpnext_sync_status"] {
        assert!(matches!(
            c.create_property(ObjectType::Deals, &property(name))
                .await
                .expect("create"),
            PropertyCreated::Created(_)
        ));
    }
    assert_eq!(
        c.create_property(ObjectType::Deals, &property("erpnext_sales_order"))
            .await
            .expect("409 is not an error"),
        PropertyCreated::AlreadyExists
    );
    assert!(
        c.list_properties(ObjectType::Deals)
            .await
            .expect("list")
            .iter()
            .any(|p| p.name == "erpnext_sync_status")
    );

    let props = BTreeMap::from([(
        "erpnext_sales_order".to_string(),
        "SO-2025-00017".to_string(),
    )]);
    let updated = c
        .update(ObjectType::Deals, &deals[0], &props)
        .await
        .expect("patch");
    assert_eq!(
        updated.property("erpnext_sales_order"),
        Some("SO-2025-00017")
    );

    let inputs: Vec<BatchUpdateInput> = deals
        .iter()
        .map(|id| BatchUpdateInput {
            id: id.clone(),
            properties: BTreeMap::from([("erpnext_sync_status".to_string(), "synced".to_string())]),
            id_property: None,
        })
        .collect();
    let written = c
        .batch_update(ObjectType::Deals, &inputs)
        .await
        .expect("batch update");
    assert_eq!(written.objects.len(), 2);
    assert!(written.errors.is_empty(), "{:?}", written.errors);
    for id in &deals {
        let view = sim.object(sim::ObjectType::Deals, id).expect("deal");
        assert_eq!(
            view.properties
                .get("erpnext_sync_status")
                .map(String::as_str),
            Some("synced")
        );
    }

    let bad = BTreeMap::from([("erpnext_sales_orderx".to_string(), "SO-1".to_string())]);
    let err = c
        .update(ObjectType::Deals, &deals[0], &bad)
        .await
        .expect_err("unknown property");
    assert_eq!(err.kind, ErrorKind::Validation);
    assert_eq!(err.category.as_deref(), Some("VALIDATION_ERROR"));
    assert!(err.message.contains("PROPERTY_DOESNT_EXIST"), "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn search_all_pages_through_every_result() {
    let sim = start_sim(RateLimitConfig::default()).await;
    let mut won: Vec<String> = (0..5)
        .map(|i| {
            sim.create_object(
                sim::ObjectType::Deals,
                &[("dealname", &format!("W{i}")), ("dealstage", "closedwon")],
            )
            .expect("deal")
        })
        .collect();
    sim.create_object(
        sim::ObjectType::Deals,
        &[("dealname", "L"), ("dealstage", "closedlost")],
    )
    .expect("deal");
    sim.reset_calls();
    let ns = Ns::new();
    let c = client(
        &sim,
        Some(ns.budget(BudgetLimits::from_config(&BudgetConfig::default()))),
    );
    let request = SearchRequest {
        filter_groups: vec![FilterGroup {
            filters: vec![Filter::new("dealstage", FilterOperator::Eq, "closedwon")],
        }],
        sorts: vec![Sort {
            property_name: "hs_object_id".into(),
            direction: SortDirection::Ascending,
        }],
        properties: vec!["dealname".into(), "dealstage".into()],
        limit: 2,
        ..Default::default()
    };
    let all = c
        .search_all(ObjectType::Deals, request)
        .await
        .expect("search");
    let mut ids: Vec<String> = all.iter().map(|o| o.id.clone()).collect();
    ids.sort();
    won.sort();
    assert_eq!(ids, won);
    assert_eq!(
        calls(&sim, "POST /crm/v3/objects/deals/search"),
        3,
        "pages of 2: 2 + 2 + 1"
    );
    assert_eq!(
        sim.calls().too_many_requests,
        0,
        "the search budget kept under 4/s"
    );
    sim.shutdown().await;
    ns.cleanup().await;
}

/// Three clients, each with its own Redis connection, share one budget equal to the simulator's
/// limit (20 per 2 s rolling): the simulator never answers 429.
#[tokio::test]
async fn a_shared_budget_keeps_several_clients_under_the_limit() {
    let sim = start_sim(RateLimitConfig {
        per_10s: 20,
        window_ms: 2000,
        ..RateLimitConfig::default()
    })
    .await;
    let deal = sim
        .create_object(sim::ObjectType::Deals, &[("dealname", "D")])
        .expect("deal");
    sim.reset_calls();
    let ns = Ns::new();
    let limits = BudgetLimits {
        general: Rate::new(20, Duration::from_secs(2)),
        ..BudgetLimits::from_config(&BudgetConfig::default())
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let c = client(&sim, Some(ns.budget(limits.clone())));
        let deal = deal.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                c.get_object(ObjectType::Deals, &deal, &["dealname"], &[])
                    .await
                    .expect("read");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let took = started.elapsed();
    let stats = sim.calls();
    assert_eq!(stats.total, 45, "{:?}", stats.calls);
    assert_eq!(stats.too_many_requests, 0, "zero 429s: {stats:?}");
    // 45 requests at 19 per 2 s take at least (45 - 1) / 9.5 ≈ 4.6 s.
    assert!(
        took >= Duration::from_secs(4),
        "the budget paced the clients: {took:?}"
    );
    println!("45 reads by 3 clients in {took:?}, 0 × 429");
    sim.shutdown().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn injected_429s_penalize_the_shared_budget_and_are_retried() {
    let sim = start_sim(RateLimitConfig {
        window_ms: 1000,
        ..RateLimitConfig::default()
    })
    .await;
    let deal = sim
        .create_object(sim::ObjectType::Deals, &[("dealname", "D")])
        .expect("deal");
    sim.reset_calls();
    sim.set_faults(FaultConfig {
        seed: 7,
        burst_429: 1,
        ..FaultConfig::default()
    });
    let ns = Ns::new();
    let limits = BudgetLimits::from_config(&BudgetConfig::default());
    let other_process = ns.budget(limits.clone());
    let c = client(&sim, Some(ns.budget(limits)));
    let calls_url = format!("{}_sim/calls", sim.base_url());
    let checker = tokio::spawn(async move {
        // Once the simulator has answered the 429 (its admin API says so), poll until the
        // penalty shows to another process (a token granted before the client recorded it is
        // harmless).
        let answered_429 = || async {
            let stats: serde_json::Value = reqwest::get(&calls_url)
                .await
                .expect("admin API")
                .json()
                .await
                .expect("stats");
            stats["too_many_requests"].as_u64().unwrap_or(0) > 0
        };
        while !answered_429().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let deadline = Instant::now() + Duration::from_millis(900);
        loop {
            match other_process.try_acquire(Bucket::General).await {
                TryAcquire::Granted if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                verdict => return verdict,
            }
        }
    });
    let started = Instant::now();
    let got = c
        .get_object(ObjectType::Deals, &deal, &["dealname"], &[])
        .await
        .expect("retried after the 429");
    assert_eq!(got.property("dealname"), Some("D"));
    let took = started.elapsed();
    let stats = sim.calls();
    assert_eq!(stats.total, 2, "{stats:?}");
    assert_eq!(stats.statuses.get(&429), Some(&1));
    // The 429 carries `X-HubSpot-RateLimit-Interval-Milliseconds: 1000`: everyone waits that long.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(
        matches!(checker.await.expect("join"), TryAcquire::Wait(_)),
        "the penalty is shared"
    );
    sim.shutdown().await;
    ns.cleanup().await;
}
