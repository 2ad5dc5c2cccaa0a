//! `mapper`: turn events into commands (`run`), check the mapping (`config check`), compare won deals
//! with Sales Orders and sweep ERPNext's changes (`reconcile`), operate the DLQ (`dlq`). See `lib.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use shared::cli::{CommonCommand, ConfigCommand, GlobalArgs, run_common, with_settings};
use shared::names::WorkQueue;
use shared::runtime::DlqCommand;

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

/// The mapper's own copy of the common commands: its `dlq` takes `--queue`, because the mapper
/// consumes two work queues and each has its dead-letter queue.
#[derive(Subcommand)]
enum Command {
    /// Consume the work queues until SIGTERM/SIGINT, then drain (the default).
    Run,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect, replay or purge a dead-letter queue of the mapper: raw events' (`mapper.dlq`,
    /// the default) or erp-writer outcomes' (`--queue outcomes`: `mapper.outcomes.dlq`).
    Dlq {
        /// Which of the mapper's queues: `events` (HubSpot and ERPNext webhooks) or `outcomes`
        /// (erp-writer's `outcome.erp.*`).
        #[arg(long, value_enum, default_value_t = DlqQueue::Events, global = true)]
        queue: DlqQueue,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Compare HubSpot's won deals with ERPNext's Sales Orders, and sweep ERPNext's invoices and
    /// orders changed since the last sweep for deals whose HubSpot values differ; report both.
    Reconcile {
        /// Enqueue every won deal without a Sales Order for sync (as if its webhook came again),
        /// and publish the sweep's deal updates (advancing its watermark).
        #[arg(long)]
        fix: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DlqQueue {
    Events,
    Outcomes,
}

impl DlqQueue {
    fn work_queue(self) -> WorkQueue {
        match self {
            DlqQueue::Events => WorkQueue::Mapper,
            DlqQueue::Outcomes => WorkQueue::MapperOutcomes,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.global.config.as_deref();
    let (queue, common) = match cli.command.unwrap_or(Command::Run) {
        Command::Run => (WorkQueue::Mapper, CommonCommand::Run),
        Command::Config { command } => (WorkQueue::Mapper, CommonCommand::Config { command }),
        Command::Dlq { queue, command } => (queue.work_queue(), CommonCommand::Dlq { command }),
        Command::Reconcile { fix } => return reconcile(config, fix).await,
    };
    run_common("mapper", queue, config, common, mapper::run).await
}

async fn reconcile(config: Option<&std::path::Path>, fix: bool) -> ExitCode {
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
