//! End-to-end throughput: N deals moved to Closed Won in HubSpot at once, timed until every one shows
//! its `erpnext_sales_order` back on the deal and that Sales Order exists in ERPNext — the whole
//! loop (webhook → ingest → mapper → erp-writer → ERPNext webhook → crm-writer → HubSpot).
//!
//! Run with the simulators answering at once and with added latency on both, and count the API
//! calls each deal costs. HubSpot's budget is raised for this section (the pipeline is measured, not
//! the account tier); the Free-tier bound follows from the calls per deal and is reported beside it.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::sim::faults::FaultConfig;
use crate::sim::hubspot::RateLimitConfig;
use crate::stack::{SeededDeal, Stack, StackOptions};

use super::report::{Row, percentile};

const LINES: &[(&str, u32, f64)] = &[
    ("SKU-WIDGET", 2, 25.0),
    ("SKU-GADGET", 1, 40.0),
    ("SKU-SERVICE", 4, 150.0),
];

/// HubSpot limits high enough that the budget never paces the run.
pub const ROOMY_SIM_LIMITS: RateLimitConfig = RateLimitConfig {
    per_10s: 50_000,
    window_ms: 10_000,
    search_per_second: 500,
    search_window_ms: 1_000,
    daily: 0,
};
/// The client budget that goes with [`ROOMY_SIM_LIMITS`] (below it: zero 429s).
pub const ROOMY_BUDGET_PER_10S: u32 = 40_000;
pub const ROOMY_SEARCH_PER_SECOND: u32 = 400;

#[derive(Debug, Clone)]
pub struct E2eBench {
    /// Deals won per run.
    pub deals: usize,
    /// Simulator latencies to run at (ms, added to every API request of both simulators).
    pub latencies_ms: Vec<u64>,
    /// Give up waiting after this long.
    pub timeout: Duration,
}

/// What one load run observed.
#[derive(Debug, Clone)]
pub struct Convergence {
    pub deals: usize,
    pub elapsed: Duration,
    /// Per deal, win → Sales Order written back (ms), sorted.
    pub latencies_ms: Vec<f64>,
    pub hubspot_calls: u64,
    pub hubspot_429: u64,
    pub erpnext_calls: u64,
    /// ERPNext calls by the doctype they were for (see [`erpnext_by_doctype`]).
    pub erpnext_by_doctype: BTreeMap<String, u64>,
}

/// The simulator's call counters (`POST /api/resource/Contact`, `PUT /api/resource/Sales
/// Order/{name}`, `POST /api/method/frappe.client.insert_many`) by doctype: `Contact`, `Sales
/// Order`, `Address+Contact` (the batch insert of a deal's Address and Contacts), `Sales Taxes
/// and Charges Template` (the tax rows method).
pub fn erpnext_by_doctype(calls: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (endpoint, n) in calls {
        let path = endpoint
            .split_once(' ')
            .map_or(endpoint.as_str(), |(_, p)| p);
        let doctype = if let Some(rest) = path.strip_prefix("/api/resource/") {
            rest.split('/').next().unwrap_or(rest).to_string()
        } else if let Some(method) = path.strip_prefix("/api/method/") {
            match method.rsplit('.').next().unwrap_or(method) {
                "insert_many" => "Address+Contact".to_string(),
                "get_taxes_and_charges" => "Sales Taxes and Charges Template".to_string(),
                "make_sales_invoice" => "Sales Invoice".to_string(),
                "get_payment_entry" => "Payment Entry".to_string(),
                other => format!("method {other}"),
            }
        } else {
            path.to_string()
        };
        *out.entry(doctype).or_default() += n;
    }
    out
}

