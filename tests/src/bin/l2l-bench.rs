//! `l2l-bench`: measure lead2ledger on this machine and print a markdown report (and JSON).
//!
//! `cargo run --release -p l2l-tests --bin l2l-bench -- [--sections ingest] [--json target/bench.json]`

use std::path::PathBuf;

use clap::Parser;
use l2l_tests::bench::ingest::IngestBench;
use l2l_tests::bench::report::{Report, machine};
use shared::config::Settings;

#[derive(Parser)]
#[command(about = "lead2ledger benchmark report")]
struct Cli {
    /// Sections to run (comma-separated): ingest.
    #[arg(long, default_value = "ingest", value_delimiter = ',')]
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
