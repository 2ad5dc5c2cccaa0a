//! `l2l-bench`: measure lead2ledger on this machine and print a markdown report (and JSON).
//!
//! ```text
//! cargo build --release -p ingest -p mapper -p erp-writer -p crm-writer   # for budget and rss
//! cargo run --release -p l2l-tests --bin l2l-bench -- [--sections ingest,e2e,budget,rss] [--json …]
//! ```
//! See docs/performance.md for what each figure means.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use l2l_tests::bench::budget::BudgetBench;
use l2l_tests::bench::e2e::E2eBench;
use l2l_tests::bench::ingest::IngestBench;
use l2l_tests::bench::report::{Report, machine};
use l2l_tests::bench::rss::RssBench;
use l2l_tests::bench::writeback::WritebackBench;
use shared::config::Settings;

#[derive(Parser)]
#[command(about = "lead2ledger benchmark report")]
struct Cli {
    /// Sections to run (comma-separated): ingest, e2e, budget, rss, writeback.
    #[arg(long, default_value = "ingest,e2e,budget,rss", value_delimiter = ',')]
    sections: Vec<String>,
    /// Webhook requests for the ingest section.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Events per webhook request.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Won deals per end-to-end run (sections e2e and rss).
    #[arg(long, default_value_t = 200)]
    deals: usize,
    /// Simulator latencies for the e2e section, ms (comma-separated).
    #[arg(long, default_value = "0,50", value_delimiter = ',')]
    latencies: Vec<u64>,
    /// Give up on an end-to-end run after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Won deals queued for the budget section (must outlast the sampling).
    #[arg(long, default_value_t = 300)]
    budget_deals: usize,
    /// Seconds the budget section samples.
    #[arg(long, default_value_t = 40)]
    budget_secs: u64,
    /// Replicas of mapper and crm-writer in the budget section.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Raw events queued in front of the mapper in the writeback section.
    #[arg(long, default_value_t = 5000)]
    backlog: usize,
    /// Deals whose write-back the writeback section times.
    #[arg(long, default_value_t = 200)]
    writeback_deals: usize,
    /// Simulator latency of the writeback section, ms.
    #[arg(long, default_value_t = 50)]
    writeback_latency: u64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/report.json")]
    json: PathBuf,
    /// Configuration (broker, Redis URLs).
    #[arg(long, env = "L2L_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    let mut report = Report {
        machine: machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        rows: Vec::new(),
    };
    for section in &cli.sections {
        match section.as_str() {
            "ingest" => {
                let bench = IngestBench {
                    requests: cli.requests,
                    batch: cli.batch,
                    concurrency: cli.concurrency,
                };
                report.rows.extend(bench.run(&settings).await?);
            }
            "e2e" => {
                let bench = E2eBench {
                    deals: cli.deals,
                    latencies_ms: cli.latencies.clone(),
                    timeout: Duration::from_secs(cli.timeout_secs),
                };
                report.rows.extend(bench.run().await?);
            }
            "budget" => {
                let bench = BudgetBench {
                    deals: cli.budget_deals,
                    replicas: cli.replicas,
                    duration: Duration::from_secs(cli.budget_secs),
                };
                report.rows.extend(bench.run().await?);
            }
            "rss" => {
                let bench = RssBench {
                    deals: cli.deals,
                    timeout: Duration::from_secs(cli.timeout_secs),
                };
                report.rows.extend(bench.run().await?);
            }
            "writeback" => {
                let bench = WritebackBench {
                    deals: cli.writeback_deals,
                    backlog: cli.backlog,
                    latency_ms: cli.writeback_latency,
                    timeout: Duration::from_secs(cli.timeout_secs),
                };
                report.rows.extend(bench.run().await?);
            }
            other => anyhow::bail!("unknown section {other:?}"),
        }
    }
    println!("{}", report.markdown());
    if let Some(dir) = cli.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cli.json, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("JSON report written to {}", cli.json.display());
    Ok(())
}
