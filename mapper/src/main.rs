//! `mapper`: turn events into commands (`run`), check the mapping (`config check`), compare won deals
//! with Sales Orders (`reconcile`), operate the DLQ (`dlq`). See `lib.rs`.

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
    about = "lead2ledger mapper: HubSpot and ERPNext events in, exact ERPNext and HubSpot commands out"
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
    /// Consume the mapper queue (the default).
    Run,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Compare HubSpot's won deals with ERPNext's Sales Orders and report the differences.
    Reconcile {
        /// Enqueue every won deal without a Sales Order for sync (as if its webhook came again).
        #[arg(long)]
        fix: bool,
    },
    /// Inspect, replay or purge the mapper dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration and the mapping; print every problem with its key and a fix.
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
        return shared::config::check_command(cli.config.as_deref(), "mapper");
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mapper: {e}");
            return ExitCode::from(shared::config::EXIT_INVALID_CONFIG);
        }
    };
    shared::telemetry::init_tracing(&settings.telemetry);
    let result = match command {
        Command::Run | Command::Config { .. } => {
            let shutdown = CancellationToken::new();
            tokio::spawn(shared::shutdown::on_signal(shutdown.clone()));
            mapper::run(settings, shutdown).await
        }
        Command::Reconcile { fix } => mapper::run_reconcile(&settings, fix)
            .await
            .map(|report| print!("{report}")),
        Command::Dlq { command } => run_dlq_with_settings(command, &settings, WorkQueue::Mapper)
            .await
            .context("dlq"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mapper: {e:#}");
            ExitCode::FAILURE
        }
    }
}
