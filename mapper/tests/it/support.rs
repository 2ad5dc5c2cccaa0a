//! One test's world: its own broker namespace and Redis prefix, a HubSpot and an ERPNext
//! simulator, and the real mapper (`mapper::run`) consuming the namespace's `mapper` queue.
//!
//! Nothing consumes the writers' queues, so every command the mapper publishes stays there for
//! the test to take. [`TestEnv::settle`] makes "exactly N commands" checkable without sleeping:
//! the mapper runs with prefetch 1 and concurrency 1 (and its outcome worker with 1 and 1), so
//! once a sentinel published last to each of its queues has produced its command, every event
//! published before it has been fully handled.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use l2l_tests::sim::erpnext::{ErpNextSim, ErpNextSimConfig, ErpNextSimHandle};
use l2l_tests::sim::hubspot::{
    HubSpotSim, HubSpotSimConfig, HubSpotSimHandle, ObjectType, Seed, SeedAssociation, SeedObject,
};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Value, json};
use shared::broker::{Broker, Outgoing};
use shared::commands::{ErpOutcome, UpdateCrmObject};
use shared::config::Settings;
use shared::envelope::{Envelope, Kind, Source};
use shared::erpnext::ErpNextClient;
use shared::events::{ErpNextEvent, HubSpotEvent};
use shared::names::{Exchange, WorkQueue, routing};
use shared::runtime::dead_letter::DeadLetter;
use shared::runtime::dlq;
use shared::testkit::{TestNamespace, drain};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PORTAL: u64 = 62515;
pub const HUBSPOT_TOKEN: &str = "demo-token";
pub const HUBSPOT_SECRET: &str = "demo-client-secret";
pub const FRAPPE_SECRET: &str = "sandbox-webhook-secret-acme-2026";
const WAIT: Duration = Duration::from_secs(15);

/// A command taken off a writer queue.
#[derive(Debug, Clone)]
pub struct Taken {
    pub routing_key: String,
    pub envelope: Envelope,
}

impl Taken {
    pub fn crm(&self) -> UpdateCrmObject {
        self.envelope.decode_payload().expect("crm payload")
    }
}

pub struct TestEnv {
    pub ns: TestNamespace,
    pub settings: Settings,
    pub hubspot: HubSpotSimHandle,
    pub erpnext: ErpNextSimHandle,
    pub broker: Broker,
    broker_stop: CancellationToken,
    mapper: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    finished: bool,
}

