//! Helpers for erp-writer's integration tests: an ERPNext simulator per test, settings pointing
//! at it and at a unique broker/Redis namespace, commands and their envelopes, and readers of
//! what the writer published.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use erp_writer::ErpSite;
use l2l_tests::sim::erpnext::{ErpNextSim, ErpNextSimConfig, ErpNextSimHandle};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use shared::broker::Broker;
use shared::commands::{
    AddressSpec, ContactSpec, CustomerSpec, ErpOutcome, OrderLine, SalesOrderSpec, SyncDeal,
};
use shared::config::Settings;
use shared::envelope::{Envelope, Kind, Source, command_key};
use shared::names::{Exchange, WorkQueue};
use shared::testkit::{Taken, TestNamespace, drain};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

/// One test's world: the simulator and settings for a fresh namespace.
pub struct World {
    pub ns: TestNamespace,
    pub sim: ErpNextSimHandle,
}

impl World {
    pub async fn start() -> Self {
        Self::with_sim(ErpNextSimConfig::default()).await
    }

    pub async fn with_sim(config: ErpNextSimConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let sim = ErpNextSim::start(config, listener)
            .await
            .expect("sim starts");
        let mut ns = TestNamespace::new();
        let cfg = sim.config();
        let s = &mut ns.settings;
        s.erpnext.base_url = sim.base_url().parse().expect("url");
        s.erpnext.api_key = Some(cfg.api_key.clone());
        s.erpnext.api_secret = Some(SecretString::from(cfg.api_secret.clone()));
        s.erpnext.webhook_secret = Some(SecretString::from(WEBHOOK_SECRET.to_string()));
        s.erpnext.time_zone = cfg.timezone.clone();
        s.erpnext.timeout = Duration::from_secs(2);
        s.erpnext.max_concurrency = 4;
        s.redis.lease_ttl = Duration::from_secs(5);
        s.worker.concurrency = 3;
        s.worker.prefetch = 8;
        Self { ns, sim }
    }

    pub fn settings(&self) -> Settings {
        self.ns.settings.clone()
    }

    pub fn site(&self) -> ErpSite {
        erp_writer::site(&self.ns.settings).expect("site")
    }

    /// A broker for the test itself (declares the namespace's topology), connected.
    pub async fn broker(&self, stop: &CancellationToken) -> Broker {
        let s = &self.ns.settings;
        let b = Broker::start(
            &s.amqp.url,
            self.ns.names(),
            self.ns.topology(),
            s.amqp.reconnect_max_delay,
            stop.clone(),
        );
        assert!(
            b.wait_ready(Duration::from_secs(10)).await,
            "test broker connects"
        );
        b
    }

    /// Every document of `doctype` in the simulator.
    pub fn docs(&self, doctype: &str) -> Vec<Value> {
        self.sim.list(doctype)
    }

    /// Documents of `doctype` whose `field` is `value`.
    pub fn docs_where(&self, doctype: &str, field: &str, value: &str) -> Vec<Value> {
        self.docs(doctype)
            .into_iter()
            .filter(|d| d[field].as_str() == Some(value))
            .collect()
    }

    /// Outcomes published so far: they land in the mapper's queue for them (whichever of the
    /// namespace's mapper queues that is).
    pub async fn take_outcomes(&self) -> Vec<(Envelope<ErpOutcome>, Taken)> {
        let mut taken = Vec::new();
        for q in WorkQueue::ALL
            .into_iter()
            .filter(|q| q.base_name().starts_with("mapper"))
        {
            let q = self.ns.names().queue(q);
            taken.extend(drain(&self.ns.settings.amqp.url, &q).await);
        }
        taken
            .into_iter()
            .map(|t| {
                (
                    serde_json::from_slice(&t.body).expect("outcome envelope"),
                    t,
                )
            })
            .collect()
    }

    pub async fn take_dead_letters(&self) -> Vec<Taken> {
        let q = self.ns.names().dead_letter_queue(WorkQueue::ErpWriter);
        drain(&self.ns.settings.amqp.url, &q).await
    }

    pub async fn cleanup(self) {
        self.ns.cleanup().await;
        self.sim.shutdown().await;
    }
}

/// A running writer (`erp_writer::run`) and the means to stop it.
pub struct Writer {
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Writer {
    pub fn spawn(settings: Settings) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(erp_writer::run(settings, stop.clone()));
        Self { stop, task }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        match tokio::time::timeout(Duration::from_secs(15), self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("writer did not stop cleanly: {other:?}"),
        }
    }
}

/// A deal with 3 contacts (the second primary), an address and two order lines.
pub fn deal(tag: &str) -> SyncDeal {
    let now = Utc::now();
    SyncDeal {
        hubspot_deal_id: format!("deal-{tag}"),
        deal_name: format!("Deal {tag}"),
        deal_modified: now,
        customer: company(&format!("co-{tag}"), &format!("Globex {tag}"), now),
        address: Some(AddressSpec {
            address_title: format!("Globex {tag} HQ"),
            address_type: "Billing".into(),
            address_line1: "1 Globex Way".into(),
            address_line2: None,
            city: "Cypress Creek".into(),
            state: Some("OR".into()),
            pincode: Some("97000".into()),
            country: "United States".into(),
            email_id: Some("billing@globex.example".into()),
            phone: None,
        }),
        contacts: (1..=3)
            .map(|i| ContactSpec {
                hubspot_contact_id: format!("ct-{tag}-{i}"),
                first_name: format!("Person{i}"),
                last_name: Some(format!("Tag{tag}")),
                email_id: Some(format!("p{i}.{tag}@globex.example")),
                phone: (i == 1).then(|| "+1 555 0100".to_string()),
                is_primary_contact: i == 2,
                modified: now,
            })
            .collect(),
        order: SalesOrderSpec {
            company: "Acme Test Ltd".into(),
            currency: "USD".into(),
            transaction_date: Utc::now().date_naive(),
            delivery_date: NaiveDate::from_ymd_opt(2027, 1, 15).expect("date"),
            selling_price_list: Some("HubSpot USD".into()),
            taxes_and_charges: Some("US Sales Tax - ATL".into()),
            set_warehouse: None,
            submit: true,
            items: vec![
                line("SKU-WIDGET", 10.0, 25.0),
                line("SKU-SERVICE", 4.0, 150.0),
            ],
            receivable_account: None,
        },
    }
}

