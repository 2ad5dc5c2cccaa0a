//! Write-back latency behind a backlog (issue 15, item 6): how long after a Sales Order is created
//! in ERPNext the deal shows it, while thousands of raw webhook events wait in the mapper's main
//! queue. Outcomes have their own queue (docs/design.md, "Outcomes have their own queue"); this
//! measures that they really do not wait.
//!
//! The run: seed and win `deals` deals with erp-writer stopped, so their commands wait in its
//! queue; queue `backlog` raw HubSpot events (amount changes of other, open deals: each is read
//! from HubSpot and ignored) in front of the mapper; then start erp-writer. Every Sales Order it
//! creates becomes an outcome while the backlog drains. Per deal: the first poll that sees its
//! Sales Order in ERPNext → the first poll that sees `erpnext_sales_order` on the deal (polls
//! every 20 ms).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use shared::broker::Broker;
use shared::events::HubSpotEvent;
use shared::names::WorkQueue;
use shared::testkit::queue_len;
use tokio_util::sync::CancellationToken;

use crate::sim::faults::FaultConfig;
use crate::stack::{Stack, StackOptions};

use super::e2e::{ROOMY_BUDGET_PER_10S, ROOMY_SEARCH_PER_SECOND, ROOMY_SIM_LIMITS, seed};
use super::report::{Row, percentile};

const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct WritebackBench {
    /// Deals whose Sales Orders are created while the backlog waits.
    pub deals: usize,
    /// Raw events queued in front of the mapper.
    pub backlog: usize,
    /// Latency of every simulator request (ms): what makes the backlog take time to drain.
    pub latency_ms: u64,
    pub timeout: Duration,
}

/// What one run observed.
#[derive(Debug)]
struct Observed {
    /// Per deal, Sales Order seen → write-back seen (ms), sorted.
    latencies_ms: Vec<f64>,
    /// Raw events in the mapper's main queue when erp-writer started.
    backlog_at_start: u32,
    /// Since erp-writer started: the last write-back, and the backlog empty (if it emptied).
    last_write_back: Duration,
    backlog_drained: Option<Duration>,
    /// Raw events still queued when the last write-back landed.
    backlog_left: u32,
}

impl WritebackBench {
    pub async fn run(&self) -> anyhow::Result<Vec<Row>> {
        let options = StackOptions {
            services: false,
            ..StackOptions::default()
        };
        let o = Stack::run_with(options, async |stack| self.once(stack).await).await?;
        let at = format!("{} ms sims", self.latency_ms);
        let drained = o.backlog_drained.map_or_else(
            || format!("{} still queued at the last write-back", o.backlog_left),
            |d| format!("drained {:.1} s after erp-writer started", d.as_secs_f64()),
        );
        let context = format!(
            "{} deals, {} raw events queued in front ({drained}); last write-back at {:.1} s",
            self.deals,
            o.backlog_at_start,
            o.last_write_back.as_secs_f64()
        );
        Ok(vec![
            Row::new(
                "writeback",
                &format!("SO created → on deal p50, backlog {} ({at})", self.backlog),
                percentile(&o.latencies_ms, 50.0),
                "ms",
                context,
            ),
            Row::new(
                "writeback",
                &format!("SO created → on deal p99, backlog {} ({at})", self.backlog),
                percentile(&o.latencies_ms, 99.0),
                "ms",
                "goal: under 10 s",
            ),
        ])
    }

