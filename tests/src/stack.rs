//! The whole lead2ledger loop on one machine: both simulators, ingest, mapper, erp-writer and
//! crm-writer, wired to each other and to the real RabbitMQ and Redis under one namespace.
//!
//! The demo and the end-to-end suites start it the same way, so what the demo shows is what the
//! tests assert. Services run in-process here (one tokio runtime, cancelled together); the
//! reliability suite runs them as child processes instead (see `tests/tests/reliability.rs`).

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use shared::config::Settings;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::sim::erpnext::{ErpNextSim, ErpNextSimConfig, ErpNextSimHandle};
use crate::sim::hubspot::{
    HubSpotSim, HubSpotSimConfig, HubSpotSimHandle, ObjectType, Seed, WebhookConfig,
};

pub const HUBSPOT_TOKEN: &str = "demo-token";
pub const HUBSPOT_CLIENT_SECRET: &str = "demo-client-secret";
pub const ERPNEXT_API_KEY: &str = "demo-key";
pub const ERPNEXT_API_SECRET: &str = "demo-secret";
pub const FRAPPE_WEBHOOK_SECRET: &str = "demo-webhook-secret";

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
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            fast_retries: true,
            services: true,
            submit_orders: true,
            demo_ports: false,
        }
    }
}

/// A running stack. Dropping it without [`Stack::stop`] leaves the broker namespace behind.
pub struct Stack {
    pub settings: Settings,
    pub hubspot: HubSpotSimHandle,
    pub erpnext: ErpNextSimHandle,
    pub ingest_url: String,
    shutdown: CancellationToken,
    services: JoinSet<(&'static str, anyhow::Result<()>)>,
    ingest_listener: Option<TcpListener>,
}

/// IDs of one seeded HubSpot deal and its records.
#[derive(Debug, Clone)]
pub struct SeededDeal {
    pub deal_id: String,
    pub company_id: String,
    pub contact_ids: Vec<String>,
    pub line_item_ids: Vec<String>,
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
        let port = |p: u16| if options.demo_ports { p } else { 0 };
        let hs_listener = bind(port(8091)).await?;
        let erp_listener = bind(port(8092)).await?;
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
        settings.ingest.public_url = ingest_url.parse()?;
        settings.hubspot.base_url = format!("http://{}", hs_listener.local_addr()?).parse()?;
        settings.hubspot.access_token = Some(HUBSPOT_TOKEN.into());
        settings.hubspot.client_secret = Some(HUBSPOT_CLIENT_SECRET.into());
        settings.erpnext.base_url = format!("http://{}", erp_listener.local_addr()?).parse()?;
        settings.erpnext.api_key = Some(ERPNEXT_API_KEY.into());
        settings.erpnext.api_secret = Some(ERPNEXT_API_SECRET.into());
        settings.erpnext.webhook_secret = Some(FRAPPE_WEBHOOK_SECRET.into());
        settings.erpnext.webhook_target = Some(ingest_url.parse()?);

