//! The whole lead2ledger loop on one machine: the HubSpot simulator, an ERPNext (the simulator,
//! or a real site — see [`ErpTarget`]), ingest, mapper, erp-writer and crm-writer, wired to each
//! other and to the real RabbitMQ and Redis under one namespace.
//!
//! The demo and the end-to-end suites start it the same way, so what the demo shows is what the
//! tests assert. Services run in-process here (one tokio runtime, cancelled together); the
//! reliability suite runs them as child processes instead (see `tests/tests/reliability.rs`).
//!
//! # Layout
//! - [`erpnext`]: the ERPNext target, its REST view [`ErpNext`] (identical reads on both targets),
//!   the real-site lock and clean-up.
//! - [`call_counter`]: a counting proxy between the services and ERPNext (calls per synced deal).
//!
//! # A real ERPNext
//! A real site persists and may be shared, so a stack on it
//! - holds [`RealSiteLock`] for its whole life (its Webhooks are the site's, pointed at our ingest);
//! - gives the HubSpot simulator a random first object ID, so `hubspot_company_id`,
//!   `hubspot_deal_id` and `hubspot_contact_id` never repeat an earlier run's;
//! - has a [`Stack::run_tag`] for names that must be unique on the site (Customer names);
//! - deletes on [`Stack::stop`] what ERPNext lets it delete of the run.

pub mod call_counter;
pub mod erpnext;

use std::ops::Deref;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use serde_json::{Value, json};
use shared::config::Settings;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use call_counter::{ErpCallCounter, ErpCalls};
pub use erpnext::{ErpNext, ErpTarget, RealErpNext, RealSiteLock};

use crate::sim::erpnext::{CustomFields, ErpNextSim, ErpNextSimConfig, ErpNextSimHandle};
use crate::sim::hubspot::{
    HubSpotSim, HubSpotSimConfig, HubSpotSimHandle, ObjectType, Seed, WebhookConfig,
};

pub const HUBSPOT_TOKEN: &str = "demo-token";
pub const HUBSPOT_CLIENT_SECRET: &str = "demo-client-secret";
pub const ERPNEXT_API_KEY: &str = "demo-key";
pub const ERPNEXT_API_SECRET: &str = "demo-secret";
pub const FRAPPE_WEBHOOK_SECRET: &str = "demo-webhook-secret";

/// How long a stack waits for another one to finish with the real site. Below nextest's
/// 3-minute kill, so a run that waits too long fails with the reason.
const REAL_SITE_LOCK_WAIT: Duration = Duration::from_secs(150);
/// How long [`Stack::stop`] spends deleting a run's documents on a real site.
const REAL_SITE_CLEANUP_BUDGET: Duration = Duration::from_secs(30);

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Broker/Redis namespace; a fresh `t<uuid>` when `None`.
    pub namespace: Option<String>,
    /// Millisecond retry tiers (tests) instead of the production ladder.
    pub fast_retries: bool,
    /// Run the four services in this process. `false`: only simulators and settings (the caller
    /// starts the services, e.g. as child processes).
    pub services: bool,
    /// Submit Sales Orders (`mapping.order.submit`), so they can be invoiced.
    pub submit_orders: bool,
    /// Listen on the well-known demo ports (HubSpot sim 8091, ERPNext sim 8092, ingest 8080) when
    /// they are free, so a person can explore; tests use free ports.
    pub demo_ports: bool,
    /// Which ERPNext: the simulator (default) or a real site ([`ErpTarget::from_env`]).
    pub erpnext: ErpTarget,
    /// Put a counting proxy between the services and ERPNext ([`Stack::erp_calls`]). Always on
    /// for a real site.
    pub count_erpnext_calls: bool,
    /// Last word on the settings, before setup and the services see them (e.g. turn
    /// `mapping.items.verify_in_erpnext` off).
    pub configure: Option<fn(&mut Settings)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            fast_retries: true,
            services: true,
            submit_orders: true,
            demo_ports: false,
            erpnext: ErpTarget::Simulator,
            count_erpnext_calls: false,
            configure: None,
        }
    }
}

