//! `erp-writer`: apply `erp.*` commands to ERPNext. See `lib.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::cli::{CommonCommand, GlobalArgs, run_common, with_settings};
use shared::names::WorkQueue;

#[derive(Parser)]
#[command(
    version,
    about = "lead2ledger erp-writer: Customers, Contacts, Addresses and Sales Orders in ERPNext"
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
    /// Create the ERPNext custom fields and webhooks lead2ledger needs (idempotent).
    Setup,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.global.config.as_deref();
    match cli.command.unwrap_or(Command::Common(CommonCommand::Run)) {
        Command::Common(c) => {
            run_common(
                "erp-writer",
                WorkQueue::ErpWriter,
                config,
                c,
                erp_writer::run,
            )
            .await
        }
        Command::Setup => {
            with_settings("erp-writer", config, |s| async move {
                erp_writer::run_setup(&s)
                    .await
                    .map(|report| println!("{report}"))
            })
            .await
        }
    }
}