pub fn company(id: &str, name: &str, modified: DateTime<Utc>) -> CustomerSpec {
    CustomerSpec {
        hubspot_company_id: id.into(),
        customer_name: name.into(),
        customer_type: "Company".into(),
        customer_group: "Commercial".into(),
        territory: "United States".into(),
        default_currency: None,
        website: Some("https://globex.example".into()),
        tax_id: None,
        modified,
    }
}

/// A row; `qty` and `rate` as their shortest decimal text (`24.999`, not the float's expansion).
pub fn line(item: &str, qty: f64, rate: f64) -> OrderLine {
    let decimal = |v: f64| v.to_string().parse().expect("decimal");
    OrderLine {
        item_code: item.into(),
        qty: decimal(qty),
        rate: decimal(rate),
        hubspot_line_item_id: format!("li-{item}"),
        description: None,
    }
}

/// The envelope the mapper would publish for `cmd`; the same `event` gives the same key.
pub fn envelope(
    kind: Kind,
    target: &str,
    event: &str,
    payload: &impl serde::Serialize,
) -> Envelope {
    let now = Utc::now();
    Envelope {
        id: uuid::Uuid::now_v7(),
        kind: kind.clone(),
        idempotency_key: command_key(&format!("hubspot:1:{event}"), &kind, target),
        correlation_id: format!("corr-{event}"),
        occurred_at: now,
        received_at: now,
        source: Source::Mapper,
        payload: serde_json::to_value(payload).expect("payload"),
    }
}

pub fn sync_envelope(cmd: &SyncDeal, event: &str) -> Envelope {
    envelope(
        Kind::ErpSyncDeal,
        &format!("deal:{}", cmd.hubspot_deal_id),
        event,
        cmd,
    )
}

pub async fn publish(broker: &Broker, env: &Envelope) {
    broker
        .publish_envelope(Exchange::Commands, env.kind.as_str(), env)
        .await
        .expect("command published");
}

/// Poll the outcomes until `pred` holds for the accumulated list; return them all.
pub async fn outcomes_until(
    world: &World,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&[ErpOutcome]) -> bool,
) -> Vec<ErpOutcome> {
    let mut seen: Vec<ErpOutcome> = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        seen.extend(
            world
                .take_outcomes()
                .await
                .into_iter()
                .map(|(e, _)| e.payload),
        );
        if pred(&seen) {
            return seen;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; outcomes so far: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn sales_order_outcomes(outcomes: &[ErpOutcome], deal: &str) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, ErpOutcome::SalesOrderUpserted { hubspot_deal_id, .. } if hubspot_deal_id == deal))
        .count()
}

/// Outcome messages (envelope and AMQP message) until at least `n` arrived.
pub async fn outcome_messages_until(
    world: &World,
    timeout: Duration,
    n: usize,
) -> Vec<(Envelope<ErpOutcome>, Taken)> {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    while seen.len() < n {
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {n} outcomes; got {}",
                seen.len()
            );
        }
        let more = world.take_outcomes().await;
        if more.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen.extend(more);
    }
    seen
}

/// The `erp-writer` binary, configured for this test's namespace and simulator.
pub struct ChildWriter {
    config: PathBuf,
    secret: String,
}

impl ChildWriter {
    pub fn new(w: &World) -> Self {
        let s = &w.ns.settings;
        let toml = format!(
            r#"
[amqp]
url = "{amqp}"
namespace = "{ns}"
reconnect_max_delay = "500ms"

[redis]
url = "{redis}"
lease_ttl = "1s"

[erpnext]
base_url = "{base}"
api_key = "{key}"
time_zone = "{tz}"
timeout = "10s"

[worker]
retry_tiers = [{tiers}]
quick_attempts = 1
concurrency = 3

[telemetry]
log_level = "warn"
"#,
            amqp = s.amqp.url,
            ns = s.amqp.namespace,
            redis = s.redis.url,
            base = s.erpnext.base_url,
            key = s.erpnext.api_key.as_deref().unwrap_or_default(),
            tz = s.erpnext.time_zone,
            // The namespace's own tiers, so its clean-up deletes every queue the child declares.
            tiers = s
                .worker
                .retry_tiers
                .iter()
                .map(|t| format!("\"{}ms\"", t.as_millis()))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let config = std::env::temp_dir().join(format!("{}-erp-writer.toml", s.amqp.namespace));
        std::fs::write(&config, toml).expect("write config");
        let secret = s
            .erpnext
            .api_secret
            .as_ref()
            .map(|x| x.expose_secret().to_string())
            .unwrap_or_default();
        Self { config, secret }
    }

    pub fn spawn(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_erp-writer"))
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("L2L_ERPNEXT__API_SECRET", &self.secret)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn erp-writer")
    }
}

impl Drop for ChildWriter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

impl ChildWriter {
    /// Run `erp-writer <args>` to completion: (exit code, stdout, stderr).
    pub async fn command(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_erp-writer"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("L2L_ERPNEXT__API_SECRET", &self.secret)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run erp-writer");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