/// The ERPNext simulator of a stack, for what only a simulator can do (fault injection, state
/// without REST). Dereferences to its handle; on a stack against a real site there is none, and
/// dereferencing panics with that message (use [`Stack::erp`] to read, [`Stack::erp_sim`] to ask).
pub struct SimErpNext {
    sim: Option<ErpNextSimHandle>,
    real_url: String,
}

impl std::fmt::Debug for SimErpNext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sim {
            Some(sim) => f.debug_tuple("SimErpNext").field(&sim.base_url()).finish(),
            None => f
                .debug_tuple("SimErpNext::Real")
                .field(&self.real_url)
                .finish(),
        }
    }
}

impl Deref for SimErpNext {
    type Target = ErpNextSimHandle;

    fn deref(&self) -> &ErpNextSimHandle {
        match &self.sim {
            Some(sim) => sim,
            None => panic!(
                "stack.erpnext is the ERPNext simulator, but this stack runs against the real \
                 ERPNext at {}: read it with stack.erp() (REST), and keep simulator-only steps \
                 (fault injection) behind stack.erp_sim()",
                self.real_url
            ),
        }
    }
}

/// A running stack. Dropping it without [`Stack::stop`] leaves the broker namespace behind.
pub struct Stack {
    pub settings: Settings,
    pub hubspot: HubSpotSimHandle,
    /// The ERPNext simulator (see [`SimErpNext`]); absent against a real site.
    pub erpnext: SimErpNext,
    pub ingest_url: String,
    erp: ErpNext,
    target: ErpTarget,
    counter: Option<ErpCallCounter>,
    run_tag: String,
    shutdown: CancellationToken,
    services: JoinSet<(&'static str, anyhow::Result<()>)>,
    ingest_listener: Option<TcpListener>,
    /// Last field: released after everything else is torn down.
    _real_site: Option<RealSiteLock>,
}

/// IDs of one seeded HubSpot deal and its records.
#[derive(Debug, Clone)]
pub struct SeededDeal {
    pub deal_id: String,
    pub company_id: String,
    pub contact_ids: Vec<String>,
    pub line_item_ids: Vec<String>,
    /// The company's name, which the Customer is named after.
    pub company_name: String,
}

/// What to seed: one open deal (stage `contractsent`) with its company, contacts and lines.
#[derive(Debug, Clone)]
pub struct DealSpec<'a> {
    /// Numbers the records' names (`Globex Corporation {n}`, `Hank0 Scorpio{n}`).
    pub n: usize,
    /// Appended to the company's and the contacts' names (see [`Stack::run_tag`]).
    pub suffix: String,
    pub contacts: usize,
    /// `(sku, qty, price)` per line item.
    pub lines: &'a [(&'a str, u32, f64)],
    /// The company's `country` (an address is always seeded).
    pub country: &'a str,
    /// The deal's `deal_currency_code`.
    pub currency: &'a str,
}

impl<'a> DealSpec<'a> {
    /// A US company and a USD deal, named by `n` alone.
    pub fn new(n: usize, contacts: usize, lines: &'a [(&'a str, u32, f64)]) -> Self {
        Self {
            n,
            suffix: String::new(),
            contacts,
            lines,
            country: "United States",
            currency: "USD",
        }
    }

    pub fn company_name(&self) -> String {
        format!("Globex Corporation {}{}", self.n, self.suffix)
    }
}

/// Bind 127.0.0.1:`port`, or a free port when it is taken (or 0).
async fn bind(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => Ok(l),
        Err(_) if port != 0 => TcpListener::bind("127.0.0.1:0").await,
        Err(e) => Err(e),
    }
}

impl Stack {
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        // First, so a stack waiting for the real site holds nothing else meanwhile.
        let real_site = match &options.erpnext {
            ErpTarget::Real(_) => Some(RealSiteLock::acquire(REAL_SITE_LOCK_WAIT).await?),
            ErpTarget::Simulator => None,
        };
        let port = |p: u16| if options.demo_ports { p } else { 0 };
        let hs_listener = bind(port(8091)).await?;
        let ingest_listener = bind(port(8080)).await?;
        let ingest_url = format!("http://{}", ingest_listener.local_addr()?);