impl Convergence {
    pub fn deals_per_s(&self) -> f64 {
        self.deals as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Seed `n` open deals (1–2 contacts, 1–3 lines each).
pub fn seed(stack: &Stack, n: usize) -> anyhow::Result<Vec<SeededDeal>> {
    (0..n)
        .map(|i| stack.seed_deal(i, 1 + i % 2, &LINES[..1 + i % 3]))
        .collect()
}

/// Win every deal, then poll until each shows a Sales Order that exists in ERPNext. API call
/// counters are reset at the start, so they count the run only. `alive` is checked on every poll
/// (child processes that died fail the run early).
pub async fn win_and_converge(
    stack: &Stack,
    deals: &[SeededDeal],
    timeout: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Convergence> {
    stack.hubspot.reset_calls();
    stack.erpnext.reset_calls();
    let started = Instant::now();
    for d in deals {
        stack.win_deal(&d.deal_id)?;
    }
    let mut pending: HashSet<&str> = deals.iter().map(|d| d.deal_id.as_str()).collect();
    let mut latencies = Vec::with_capacity(deals.len());
    let deadline = started + timeout;
    while !pending.is_empty() {
        alive()?;
        let orders: HashSet<String> = stack
            .erpnext
            .list("Sales Order")
            .into_iter()
            .filter_map(|so| so["name"].as_str().map(str::to_string))
            .collect();
        let now = started.elapsed().as_secs_f64() * 1000.0;
        pending.retain(|deal| {
            let done = stack
                .deal_property(deal, "erpnext_sales_order")
                .is_some_and(|so| orders.contains(&so));
            if done {
                latencies.push(now);
            }
            !done
        });
        if Instant::now() > deadline {
            anyhow::bail!(
                "{} of {} deals showed no Sales Order after {timeout:?}",
                pending.len(),
                deals.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let hs = stack.hubspot.calls();
    let erp = stack.erpnext.calls();
    Ok(Convergence {
        deals: deals.len(),
        elapsed,
        latencies_ms: latencies,
        hubspot_calls: hs.total,
        hubspot_429: hs.too_many_requests,
        erpnext_calls: erp.values().sum(),
        erpnext_by_doctype: erpnext_by_doctype(&erp),
    })
}

impl E2eBench {
    pub async fn run(&self) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        for &latency in &self.latencies_ms {
            let c = self.once(latency).await?;
            rows.extend(self.rows(latency, &c));
        }
        rows.push(Row::new(
            "e2e",
            "HubSpot calls per deal, backfill",
            f64::NAN,
            "calls",
            "n/a (see backfill issue): `ingest backfill` was still being written",
        ));
        Ok(rows)
    }

    async fn once(&self, latency_ms: u64) -> anyhow::Result<Convergence> {
        let options = StackOptions {
            services: false,
            ..StackOptions::default()
        };
        Stack::run_with(options, async |stack| {
            stack.hubspot.set_rate_limits(ROOMY_SIM_LIMITS);
            stack.settings.hubspot.budget.per_10s = ROOMY_BUDGET_PER_10S;
            stack.settings.hubspot.budget.search_per_second = ROOMY_SEARCH_PER_SECOND;
            stack.settings.hubspot.budget.daily = 0;
            let faults = FaultConfig {
                latency_ms,
                ..FaultConfig::default()
            };
            stack.hubspot.set_faults(faults.clone());
            stack.erpnext.set_faults(faults);
            stack.start_services();
            let deals = seed(stack, self.deals)?;
            win_and_converge(stack, &deals, self.timeout, || Ok(())).await
        })
        .await
    }

    fn rows(&self, latency_ms: u64, c: &Convergence) -> Vec<Row> {
        let at = format!("sims at {latency_ms} ms");
        let n = c.deals as f64;
        let hs_per_deal = c.hubspot_calls as f64 / n;
        vec![
            Row::new(
                "e2e",
                &format!("won deals → Sales Orders ({at})"),
                c.deals_per_s(),
                "deals/s",
                format!(
                    "{} deals in {:.1} s, in-process services, HubSpot budget raised",
                    c.deals,
                    c.elapsed.as_secs_f64()
                ),
            ),
            Row::new(
                "e2e",
                &format!("win → SO on deal p50 ({at})"),
                percentile(&c.latencies_ms, 50.0),
                "ms",
                "all deals won at once: includes queueing",
            ),
            Row::new(
                "e2e",
                &format!("win → SO on deal p99 ({at})"),
                percentile(&c.latencies_ms, 99.0),
                "ms",
                "",
            ),
            Row::new(
                "e2e",
                &format!("HubSpot calls per deal, live ({at})"),
                hs_per_deal,
                "calls",
                format!("{} calls, {} × 429", c.hubspot_calls, c.hubspot_429),
            ),
            Row::new(
                "e2e",
                &format!("ERPNext calls per deal ({at})"),
                c.erpnext_calls as f64 / n,
                "calls",
                format!(
                    "{} calls; per deal by doctype: {}",
                    c.erpnext_calls,
                    c.erpnext_by_doctype
                        .iter()
                        .map(|(d, calls)| format!("{d} {:.2}", *calls as f64 / n))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Row::new(
                "e2e",
                &format!("Free-tier bound ({at})"),
                95.0 / 10.0 / hs_per_deal.max(f64::MIN_POSITIVE),
                "deals/s",
                "95 usable req/10 s (100/10 s tier) ÷ HubSpot calls per deal",
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulator_endpoints_group_by_doctype() {
        let calls: BTreeMap<String, u64> = [
            ("GET /api/resource/Customer", 3),
            ("POST /api/resource/Customer", 2),
            ("PUT /api/resource/Sales Order/{name}", 1),
            ("POST /api/resource/Sales Order", 2),
            ("POST /api/method/frappe.client.insert_many", 2),
            (
                "POST /api/method/erpnext.controllers.accounts_controller.get_taxes_and_charges",
                1,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let by: Vec<(String, u64)> = erpnext_by_doctype(&calls).into_iter().collect();
        assert_eq!(
            by,
            vec![
                ("Address+Contact".to_string(), 2),
                ("Customer".to_string(), 5),
                ("Sales Order".to_string(), 3),
                ("Sales Taxes and Charges Template".to_string(), 1),
            ]
        );
    }
}
