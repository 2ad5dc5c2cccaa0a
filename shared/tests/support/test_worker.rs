//! A worker process for the runtime's crash tests (`tests/runtime.rs`): consumes the erp-writer
//! queue of the namespace in its config file and appends each handled message's idempotency key
//! to a file before returning `Done` — the "effect" the test checks after SIGKILLing this process
//! mid-batch. Not a product binary.
//!
//! Usage: `l2l-runtime-test-worker <config.toml> <effects-file> <delay-ms>`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use shared::broker::{Broker, TopologySpec};
use shared::config::Settings;
use shared::names::WorkQueue;
use shared::runtime::{Handler, HandlerError, Incoming, Outcome, Worker};
use tokio_util::sync::CancellationToken;

struct AppendKey {
    path: PathBuf,
    delay: Duration,
}

impl Handler for AppendKey {
    async fn handle(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        tokio::time::sleep(self.delay).await;
        let line = format!("{}\n", msg.envelope.idempotency_key);
        let path = self.path.clone();
        // One `write` of a short line to an O_APPEND file: a SIGKILL cannot tear it.
        tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
        })
        .await
        .map_err(|e| HandlerError::transient(e.to_string()))?
        .map_err(|e| HandlerError::transient(format!("cannot record effect: {e}")))?;
        Ok(Outcome::Done)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, effects, delay_ms] = args.as_slice() else {
        eprintln!("usage: l2l-runtime-test-worker <config.toml> <effects-file> <delay-ms>");
        return ExitCode::from(2);
    };
    let Ok(delay_ms) = delay_ms.parse::<u64>() else {
        eprintln!("delay-ms must be a number");
        return ExitCode::from(2);
    };
    let settings = match Settings::load(Some(config.as_ref())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(3);
        }
    };
    shared::telemetry::init_tracing(&settings.telemetry);
    let shutdown = CancellationToken::new();
    let broker_stop = CancellationToken::new();
    let broker = Broker::start(
        &settings.amqp.url,
        settings.names(),
        TopologySpec {
            delivery_limit: settings.amqp.delivery_limit,
            retry_tiers: settings.worker.retry_tiers.clone(),
        },
        settings.amqp.reconnect_max_delay,
        broker_stop.clone(),
    );
    tokio::spawn(shared::shutdown::on_signal(shutdown.clone()));
    let handler = AppendKey {
        path: PathBuf::from(effects),
        delay: Duration::from_millis(delay_ms),
    };
    let result = Worker::new(
        broker,
        WorkQueue::ErpWriter,
        settings.worker.clone(),
        handler,
    )
    .run(shutdown)
    .await;
    broker_stop.cancel();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