        let mut settings = Settings::load(None).context("loading configuration")?;
        settings.amqp.namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| format!("t{}", uuid::Uuid::now_v7().simple()));
        if options.fast_retries {
            settings.amqp.reconnect_max_delay = Duration::from_millis(500);
            settings.worker.retry_tiers = vec![
                Duration::from_millis(100),
                Duration::from_millis(500),
                Duration::from_secs(2),
            ];
            settings.worker.quick_base_delay = Duration::from_millis(20);
        }
        settings.mapping.order.submit = options.submit_orders;
        // The test suites' broker (deploy/test.sh runs the broker-facing ones on RabbitMQ 4 too).
        if std::env::var_os("L2L_TEST_AMQP_URL").is_some() {
            settings.amqp.url = shared::testkit::amqp_url();
        }
        settings.ingest.public_url = ingest_url.parse()?;
        settings.hubspot.base_url = format!("http://{}", hs_listener.local_addr()?).parse()?;
        settings.hubspot.access_token = Some(HUBSPOT_TOKEN.into());
        settings.hubspot.client_secret = Some(HUBSPOT_CLIENT_SECRET.into());
        settings.erpnext.webhook_secret = Some(FRAPPE_WEBHOOK_SECRET.into());
        settings.erpnext.webhook_target = Some(ingest_url.parse()?);

        let mut rng = rand::rng();
        let run_tag = format!("{:06x}", rng.random::<u32>() & 0x00ff_ffff);
        let mut hs_config = HubSpotSimConfig {
            tokens: vec![HUBSPOT_TOKEN.into()],
            webhooks: WebhookConfig {
                target_url: Some(format!("{ingest_url}/webhooks/hubspot").parse()?),
                client_secret: HUBSPOT_CLIENT_SECRET.into(),
                retry_initial_ms: 200,
                retry_max_ms: 2_000,
                ..WebhookConfig::default()
            },
            ..HubSpotSimConfig::default()
        };
        if options.erpnext.is_real() {
            // The site remembers every earlier run's HubSpot IDs in its unique fields; the
            // simulator's clock-derived first ID repeats for stacks started in the same second.
            hs_config.first_object_id =
                Some(rng.random_range(100_000_000_000u64..900_000_000_000_000));
        }
        let hubspot = HubSpotSim::start(hs_config, hs_listener)?;

        let (sim, site_url, api_key, api_secret) = match &options.erpnext {
            ErpTarget::Simulator => {
                let erp_listener = bind(port(8092)).await?;
                let erp_config = ErpNextSimConfig {
                    api_key: ERPNEXT_API_KEY.into(),
                    api_secret: ERPNEXT_API_SECRET.into(),
                    custom_fields: CustomFields::None,
                    webhook_retry_delays_ms: vec![200, 1_000],
                    ..ErpNextSimConfig::default()
                };
                // ERPNext's timestamps are naive site time; the writers must read them in the
                // site's zone.
                settings.erpnext.time_zone = erp_config.timezone.clone();
                let sim = ErpNextSim::start(erp_config, erp_listener).await?;
                let url: url::Url = sim.base_url().parse()?;
                (
                    Some(sim),
                    url,
                    ERPNEXT_API_KEY.to_string(),
                    ERPNEXT_API_SECRET.to_string(),
                )
            }
            ErpTarget::Real(real) => {
                settings.erpnext.time_zone = real.time_zone.clone();
                (
                    None,
                    real.url.clone(),
                    real.api_key.clone(),
                    real.api_secret.clone(),
                )
            }
        };
        let counter = if options.count_erpnext_calls || options.erpnext.is_real() {
            Some(ErpCallCounter::start(site_url.clone()).await?)
        } else {
            None
        };
        settings.erpnext.base_url = counter
            .as_ref()
            .map_or_else(|| site_url.clone(), |c| c.url().clone());
        if counter.is_some() && settings.mapping.writeback.erpnext_app_url.is_none() {
            // Links on the deal point at the site, not at the proxy.
            settings.mapping.writeback.erpnext_app_url = Some(site_url.clone());
        }
        settings.erpnext.api_key = Some(api_key.clone());
        settings.erpnext.api_secret = Some(api_secret.clone().into());
        if let Some(configure) = options.configure {
            configure(&mut settings);
        }
        let erp = ErpNext::new(&site_url, &api_key, &api_secret, options.erpnext.label())?;

        let mut stack = Stack {
            settings,
            hubspot,
            erpnext: SimErpNext {
                sim,
                real_url: site_url.to_string(),
            },
            ingest_url,
            erp,
            target: options.erpnext.clone(),
            counter,
            run_tag,
            shutdown: CancellationToken::new(),
            services: JoinSet::new(),
            ingest_listener: Some(ingest_listener),
            _real_site: real_site,
        };
        stack.setup().await?;
        if options.services {
            stack.start_services();
        }
        Ok(stack)
    }

    /// Start a stack, run `f` on it, and stop it whatever `f` returned (its error first).
    pub async fn run_with<T>(
        options: StackOptions,
        f: impl AsyncFnOnce(&mut Stack) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut stack = Stack::start(options).await?;
        let result = f(&mut stack).await;
        let stopped = stack.stop().await;
        let value = result?;
        stopped?;
        Ok(value)
    }

    /// `erp-writer setup` and `crm-writer setup`: custom fields, Frappe webhooks, HubSpot properties.
    pub async fn setup(&self) -> anyhow::Result<()> {
        erp_writer::run_setup(&self.settings)
            .await
            .context("erp-writer setup")?;
        crm_writer::run_setup(&self.settings)
            .await
            .context("crm-writer setup")?;
        Ok(())
    }

    /// Start ingest, mapper, erp-writer and crm-writer in this process.
    pub fn start_services(&mut self) {
        self.start_services_except(&[]);
    }

    /// Start the services but those named in `skip` (e.g. `"erp-writer"`, for a test that runs
    /// it as a child process it can SIGKILL).
    pub fn start_services_except(&mut self, skip: &[&str]) {
        let s = self.settings.clone();
        let token = self.shutdown.clone();
        let run = |name: &str| !skip.contains(&name);
        if run("ingest")
            && let Some(listener) = self.ingest_listener.take()
        {
            let (s, t) = (s.clone(), token.clone());
            self.services.spawn(async move {
                (
                    "ingest",
                    ingest::run(s, listener, t).await.map_err(Into::into),
                )
            });
        }
        if run("mapper") {
            let (s1, t1) = (s.clone(), token.clone());
            self.services
                .spawn(async move { ("mapper", mapper::run(s1, t1).await) });
        }
        if run("erp-writer") {
            let (s2, t2) = (s.clone(), token.clone());
            self.services
                .spawn(async move { ("erp-writer", erp_writer::run(s2, t2).await) });
        }
        if run("crm-writer") {
            let (s3, t3) = (s, token);
            self.services
                .spawn(async move { ("crm-writer", crm_writer::run(s3, t3).await) });
        }
    }

    /// The environment that configures a service binary like this stack's in-process services
    /// (broker, Redis, ERPNext, namespace, retry ladder), for tests that run one as a child
    /// process. Secrets go by environment, as in a deployment.
    pub fn service_env(&self) -> Vec<(String, String)> {
        use secrecy::ExposeSecret;
        let s = &self.settings;
        let mut env = vec![
            ("L2L_AMQP__URL".to_string(), s.amqp.url.clone()),
            ("L2L_AMQP__NAMESPACE".into(), s.amqp.namespace.clone()),
            ("L2L_REDIS__URL".into(), s.redis.url.clone()),
            (
                "L2L_ERPNEXT__BASE_URL".into(),
                s.erpnext.base_url.to_string(),
            ),
            ("L2L_ERPNEXT__TIME_ZONE".into(), s.erpnext.time_zone.clone()),
            (
                "L2L_WORKER__RETRY_TIERS".into(),
                format!(
                    "[{}]",
                    s.worker
                        .retry_tiers
                        .iter()
                        .map(|d| format!("\"{}ms\"", d.as_millis()))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
        ];
        let secret =
            |v: &Option<secrecy::SecretString>| v.as_ref().map(|x| x.expose_secret().to_string());
        for (key, value) in [
            ("L2L_ERPNEXT__API_KEY", s.erpnext.api_key.clone()),
            ("L2L_ERPNEXT__API_SECRET", secret(&s.erpnext.api_secret)),
            (
                "L2L_ERPNEXT__WEBHOOK_SECRET",
                secret(&s.erpnext.webhook_secret),
            ),
        ] {
            if let Some(v) = value {
                env.push((key.into(), v));
            }
        }
        env
    }

    /// The ingest listener, when the caller runs ingest itself.
    pub fn take_ingest_listener(&mut self) -> Option<TcpListener> {
        self.ingest_listener.take()
    }

    /// ERPNext over REST: the same reads on the simulator and on a real site.
    pub fn erp(&self) -> &ErpNext {
        &self.erp
    }

    /// The ERPNext simulator, when this stack runs one (for fault injection and other steps
    /// only a simulator can take).
    pub fn erp_sim(&self) -> Option<&ErpNextSimHandle> {
        self.erpnext.sim.as_ref()
    }

    pub fn target(&self) -> &ErpTarget {
        &self.target
    }

    /// Six hex digits, random per stack: make names unique on a site that outlives the run.
    pub fn run_tag(&self) -> &str {
        &self.run_tag
    }

    /// The services' ERPNext calls so far, when they are counted
    /// ([`StackOptions::count_erpnext_calls`], always on a real site).
    pub fn erp_calls(&self) -> Option<ErpCalls> {
        self.counter.as_ref().map(ErpCallCounter::snapshot)
    }

    /// Start counting from zero (e.g. after setup).
    pub fn reset_erp_calls(&self) {
        if let Some(c) = &self.counter {
            c.reset();
        }
    }

    /// Seed one open deal (stage `contractsent`) with a company, `contacts` contacts and one line
    /// item per `(sku, qty, price)`.
    pub fn seed_deal(
        &self,
        n: usize,
        contacts: usize,
        lines: &[(&str, u32, f64)],
    ) -> anyhow::Result<SeededDeal> {
        self.seed(&DealSpec::new(n, contacts, lines))
    }

    /// Seed one open deal as `spec` says.
    pub fn seed(&self, spec: &DealSpec<'_>) -> anyhow::Result<SeededDeal> {
        let n = spec.n;
        let company_name = spec.company_name();
        let mut objects = vec![
            json!({"ref": "company", "type": "companies", "properties": {
                "name": company_name, "domain": format!("globex{n}.example.com"),
                "address": "1 Globex Way", "city": "Cypress Creek", "state": "OR", "zip": "97000",
                "country": spec.country, "phone": "+1 555 0100"
            }}),
        ];
        let mut associations = Vec::new();
        for c in 0..spec.contacts {
            objects.push(json!({"ref": format!("contact{c}"), "type": "contacts", "properties": {
                "firstname": format!("Hank{c}"), "lastname": format!("Scorpio{n}{}", spec.suffix),
                "email": format!("hank{c}.{n}@globex.example.com"), "phone": format!("+1 555 01{c:02}")
            }}));
            associations.push(json!({"from": "deal", "to": format!("contact{c}")}));
            associations.push(json!({"from": format!("contact{c}"), "to": "company"}));
        }
        for (i, (sku, qty, price)) in spec.lines.iter().enumerate() {
            objects.push(
                json!({"ref": format!("line{i}"), "type": "line_items", "properties": {
                    "name": format!("{sku} line"), "hs_sku": sku, "quantity": qty.to_string(),
                    "price": format!("{price:.2}"), "amount": format!("{:.2}", *qty as f64 * price)
                }}),
            );
            associations.push(json!({"from": "deal", "to": format!("line{i}")}));
        }
        let amount: f64 = spec.lines.iter().map(|(_, q, p)| *q as f64 * p).sum();
        objects.push(json!({"ref": "deal", "type": "deals", "properties": {
            "dealname": format!("Globex expansion {n}{}", spec.suffix), "pipeline": "default",
            "dealstage": "contractsent", "amount": format!("{amount:.2}"),
            "deal_currency_code": spec.currency, "closedate": "2026-12-01T00:00:00Z"
        }}));
        associations.push(json!({"from": "deal", "to": "company", "primary": true}));
        let seed: Seed = serde_json::from_value(
            json!({"objects": objects, "associations": associations, "emit_webhooks": false}),
        )?;
        let result = self
            .hubspot
            .seed(seed)
            .map_err(|e| anyhow::anyhow!("seeding HubSpot: {e:?}"))?;
        let id = |r: &str| -> anyhow::Result<String> {
            result
                .ids
                .get(r)
                .cloned()
                .with_context(|| format!("seed result lacks {r}"))
        };
        Ok(SeededDeal {
            deal_id: id("deal")?,
            company_id: id("company")?,
            contact_ids: (0..spec.contacts)
                .map(|c| id(&format!("contact{c}")))
                .collect::<Result<_, _>>()?,
            line_item_ids: (0..spec.lines.len())
                .map(|i| id(&format!("line{i}")))
                .collect::<Result<_, _>>()?,
            company_name,
        })
    }

    /// Move a deal to Closed Won as a sales rep would: HubSpot then sends the webhook.
    pub fn win_deal(&self, deal_id: &str) -> anyhow::Result<()> {
        self.hubspot
            .update_as_user(ObjectType::Deals, deal_id, &[("dealstage", "closedwon")])
            .map_err(|e| anyhow::anyhow!("moving deal {deal_id} to closedwon: {e:?}"))?;
        Ok(())
    }

    /// The Sales Orders the ERPNext simulator holds for a deal (simulator only; on both targets
    /// use `stack.erp().sales_orders_for_deal`).
    pub fn sales_orders_for(&self, deal_id: &str) -> Vec<Value> {
        self.erpnext
            .list("Sales Order")
            .into_iter()
            .filter(|so| so["hubspot_deal_id"].as_str() == Some(deal_id))
            .filter_map(|so| {
                so["name"]
                    .as_str()
                    .and_then(|n| self.erpnext.get("Sales Order", n))
            })
            .collect()
    }

    /// A HubSpot deal property as the simulator holds it.
    pub fn deal_property(&self, deal_id: &str, property: &str) -> Option<String> {
        let deal = self.hubspot.object(ObjectType::Deals, deal_id)?;
        deal.properties.get(property).cloned()
    }

    /// A HubSpot company property as the simulator holds it.
    pub fn company_property(&self, company_id: &str, property: &str) -> Option<String> {
        let company = self.hubspot.object(ObjectType::Companies, company_id)?;
        company.properties.get(property).cloned()
    }

    /// Stop every service (graceful drain), delete the namespace, on a real site the run's
    /// deletable documents, then the simulators.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut failures = Vec::new();
        while let Some(joined) = self.services.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => failures.push(format!("{name}: {e:#}")),
                Err(e) => failures.push(format!("task: {e}")),
            }
        }
        // The same clean-up every test namespace gets: queues, exchanges and Redis keys.
        shared::testkit::TestNamespace {
            settings: self.settings.clone(),
        }
        .cleanup()
        .await;
        if self.target.is_real() {
            let ids = |ty| -> Vec<String> {
                self.hubspot.objects(ty).into_iter().map(|o| o.id).collect()
            };
            let (deals, companies, contacts) = (
                ids(ObjectType::Deals),
                ids(ObjectType::Companies),
                ids(ObjectType::Contacts),
            );
            let deleted = self
                .erp
                .clean_up(&deals, &companies, &contacts, REAL_SITE_CLEANUP_BUDGET)
                .await;
            tracing::info!(deleted, "deleted the run's documents on the real ERPNext");
        }
        self.hubspot.shutdown().await;
        if let Some(sim) = self.erpnext.sim.take() {
            sim.shutdown().await;
        }
        if let Some(counter) = self.counter.take() {
            counter.shutdown().await;
        }
        anyhow::ensure!(
            failures.is_empty(),
            "services failed: {}",
            failures.join("; ")
        );
        Ok(())
    }
}
