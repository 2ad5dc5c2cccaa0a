//! The command line every worker binary shares: `run` (the default), `config check` and `dlq …`,
//! plus the exit-code conventions (0 ok, 1 failure, 2 usage, 78 invalid configuration). Each
//! binary adds its own subcommands (`setup`, `reconcile`, `backfill`) beside these.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{EXIT_INVALID_CONFIG, Settings};
use crate::names::WorkQueue;
use crate::runtime::{DlqCommand, run_dlq_with_settings};

/// Flags every binary takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (also L2L_CONFIG); every key can be overridden as L2L_<SECTION>__<KEY>.
    #[arg(long, global = true, env = "L2L_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Subcommands every worker binary has.
#[derive(Debug, Subcommand)]
pub enum CommonCommand {
    /// Consume the work queue until SIGTERM/SIGINT, then drain (the default).
    Run,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect, replay or purge this worker's dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration and the mapping; print every problem with its key and a fix.
    Check,
}

/// Run one of the [`CommonCommand`]s for `binary`, whose work loop is `run`.
pub async fn run_common<F, Fut>(
    binary: &'static str,
    queue: WorkQueue,
    config: Option<&Path>,
    command: CommonCommand,
    run: F,
) -> ExitCode
where
    F: FnOnce(Settings, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    match command {
        CommonCommand::Config {
            command: ConfigCommand::Check,
        } if talks_to_erpnext(queue) => {
            crate::erpnext::site_check::check_command(config, binary).await
        }
        CommonCommand::Config {
            command: ConfigCommand::Check,
        } => crate::config::check_command(config, binary),
        CommonCommand::Run => {
            with_settings(binary, config, |settings| async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(crate::shutdown::on_signal(shutdown.clone()));
                run(settings, shutdown).await
            })
            .await
        }
        CommonCommand::Dlq { command } => {
            with_settings(binary, config, |settings| async move {
                run_dlq_with_settings(command, &settings, queue)
                    .await
                    .context("dlq")
            })
            .await
        }
    }
}

/// The workers whose configuration names ERPNext records (time zone, mapping): their
/// `config check` also asks the site (`erpnext::site_check`).
fn talks_to_erpnext(queue: WorkQueue) -> bool {
    matches!(queue, WorkQueue::ErpWriter | WorkQueue::Mapper)
}

/// Load the settings and set up logging; an invalid configuration is reported on stderr as
/// `<binary>: <problem>` and becomes exit code 78 (EX_CONFIG), for every command of every binary.
pub fn load_settings(binary: &str, config: Option<&Path>) -> Result<Settings, ExitCode> {
    match Settings::load(config) {
        Ok(settings) => {
            crate::telemetry::init_tracing(&settings.telemetry);
            Ok(settings)
        }
        Err(e) => {
            eprintln!("{binary}: {e}");
            Err(ExitCode::from(EXIT_INVALID_CONFIG))
        }
    }
}

/// Load the settings (exit 78 when invalid), set up logging, run `f`, map its result to an exit
/// code with the error chain on stderr.
pub async fn with_settings<F, Fut>(binary: &'static str, config: Option<&Path>, f: F) -> ExitCode
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let settings = match load_settings(binary, config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // The metrics recorder first, so nothing recorded before the first scrape is lost.
    let _ = crate::telemetry::prometheus();
    match f(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
