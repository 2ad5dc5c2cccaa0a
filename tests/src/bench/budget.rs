//! Rate-budget utilisation at 3 replicas: three mapper and three crm-writer processes (plus ingest
//! and an erp-writer) share one Redis budget against the HubSpot simulator enforcing the Free
//! tier's 100 requests per rolling 10 s, with far more won deals queued than the budget can serve.
//! The simulator's call counter is sampled to find the requests in every rolling window; the goal
//! is most of the allowance used and not a single 429.
//!
//! The window stays at HubSpot's real 10 s: the client budget's period is fixed to HubSpot's
//! (`BudgetLimits::from_config`), and the simulator must enforce the same window as the client.

use std::time::{Duration, Instant};

use crate::sim::hubspot::{CallStats, RateLimitConfig};
use crate::stack::{Stack, StackOptions};

use super::e2e::seed;
use super::fleet::Fleet;
use super::report::Row;

/// HubSpot's Free/Starter allowance.
pub const LIMIT_PER_10S: u32 = 100;
const WINDOW: Duration = Duration::from_secs(10);
const SEARCH_PER_SECOND: u32 = 4;

#[derive(Debug, Clone)]
pub struct BudgetBench {
    /// Won deals queued (enough to keep the budget saturated for the whole run).
    pub deals: usize,
    /// Replicas of mapper and of crm-writer.
    pub replicas: usize,
    /// How long to sample once the deals are won.
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    general: u64,
    search: u64,
}

fn split(stats: &CallStats) -> (u64, u64) {
    let search: u64 = stats
        .calls
        .iter()
        .filter(|(endpoint, _)| endpoint.ends_with("/search"))
        .map(|(_, n)| n)
        .sum();
    (stats.total - search, search)
}

/// Most requests inside any rolling `window` covered by the samples.
fn peak_in_window(samples: &[Sample], window: Duration, pick: fn(&Sample) -> u64) -> u64 {
    let mut peak = 0;
    let mut start = 0;
    for end in 0..samples.len() {
        while samples[end].at - samples[start].at > window {
            start += 1;
        }
        peak = peak.max(pick(&samples[end]) - pick(&samples[start]));
    }
    peak
}

impl BudgetBench {
    pub async fn run(&self) -> anyhow::Result<Vec<Row>> {
        let options = StackOptions {
            services: false,
            ..StackOptions::default()
        };
        Stack::run_with(options, async |stack| self.measure(stack).await).await
    }

    async fn measure(&self, stack: &mut Stack) -> anyhow::Result<Vec<Row>> {
        stack.hubspot.set_rate_limits(RateLimitConfig {
            per_10s: LIMIT_PER_10S,
            window_ms: WINDOW.as_millis() as u64,
            search_per_second: SEARCH_PER_SECOND,
            search_window_ms: 1_000,
            daily: 0,
        });
        let mut fleet = Fleet::new(
            stack,
            &[
                ("L2L_HUBSPOT__BUDGET__PER_10S", LIMIT_PER_10S.to_string()),
                (
                    "L2L_HUBSPOT__BUDGET__SEARCH_PER_SECOND",
                    SEARCH_PER_SECOND.to_string(),
                ),
                ("L2L_HUBSPOT__BUDGET__DAILY", "0".into()),
            ],
        )?;
        fleet.spawn("ingest", 1)?;
        fleet.spawn("mapper", self.replicas)?;
        fleet.spawn("erp-writer", 1)?;
        fleet.spawn("crm-writer", self.replicas)?;
        let sampled = self.sample(stack, &mut fleet).await;
        fleet.stop(Duration::from_secs(10));
        let (samples, stats, done) = sampled?;

        let last = samples.last().copied().unwrap_or(Sample {
            at: Duration::ZERO,
            general: 0,
            search: 0,
        });
        // Steady state: skip the first seconds while the first deals reach HubSpot.
        let warm = samples
            .iter()
            .find(|s| s.at >= Duration::from_secs(5))
            .copied()
            .unwrap_or(last);
        let span = (last.at - warm.at).as_secs_f64().max(f64::MIN_POSITIVE);
        let mean_per_window = (last.general - warm.general) as f64 / span * WINDOW.as_secs_f64();
        let peak = peak_in_window(&samples, WINDOW, |s| s.general);
        let search_peak = peak_in_window(&samples, Duration::from_secs(1), |s| s.search);
        let limit = f64::from(LIMIT_PER_10S);
        let who = format!(
            "{r} mapper + {r} crm-writer processes, one Redis budget, sim limit {LIMIT_PER_10S}/10 s",
            r = self.replicas
        );
        Ok(vec![
            Row::new(
                "budget",
                "requests per 10 s, mean (steady state)",
                mean_per_window,
                "req/10 s",
                format!("{who}; {:.0} s sampled", span),
            ),
            Row::new(
                "budget",
                "utilisation, mean",
                100.0 * mean_per_window / limit,
                "%",
                "of the 100/10 s allowance; the budget aims at 95 % (see shared/src/budget.rs)",
            ),
            Row::new(
                "budget",
                "requests in busiest rolling 10 s",
                peak as f64,
                "req",
                format!(
                    "{:.0} % of allowed; sampled every 100 ms",
                    100.0 * peak as f64 / limit
                ),
            ),
            Row::new(
                "budget",
                "search requests in busiest 1 s",
                search_peak as f64,
                "req",
                format!("allowed {SEARCH_PER_SECOND}/s"),
            ),
            Row::new(
                "budget",
                "HubSpot 429s",
                stats.too_many_requests as f64,
                "count",
                format!(
                    "must be 0 ({} over budget); saturated: {done} of {} deals done when sampling stopped",
                    stats.throttled, self.deals
                ),
            ),
        ])
    }

    async fn sample(
        &self,
        stack: &Stack,
        fleet: &mut Fleet,
    ) -> anyhow::Result<(Vec<Sample>, CallStats, usize)> {
        fleet.wait_ready(stack, Duration::from_secs(30)).await?;
        let deals = seed(stack, self.deals)?;
        stack.hubspot.reset_calls();
        let started = Instant::now();
        for d in &deals {
            stack.win_deal(&d.deal_id)?;
        }
        let mut samples = Vec::new();
        while started.elapsed() < self.duration {
            fleet.check_alive()?;
            let (general, search) = split(&stack.hubspot.calls());
            samples.push(Sample {
                at: started.elapsed(),
                general,
                search,
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stats = stack.hubspot.calls();
        let (general, search) = split(&stats);
        samples.push(Sample {
            at: started.elapsed(),
            general,
            search,
        });
        let done = deals
            .iter()
            .filter(|d| {
                stack
                    .deal_property(&d.deal_id, "erpnext_sales_order")
                    .is_some()
            })
            .count();
        Ok((samples, stats, done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_window_is_found() {
        let s = |ms: u64, general: u64| Sample {
            at: Duration::from_millis(ms),
            general,
            search: 0,
        };
        // 0..10 s: 50 requests; 5..15 s: 120 - 20 = 100; 10..20 s: 130 - 50 = 80.
        let samples = [
            s(0, 0),
            s(5_000, 20),
            s(10_000, 50),
            s(15_000, 120),
            s(20_000, 130),
        ];
        assert_eq!(
            peak_in_window(&samples, Duration::from_secs(10), |s| s.general),
            100
        );
    }
}
