//! `ingest`: receive HubSpot and ERPNext webhooks and enqueue them. See `lib.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shared::config::Settings;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "lead2ledger ingest: verify and enqueue webhooks")]
struct Cli {
    /// TOML configuration file (also L2L_CONFIG); every key can be overridden as L2L_<SECTION>__<KEY>.
    #[arg(long, global = true, env = "L2L_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve webhooks (the default).
    Run,
    /// Enqueue every deal already in a trigger stage (resumable; Ctrl-C stops after the page).
    Backfill(ingest::backfill::BackfillArgs),
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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
    match cli.command.unwrap_or(Command::Run) {
        Command::Config {
            command: ConfigCommand::Check,
        } => shared::config::check_command(cli.config.as_deref(), "ingest"),
        Command::Backfill(args) => backfill(cli.config, args).await,
        Command::Run => shared::cli::with_settings("ingest", cli.config.as_deref(), serve).await,
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.ingest.listen)
        .await
        .with_context(|| format!("binding {}", settings.ingest.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shared::shutdown::on_signal(shutdown.clone()));
    ingest::run(settings, listener, shutdown)
        .await
        .context("serving")
}

async fn backfill(config: Option<PathBuf>, args: ingest::backfill::BackfillArgs) -> ExitCode {
    let settings = match shared::cli::load_settings("ingest backfill", config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let run = async {
        let cancel = CancellationToken::new();
        tokio::spawn(shared::shutdown::on_signal(cancel.clone()));
        ingest::backfill::command(&settings, args, cancel).await
    };
    match run.await {
        Ok(summary) => {
            print!("{summary}");
            if summary.interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("ingest backfill: {e:#}");
            ExitCode::FAILURE
        }
    }
}
