//! One client of a shared HubSpot rate budget, for the multi-process test in
//! `tests/dedup_budget.rs`: waits until `start`, then takes `General` slots as fast as the budget
//! allows until `start + duration`, printing the wall-clock time (µs since the epoch) of each grant.
//!
//! Usage: `budget_client <redis_url> <namespace> <portal> <limit> <period_ms> <start_unix_us> <duration_ms>`

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::budget::{Bucket, BudgetLimits, Rate, RateBudget};
use shared::config::BudgetConfig;
use shared::names::Names;

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [
        url,
        namespace,
        portal,
        limit,
        period_ms,
        start_us,
        duration_ms,
    ] = args.as_slice()
    else {
        anyhow::bail!(
            "usage: budget_client <redis_url> <namespace> <portal> <limit> <period_ms> <start_unix_us> <duration_ms>"
        );
    };
    let rate = Rate::new(limit.parse()?, Duration::from_millis(period_ms.parse()?));
    let limits = BudgetLimits {
        general: rate,
        search: rate,
        daily: None,
        ..BudgetLimits::from_config(&BudgetConfig::default())
    };
    let budget = RateBudget::connect(url, Names::new(namespace.clone()), portal.clone(), limits)?;
    let start: u128 = start_us.parse()?;
    let end = start + u128::from(duration_ms.parse::<u64>()?) * 1000;
    let now = unix_us();
    if start > now {
        tokio::time::sleep(Duration::from_micros(u64::try_from(start - now)?)).await;
    }
    while unix_us() < end {
        budget.acquire(Bucket::General).await?;
        println!("{}", unix_us());
    }
    Ok(())
}
