//! `mapper`: turn events into commands (`run`), check the mapping (`config check`), compare won deals
//! with Sales Orders and sweep ERPNext's changes (`reconcile`), operate the DLQ (`dlq`). See `lib.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::cli::{CommonCommand, GlobalArgs, run_common, with_settings};
use shared::names::WorkQueue;

#[derive(Parser)]
#[command(
    version,
    about = "lead2ledger mapper: HubSpot and ERPNext events in, exact ERPNext and HubSpot commands out"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Common(CommonCommand),
    /// Compare HubSpot's won deals with ERPNext's Sales Orders, and sweep ERPNext's invoices and
    /// orders changed since the last sweep for deals whose HubSpot values differ; report both.
    Reconcile {
        /// Enqueue every won deal without a Sales Order for sync (as if its webhook came again),
        /// and publish the sweep's deal updates (advancing its watermark).
        #[arg(long)]
        fix: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.global.config.as_deref();
    match cli.command.unwrap_or(Command::Common(CommonCommand::Run)) {
        Command::Common(c) => run_common("mapper", WorkQueue::Mapper, config, c, mapper::run).await,
        Command::Reconcile { fix } => {
            with_settings("mapper", config, |s| async move {
                let report = mapper::run_reconcile(&s, fix).await?;
                print!("{report}");
                match report.sweep_error {
                    Some(e) => Err(anyhow::anyhow!("the sweep failed: {e}")),
                    None => Ok(()),
                }
            })
            .await
        }
    }
}
