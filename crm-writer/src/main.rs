//! `crm-writer`: apply `crm.*` commands to HubSpot. See `lib.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shared::config::Settings;
use shared::names::WorkQueue;
use shared::runtime::{DlqCommand, run_dlq_with_settings};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "lead2ledger crm-writer: ERPNext facts (Customer ID, Sales Order, invoice and sync status) onto HubSpot"
)]
struct Cli {
    /// TOML configuration file (also L2L_CONFIG); every key can be overridden as L2L_<SECTION>__<KEY>.
    #[arg(long, global = true, env = "L2L_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the crm-writer queue (the default).
    Run,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Create the HubSpot custom properties crm-writer writes (idempotent).
    Setup,
    /// Inspect, replay or purge the crm-writer dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration, print the verdict.
    Check,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Config {
        command: ConfigCommand::Check,
    } = command
    {
        return shared::config::check_command(cli.config.as_deref(), "crm-writer");
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crm-writer: {e}");
            return ExitCode::from(shared::config::EXIT_INVALID_CONFIG);
        }
    };
    shared::telemetry::init_tracing(&settings.telemetry);
    let result = match command {
        Command::Run | Command::Config { .. } => {
            let shutdown = CancellationToken::new();
            tokio::spawn(shared::shutdown::on_signal(shutdown.clone()));
            crm_writer::run(settings, shutdown).await
        }
        Command::Setup => crm_writer::run_setup(&settings)
            .await
            .map(|r| println!("{r}")),
        Command::Dlq { command } => run_dlq_with_settings(command, &settings, WorkQueue::CrmWriter)
            .await
            .context("dlq"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crm-writer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
