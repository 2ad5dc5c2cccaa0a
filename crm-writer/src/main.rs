//! `crm-writer`: apply `crm.*` commands to HubSpot. See `lib.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::cli::{CommonCommand, GlobalArgs, run_common, with_settings};
use shared::names::WorkQueue;

#[derive(Parser)]
#[command(
    version,
    about = "lead2ledger crm-writer: ERPNext facts (Customer ID, Sales Order, invoice and sync status) onto HubSpot"
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
    /// Create the HubSpot custom properties crm-writer writes (idempotent).
    Setup,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.global.config.as_deref();
    match cli.command.unwrap_or(Command::Common(CommonCommand::Run)) {
        Command::Common(c) => {
            run_common(
                "crm-writer",
                WorkQueue::CrmWriter,
                config,
                c,
                crm_writer::run,
            )
            .await
        }
        Command::Setup => {
            with_settings("crm-writer", config, |s| async move {
                crm_writer::run_setup(&s)
                    .await
                    .map(|report| println!("{report}"))
            })
            .await
        }
    }
}