        let hs_config = HubSpotSimConfig {
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
        let hubspot = HubSpotSim::start(hs_config, hs_listener)?;

        let erp_config = ErpNextSimConfig {
            api_key: ERPNEXT_API_KEY.into(),
            api_secret: ERPNEXT_API_SECRET.into(),
            seed_custom_fields: false,
            webhook_retry_delays_ms: vec![200, 1_000],
            ..ErpNextSimConfig::default()
        };
        // ERPNext's timestamps are naive site time; the writers must read them in the site's zone.
        settings.erpnext.time_zone = erp_config.timezone.clone();
        let erpnext = ErpNextSim::start(erp_config, erp_listener).await?;

        let mut stack = Stack {
            settings,
            hubspot,
            erpnext,
            ingest_url,
            shutdown: CancellationToken::new(),
            services: JoinSet::new(),
            ingest_listener: Some(ingest_listener),
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
        let s = self.settings.clone();
        let token = self.shutdown.clone();
        if let Some(listener) = self.ingest_listener.take() {
            let (s, t) = (s.clone(), token.clone());
            self.services.spawn(async move {
                (
                    "ingest",
                    ingest::run(s, listener, t).await.map_err(Into::into),
                )
            });
        }
        let (s1, t1) = (s.clone(), token.clone());
        self.services
            .spawn(async move { ("mapper", mapper::run(s1, t1).await) });
        let (s2, t2) = (s.clone(), token.clone());
        self.services
            .spawn(async move { ("erp-writer", erp_writer::run(s2, t2).await) });
        let (s3, t3) = (s, token);
        self.services
            .spawn(async move { ("crm-writer", crm_writer::run(s3, t3).await) });
    }

    /// The ingest listener, when the caller runs ingest itself.
    pub fn take_ingest_listener(&mut self) -> Option<TcpListener> {
        self.ingest_listener.take()
    }

    /// Seed one open deal (stage `contractsent`) with a company, `contacts` contacts and one line
    /// item per `(sku, qty, price)`.
    pub fn seed_deal(
        &self,
        n: usize,
        contacts: usize,
        lines: &[(&str, u32, f64)],
    ) -> anyhow::Result<SeededDeal> {
        let mut objects = vec![
            json!({"ref": "company", "type": "companies", "properties": {
                "name": format!("Globex Corporation {n}"), "domain": format!("globex{n}.example.com"),
                "address": "1 Globex Way", "city": "Cypress Creek", "state": "OR", "zip": "97000",
                "country": "United States", "phone": "+1 555 0100"
            }}),
        ];
        let mut associations = Vec::new();
        for c in 0..contacts {
            objects.push(json!({"ref": format!("contact{c}"), "type": "contacts", "properties": {
                "firstname": format!("Hank{c}"), "lastname": format!("Scorpio{n}"),
                "email": format!("hank{c}.{n}@globex.example.com"), "phone": format!("+1 555 01{c:02}")
            }}));
            associations.push(json!({"from": "deal", "to": format!("contact{c}")}));
            associations.push(json!({"from": format!("contact{c}"), "to": "company"}));
        }
        for (i, (sku, qty, price)) in lines.iter().enumerate() {
            objects.push(
                json!({"ref": format!("line{i}"), "type": "line_items", "properties": {
                    "name": format!("{sku} line"), "hs_sku": sku, "quantity": qty.to_string(),
                    "price": format!("{price:.2}"), "amount": format!("{:.2}", *qty as f64 * price)
                }}),
            );
            associations.push(json!({"from": "deal", "to": format!("line{i}")}));
        }
        let amount: f64 = lines.iter().map(|(_, q, p)| *q as f64 * p).sum();
        objects.push(json!({"ref": "deal", "type": "deals", "properties": {
            "dealname": format!("Globex expansion {n}"), "pipeline": "default", "dealstage": "contractsent",
            "amount": format!("{amount:.2}"), "deal_currency_code": "USD", "closedate": "2026-12-01T00:00:00Z"
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
            contact_ids: (0..contacts)
                .map(|c| id(&format!("contact{c}")))
                .collect::<Result<_, _>>()?,
            line_item_ids: (0..lines.len())
                .map(|i| id(&format!("line{i}")))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Move a deal to Closed Won as a sales rep would: HubSpot then sends the webhook.
    pub fn win_deal(&self, deal_id: &str) -> anyhow::Result<()> {
        self.hubspot
            .update_as_user(ObjectType::Deals, deal_id, &[("dealstage", "closedwon")])
            .map_err(|e| anyhow::anyhow!("moving deal {deal_id} to closedwon: {e:?}"))?;
        Ok(())
    }

    /// The Sales Orders ERPNext holds for a deal.
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

    /// Stop every service (graceful drain), the simulators, and delete the namespace.
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
        self.hubspot.shutdown().await;
        self.erpnext.shutdown().await;
        anyhow::ensure!(
            failures.is_empty(),
            "services failed: {}",
            failures.join("; ")
        );
        Ok(())
    }
}
