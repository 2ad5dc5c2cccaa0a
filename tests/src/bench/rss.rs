//! Peak memory per binary under the end-to-end load: the four services run as child processes (one
//! each) while N deals are won, and each one's `VmHWM` (peak resident set) is read from `/proc`
//! before it is stopped. This is what to give a container as its memory request.

use std::time::Duration;

use crate::stack::{Stack, StackOptions};

use super::e2e::{
    ROOMY_BUDGET_PER_10S, ROOMY_SEARCH_PER_SECOND, ROOMY_SIM_LIMITS, seed, win_and_converge,
};
use super::fleet::{BINARIES, Fleet};
use super::report::Row;

#[derive(Debug, Clone)]
pub struct RssBench {
    pub deals: usize,
    pub timeout: Duration,
}

impl RssBench {
    pub async fn run(&self) -> anyhow::Result<Vec<Row>> {
        let options = StackOptions {
            services: false,
            ..StackOptions::default()
        };
        Stack::run_with(options, async |stack| self.measure(stack).await).await
    }

    async fn measure(&self, stack: &mut Stack) -> anyhow::Result<Vec<Row>> {
        stack.hubspot.set_rate_limits(ROOMY_SIM_LIMITS);
        let mut fleet = Fleet::new(
            stack,
            &[
                (
                    "L2L_HUBSPOT__BUDGET__PER_10S",
                    ROOMY_BUDGET_PER_10S.to_string(),
                ),
                (
                    "L2L_HUBSPOT__BUDGET__SEARCH_PER_SECOND",
                    ROOMY_SEARCH_PER_SECOND.to_string(),
                ),
                ("L2L_HUBSPOT__BUDGET__DAILY", "0".into()),
            ],
        )?;
        for b in BINARIES {
            fleet.spawn(b, 1)?;
        }
        fleet.wait_ready(stack, Duration::from_secs(30)).await?;
        let deals = seed(stack, self.deals)?;
        let idle: Vec<(&str, Option<u64>)> = BINARIES
            .iter()
            .map(|b| (*b, fleet.peak_rss_kib(b)))
            .collect();
        let run = win_and_converge(stack, &deals, self.timeout, || fleet.check_alive()).await;
        let peaks: Vec<(&str, Option<u64>)> = BINARIES
            .iter()
            .map(|b| (*b, fleet.peak_rss_kib(b)))
            .collect();
        fleet.stop(Duration::from_secs(20));
        let c = run?;
        let mut rows = Vec::new();
        for ((binary, peak), (_, idle)) in peaks.into_iter().zip(idle) {
            let peak = peak.ok_or_else(|| anyhow::anyhow!("no VmHWM for {binary}"))?;
            rows.push(Row::new(
                "rss",
                &format!("peak RSS {binary}"),
                peak as f64 / 1024.0,
                "MiB",
                format!(
                    "VmHWM after {} deals; {:.1} MiB when ready, before load",
                    c.deals,
                    idle.unwrap_or(0) as f64 / 1024.0
                ),
            ));
        }
        rows.push(Row::new(
            "rss",
            "won deals → Sales Orders (child processes, sims at 0 ms)",
            c.deals_per_s(),
            "deals/s",
            format!(
                "{} deals in {:.1} s, one process per binary",
                c.deals,
                c.elapsed.as_secs_f64()
            ),
        ));
        Ok(rows)
    }
}
