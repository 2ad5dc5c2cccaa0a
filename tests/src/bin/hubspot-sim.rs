//! `hubspot-sim`: serve a simulated HubSpot portal (see `l2l_tests::sim::hubspot`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use l2l_tests::sim::hubspot::{HubSpotSim, HubSpotSimConfig, Seed};

#[derive(Parser)]
#[command(
    version,
    about = "Simulated HubSpot portal: CRM API, rate limits, signed webhooks, faults"
)]
struct Cli {
    /// Address to serve on (the default matches `hubspot.base_url` of the example config).
    #[arg(long, default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// Simulator configuration, TOML or JSON (by extension); defaults: token `demo-token`, portal 62515.
    #[arg(long)]
    config: Option<PathBuf>,
    /// JSON seed (`{"objects": [...], "associations": [...]}`) loaded at start.
    #[arg(long)]
    seed_data: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::init_tracing(&shared::config::TelemetryConfig::default());
    let config = match &cli.config {
        Some(path) => HubSpotSimConfig::load(path)?,
        None => HubSpotSimConfig::default(),
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("bind {}", cli.listen))?;
    let sim = HubSpotSim::start(config, listener)?;
    if let Some(path) = &cli.seed_data {
        let seeded = sim.seed(Seed::load(path)?)?;
        tracing::info!(objects = seeded.objects.len(), "seeded");
    }
    tracing::info!(url = %sim.base_url(), "hubspot simulator listening");
    tokio::signal::ctrl_c().await.context("wait for ctrl-c")?;
    sim.shutdown().await;
    Ok(())
}
