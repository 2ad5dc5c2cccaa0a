//! `erpnext-sim`: serve a simulated ERPNext site (see `l2l_tests::sim::erpnext`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use l2l_tests::sim::erpnext::{ErpNextSim, ErpNextSimConfig};

#[derive(Parser)]
#[command(
    version,
    about = "Simulated ERPNext (Frappe 15): REST API, doctypes, statuses, signed webhooks, faults"
)]
struct Cli {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8092")]
    listen: SocketAddr,
    /// Simulator configuration, TOML or JSON (by extension); defaults: key `demo-key`, secret
    /// `demo-secret`, company `Acme Test Ltd`, items SKU-WIDGET/SKU-GADGET/SKU-SERVICE.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::init_tracing(&shared::config::TelemetryConfig::default());
    let config = match &cli.config {
        Some(path) => ErpNextSimConfig::load(path)?,
        None => ErpNextSimConfig::default(),
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("bind {}", cli.listen))?;
    let sim = ErpNextSim::start(config, listener).await?;
    tracing::info!(url = %sim.base_url(), "erpnext simulator listening");
    tokio::signal::ctrl_c().await.context("wait for ctrl-c")?;
    sim.shutdown().await;
    Ok(())
}