impl TestEnv {
    /// Simulators, settings pointing at them, the topology, and a running mapper.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            shared::telemetry::init_tracing(&shared::config::TelemetryConfig::default());
        }
        let ns = TestNamespace::new();
        let hs_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hubspot =
            HubSpotSim::start(HubSpotSimConfig::default(), hs_listener).expect("hubspot sim");
        let erp_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let erp_cfg = ErpNextSimConfig {
            clock_start: Some("2026-11-24 12:17:30".into()),
            ..ErpNextSimConfig::default()
        };
        let erpnext = ErpNextSim::start(erp_cfg, erp_listener)
            .await
            .expect("erpnext sim");

        let mut settings = ns.settings.clone();
        settings.hubspot.base_url = hubspot.base_url();
        settings.hubspot.access_token = Some(SecretString::from(HUBSPOT_TOKEN));
        settings.hubspot.client_secret = Some(SecretString::from(HUBSPOT_SECRET));
        settings.hubspot.portal_id = PORTAL.to_string();
        settings.erpnext.base_url = erpnext.base_url().parse().expect("url");
        settings.erpnext.api_key = Some("demo-key".into());
        settings.erpnext.api_secret = Some(SecretString::from("demo-secret"));
        settings.erpnext.webhook_secret = Some(SecretString::from(FRAPPE_SECRET));
        settings.erpnext.site = Some("erp.localhost".into());
        settings.erpnext.time_zone = "America/New_York".into();
        settings.worker.prefetch = 1;
        settings.worker.concurrency = 1;
        tweak(&mut settings);
        assert_eq!(settings.validate(), vec![], "test settings are valid");

        let broker_stop = CancellationToken::new();
        let broker = Broker::start(
            &settings.amqp.url,
            settings.names(),
            ns.topology(),
            settings.amqp.reconnect_max_delay,
            broker_stop.clone(),
        );
        assert!(
            broker.wait_ready(Duration::from_secs(10)).await,
            "broker reachable"
        );
        let mut env = Self {
            ns,
            settings,
            hubspot,
            erpnext,
            broker,
            broker_stop,
            mapper: None,
            finished: false,
        };
        env.start_mapper();
        env
    }

    pub fn start_mapper(&mut self) {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(mapper::run(self.settings.clone(), stop.clone()));
        self.mapper = Some((stop, handle));
    }

    pub async fn stop_mapper(&mut self) {
        if let Some((stop, handle)) = self.mapper.take() {
            stop.cancel();
            let result = tokio::time::timeout(WAIT, handle)
                .await
                .expect("mapper drains in time");
            result.expect("mapper task").expect("mapper ran cleanly");
        }
    }

    /// Stop the mapper, change its settings, start it again.
    pub async fn restart_mapper_with(&mut self, change: impl FnOnce(&mut Settings)) {
        self.stop_mapper().await;
        change(&mut self.settings);
        self.start_mapper();
    }

    async fn publish<P: Serialize>(&self, routing_key: String, envelope: &Envelope<P>) {
        let msg = Outgoing::envelope(
            self.broker.names().exchange(Exchange::Events),
            routing_key,
            envelope,
            0,
        )
        .expect("encode");
        self.broker.publish(&msg).await.expect("publish confirmed");
    }

    /// Publish HubSpot events as ingest does (one message each, one correlation ID).
    pub async fn publish_hubspot(&self, events: &[HubSpotEvent]) -> String {
        l2l_tests::publish::hubspot_events(&self.broker, events)
            .await
            .expect("published")
    }

    /// Publish a Frappe webhook body as ingest does.
    pub async fn publish_erpnext(&self, doctype: &str, event: &str, doc: Value) -> String {
        let payload = ErpNextEvent {
            site: "erp.localhost".into(),
            doctype: doctype.into(),
            event: event.into(),
            doc,
        };
        let envelope = Envelope {
            id: Uuid::now_v7(),
            kind: Kind::ErpNextEvent,
            idempotency_key: payload.idempotency_key().expect("name and modified"),
            correlation_id: Uuid::now_v7().to_string(),
            occurred_at: Utc::now(),
            received_at: Utc::now(),
            source: Source::Erpnext,
            payload: &payload,
        };
        self.publish(routing::erpnext_event(doctype, event), &envelope)
            .await;
        envelope.correlation_id
    }

    /// Publish an erp-writer outcome as erp-writer does.
    pub async fn publish_outcome(&self, outcome: &ErpOutcome) {
        let envelope = Envelope {
            id: Uuid::now_v7(),
            kind: Kind::ErpOutcome,
            idempotency_key: format!("{}:{}", outcome.routing_key(), Uuid::now_v7().simple()),
            correlation_id: Uuid::now_v7().to_string(),
            occurred_at: Utc::now(),
            received_at: Utc::now(),
            source: Source::ErpWriter,
            payload: outcome,
        };
        self.publish(outcome.routing_key(), &envelope).await;
    }

    /// Publish two sentinels, a raw event (into the mapper's main queue) and an outcome (into its
    /// outcome queue), wait until both commands arrive, and return every other command the
    /// mapper published meanwhile: `(erp-writer queue, crm-writer queue)`. Each queue is FIFO
    /// and handled one at a time, so everything published before the sentinels is handled.
    pub async fn settle(&self) -> (Vec<Taken>, Vec<Taken>) {
        let marker = format!("sentinel-{}", Uuid::now_v7().simple());
        let doc = json!({"name": marker, "hubspot_company_id": marker, "modified": "2026-11-24 12:00:00.000000"});
        self.publish_erpnext("Customer", "after_insert", doc).await;
        let outcome_marker = format!("sentinel-outcome-{}", Uuid::now_v7().simple());
        self.publish_outcome(&ErpOutcome::CustomerUpserted {
            hubspot_company_id: outcome_marker.clone(),
            customer: outcome_marker.clone(),
            created: false,
        })
        .await;
        let (mut erp, mut crm) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + WAIT;
        loop {
            erp.extend(self.take(WorkQueue::ErpWriter).await);
            crm.extend(self.take(WorkQueue::CrmWriter).await);
            let seen = |crm: &[Taken], m: &str| crm.iter().any(|t| t.crm().object_id == m);
            if seen(&crm, &marker) && seen(&crm, &outcome_marker) {
                crm.retain(|t| {
                    let id = t.crm().object_id;
                    id != marker && id != outcome_marker
                });
                // Commands published before the sentinel's but after this round's first drain.
                erp.extend(self.take(WorkQueue::ErpWriter).await);
                crm.extend(self.take(WorkQueue::CrmWriter).await);
                return (erp, crm);
            }
            assert!(
                Instant::now() < deadline,
                "the mapper did not handle the sentinel within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn take(&self, queue: WorkQueue) -> Vec<Taken> {
        drain(&self.settings.amqp.url, &self.broker.names().queue(queue))
            .await
            .into_iter()
            .map(|t| Taken {
                routing_key: t.routing_key,
                envelope: serde_json::from_slice(&t.body).expect("envelope"),
            })
            .collect()
    }

    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        dlq::list(&self.broker, WorkQueue::Mapper)
            .await
            .expect("dlq list")
    }

    /// Stop everything and remove the namespace.
    pub async fn finish(mut self) {
        self.finished = true;
        self.stop_mapper().await;
        self.broker_stop.cancel();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.broker.is_ready() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ns.cleanup().await;
    }
}