    async fn once(&self, stack: &mut Stack) -> anyhow::Result<Observed> {
        stack.hubspot.set_rate_limits(ROOMY_SIM_LIMITS);
        stack.settings.hubspot.budget.per_10s = ROOMY_BUDGET_PER_10S;
        stack.settings.hubspot.budget.search_per_second = ROOMY_SEARCH_PER_SECOND;
        stack.settings.hubspot.budget.daily = 0;
        let faults = FaultConfig {
            latency_ms: self.latency_ms,
            ..FaultConfig::default()
        };
        stack.hubspot.set_faults(faults.clone());
        stack.erpnext.set_faults(faults);
        let url = stack.settings.amqp.url.clone();
        let names = stack.settings.names();
        let (mapper_queue, writer_queue) = (
            names.queue(WorkQueue::Mapper),
            names.queue(WorkQueue::ErpWriter),
        );

        // Our own connection publishes the backlog; once ready, the topology exists.
        let stop = CancellationToken::new();
        let broker = Broker::from_settings(&stack.settings, stop.clone());
        anyhow::ensure!(
            broker.wait_ready(Duration::from_secs(10)).await,
            "broker not ready"
        );
        // Every deal's command waits for erp-writer.
        stack.start_services_except(&["erp-writer"]);
        let deals = seed(stack, self.deals)?;
        let others = seed(stack, self.deals.clamp(1, 100))?;
        for d in &deals {
            stack.win_deal(&d.deal_id)?;
        }
        let deadline = Instant::now() + self.timeout;
        while queue_len(&url, &writer_queue).await < deals.len() as u32 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the mapper did not queue {} commands in {:?}",
                deals.len(),
                self.timeout
            );
            tokio::time::sleep(POLL).await;
        }

        // The backlog, published as ingest would, then erp-writer.
        let portal: u64 = stack.settings.hubspot.portal_id.parse()?;
        let events: Vec<HubSpotEvent> = (0..self.backlog)
            .map(|i| amount_change(portal, i as u64, &others[i % others.len()].deal_id))
            .collect::<Result<_, _>>()?;
        crate::publish::hubspot_events(&broker, &events).await?;
        stop.cancel();
        let backlog_at_start = queue_len(&url, &mapper_queue).await;
        let started = Instant::now();
        stack.start_services_except(&["ingest", "mapper", "crm-writer"]);

        let mut created: HashMap<String, Instant> = HashMap::new();
        let mut pending: HashSet<&str> = deals.iter().map(|d| d.deal_id.as_str()).collect();
        let mut latencies = Vec::with_capacity(deals.len());
        let mut backlog_drained = None;
        while !pending.is_empty() {
            let now = Instant::now();
            for so in stack.erpnext.list("Sales Order") {
                if let Some(deal) = so["hubspot_deal_id"].as_str() {
                    created.entry(deal.to_string()).or_insert(now);
                }
            }
            pending.retain(|deal| {
                let shown = stack.deal_property(deal, "erpnext_sales_order").is_some();
                match created.get(*deal) {
                    Some(at) if shown => {
                        latencies.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                        false
                    }
                    _ => true,
                }
            });
            if backlog_drained.is_none() && queue_len(&url, &mapper_queue).await == 0 {
                backlog_drained = Some(started.elapsed());
            }
            anyhow::ensure!(
                Instant::now() < deadline + self.timeout,
                "{} of {} deals showed no Sales Order in time",
                pending.len(),
                deals.len()
            );
            tokio::time::sleep(POLL).await;
        }
        latencies.sort_by(|a, b| a.total_cmp(b));
        let backlog_left = queue_len(&url, &mapper_queue).await;
        Ok(Observed {
            backlog_left,
            latencies_ms: latencies,
            backlog_at_start,
            last_write_back: started.elapsed(),
            backlog_drained,
        })
    }
}

/// A HubSpot `deal.propertyChange` of `amount` on an open deal: the mapper reads the deal and
/// ignores it (not at the trigger stage).
fn amount_change(portal: u64, n: u64, deal_id: &str) -> Result<HubSpotEvent, serde_json::Error> {
    serde_json::from_value(serde_json::json!({
        "eventId": 5_000_000 + n,
        "subscriptionId": 2881778,
        "portalId": portal,
        "occurredAt": Utc::now().timestamp_millis(),
        "subscriptionType": "deal.propertyChange",
        "attemptNumber": 0,
        "objectId": deal_id.parse::<u64>().unwrap_or_default(),
        "propertyName": "amount",
        "propertyValue": (1000 + n).to_string(),
        "changeSource": "CRM_UI",
    }))
}