impl Drop for TestEnv {
    /// A failed test still removes its namespace (best effort, on a thread of its own).
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some((stop, _)) = self.mapper.take() {
            stop.cancel();
        }
        self.broker_stop.cancel();
        let ns = self.ns.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    ns.cleanup().await;
                });
            }
        })
        .join();
    }
}

pub fn obj(reference: &str, ty: ObjectType, props: &[(&str, &str)]) -> SeedObject {
    SeedObject {
        reference: Some(reference.into()),
        object_type: ty,
        id: None,
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

pub fn link(from: &str, to: &str) -> SeedAssociation {
    SeedAssociation {
        from: from.into(),
        to: to.into(),
        primary: None,
    }
}

/// SKU, unit price of the demo items.
pub const ITEMS: [(&str, &str); 3] = [
    ("SKU-WIDGET", "25"),
    ("SKU-GADGET", "40"),
    ("SKU-SERVICE", "150"),
];

/// A won deal of a full company with `contacts` contacts and `lines` line items (SKUs cycling
/// through [`ITEMS`], quantity = position). `skus` overrides SKUs by position. Returns ref → id.
pub fn seed_won_deal(
    hubspot: &HubSpotSimHandle,
    name: &str,
    contacts: usize,
    lines: usize,
    with_company: bool,
    skus: &BTreeMap<usize, &str>,
) -> BTreeMap<String, String> {
    let mut objects = vec![obj(
        "deal",
        ObjectType::Deals,
        &[
            ("dealname", name),
            ("dealstage", "closedwon"),
            ("pipeline", "default"),
            ("amount", "12500.50"),
            ("closedate", "2026-11-24T15:00:00Z"),
            ("deal_currency_code", "USD"),
        ],
    )];
    let mut associations = Vec::new();
    if with_company {
        objects.push(obj(
            "company",
            ObjectType::Companies,
            &[
                ("name", "Globex Corporation"),
                ("domain", "globex.example"),
                ("address", "1 Main St"),
                ("city", "Springfield"),
                ("state", "IL"),
                ("zip", "62701"),
                ("country", "USA"),
                ("phone", "+1 217 555 0100"),
            ],
        ));
        associations.push(link("deal", "company"));
    }
    for i in 0..contacts {
        let r = format!("contact{i}");
        let email = format!("person{i}@globex.example");
        let first = format!("Person{i}");
        objects.push(obj(
            &r,
            ObjectType::Contacts,
            &[
                ("firstname", &first),
                ("lastname", "Globex"),
                ("email", &email),
            ],
        ));
        associations.push(link("deal", &r));
    }
    for i in 0..lines {
        let r = format!("line{i}");
        let (sku, price) = ITEMS[i % ITEMS.len()];
        let sku = skus.get(&i).copied().unwrap_or(sku);
        let qty = (i + 1).to_string();
        let line_name = format!("Line {i}");
        objects.push(obj(
            &r,
            ObjectType::LineItems,
            &[
                ("name", &line_name),
                ("hs_sku", sku),
                ("price", price),
                ("quantity", &qty),
            ],
        ));
        associations.push(link("deal", &r));
    }
    hubspot
        .seed(Seed {
            objects,
            associations,
            emit_webhooks: false,
        })
        .expect("seed")
        .ids
}

/// A `<object>.<event>` webhook event as HubSpot sends it.
pub fn hubspot_event(
    event_id: u64,
    subscription_type: &str,
    object_id: &str,
    property: Option<(&str, &str)>,
) -> HubSpotEvent {
    let mut v = json!({
        "eventId": event_id,
        "subscriptionId": 2881778,
        "portalId": PORTAL,
        "appId": 1160452,
        "occurredAt": Utc::now().timestamp_millis(),
        "subscriptionType": subscription_type,
        "attemptNumber": 0,
        "objectId": object_id.parse::<u64>().expect("numeric id"),
        "changeSource": "CRM_UI",
    });
    if let Some((name, value)) = property {
        v["propertyName"] = json!(name);
        v["propertyValue"] = json!(value);
    }
    serde_json::from_value(v).expect("event")
}

/// The won-stage change of a deal.
pub fn deal_won(event_id: u64, deal_id: &str) -> HubSpotEvent {
    hubspot_event(
        event_id,
        "deal.propertyChange",
        deal_id,
        Some(("dealstage", "closedwon")),
    )
}

/// The body of a captured Frappe webhook delivery.
pub fn captured_webhook(file: &str) -> Value {
    let p = shared::contracts::path("erpnext/webhooks").join(file);
    let cap: Value =
        serde_json::from_str(&std::fs::read_to_string(&p).expect("capture")).expect("json");
    serde_json::from_str(cap["request"]["body_raw"].as_str().expect("body_raw")).expect("body")
}

/// A submitted Sales Order of `deal` for "Globex Corporation", made as a person makes one in
/// ERPNext (an amendment of `amended_from` when given, carrying the deal's ID as ERPNext copies
/// it); its name.
pub async fn submitted_order(
    erp: &ErpNextClient,
    deal: &str,
    amended_from: Option<&str>,
) -> String {
    let mut doc = json!({"customer": "Globex Corporation", "company": "Acme Test Ltd",
        "transaction_date": "2026-11-24", "delivery_date": "2026-12-15", "currency": "USD",
        "hubspot_deal_id": deal, "docstatus": 1,
        "items": [{"item_code": "SKU-WIDGET", "qty": 1, "rate": 25}]});
    if let Some(from) = amended_from {
        doc["amended_from"] = json!(from);
    }
    erp.insert("Sales Order", &doc)
        .await
        .expect("sales order")
        .name()
        .to_string()
}

/// Cancel a submitted Sales Order, as the desk's Cancel does.
pub async fn cancel_order(erp: &ErpNextClient, name: &str) {
    erp.call(
        "frappe.client.cancel",
        &json!({"doctype": "Sales Order", "name": name}),
    )
    .await
    .expect("cancel");
}

/// The Customer "Globex Corporation" of HubSpot company `company_id`, as erp-writer makes it.
pub fn seed_globex(erp: &ErpNextSimHandle, company_id: &str) {
    erp.seed(
        "Customer",
        json!({"customer_name": "Globex Corporation", "customer_type": "Company", "customer_group": "Commercial",
               "territory": "United States", "hubspot_company_id": company_id}),
    )
    .expect("customer");
}
