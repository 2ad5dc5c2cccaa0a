//! The four service binaries as child processes, configured from a [`Stack`]'s settings the way an
//! operator would (environment variables), so the benchmark can read each process's peak RSS from
//! `/proc` and run several replicas of a worker against one shared Redis budget.
//!
//! The binaries are the ones Cargo built beside `l2l-bench` (build them with the same profile).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use shared::names::WorkQueue;

use crate::stack::{self, Stack};

/// The service binaries, in pipeline order.
pub const BINARIES: [&str; 4] = ["ingest", "mapper", "erp-writer", "crm-writer"];

/// Where the service binary `name` sits: beside the running executable.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating l2l-bench")?;
    let dir = exe.parent().context("l2l-bench has no directory")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built; run `cargo build --release -p ingest -p mapper -p erp-writer -p crm-writer` first",
        path.display()
    );
    Ok(path)
}

/// One running child.
pub struct Proc {
    pub binary: &'static str,
    pub replica: usize,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (`VmHWM`), in KiB; `None` once the process is gone.
    pub fn peak_rss_kib(&mut self) -> Option<u64> {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return None;
        }
        peak_rss_kib(self.pid())
    }

    /// Whether it exited (crashed) already.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines the child wrote to stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.reverse();
        tail.join("\n")
    }
}

/// `VmHWM` of `/proc/<pid>/status`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The services of one stack as child processes.
pub struct Fleet {
    env: Vec<(String, String)>,
    logs: PathBuf,
    pub procs: Vec<Proc>,
}

impl Fleet {
    /// Configure children for `stack` (started with `services: false`); takes its ingest listener's
    /// address. `extra` environment variables override the defaults (e.g. the budget).
    pub fn new(stack: &mut Stack, extra: &[(&str, String)]) -> anyhow::Result<Fleet> {
        let ingest_addr = stack
            .take_ingest_listener()
            .context("the stack's ingest listener is taken")?
            .local_addr()?;
        let s = &stack.settings;
        let mut env: Vec<(String, String)> = vec![
            ("L2L_AMQP__URL".into(), s.amqp.url.clone()),
            ("L2L_AMQP__NAMESPACE".into(), s.amqp.namespace.clone()),
            ("L2L_REDIS__URL".into(), s.redis.url.clone()),
            ("L2L_INGEST__LISTEN".into(), ingest_addr.to_string()),
            ("L2L_INGEST__PUBLIC_URL".into(), stack.ingest_url.clone()),
            (
                "L2L_HUBSPOT__BASE_URL".into(),
                s.hubspot.base_url.to_string(),
            ),
            (
                "L2L_HUBSPOT__ACCESS_TOKEN".into(),
                stack::HUBSPOT_TOKEN.into(),
            ),
            (
                "L2L_HUBSPOT__CLIENT_SECRET".into(),
                stack::HUBSPOT_CLIENT_SECRET.into(),
            ),
            (
                "L2L_ERPNEXT__BASE_URL".into(),
                s.erpnext.base_url.to_string(),
            ),
            ("L2L_ERPNEXT__API_KEY".into(), stack::ERPNEXT_API_KEY.into()),
            (
                "L2L_ERPNEXT__API_SECRET".into(),
                stack::ERPNEXT_API_SECRET.into(),
            ),
            (
                "L2L_ERPNEXT__WEBHOOK_SECRET".into(),
                stack::FRAPPE_WEBHOOK_SECRET.into(),
            ),
            ("L2L_ERPNEXT__TIME_ZONE".into(), s.erpnext.time_zone.clone()),
            (
                "L2L_MAPPING__ORDER__SUBMIT".into(),
                s.mapping.order.submit.to_string(),
            ),
            (
                "L2L_WORKER__RETRY_TIERS".into(),
                "[\"200ms\", \"1s\", \"3s\", \"5s\"]".into(),
            ),
            ("L2L_WORKER__QUICK_BASE_DELAY".into(), "20ms".into()),
        ];
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_string(), v.clone()));
        }
        let logs = std::env::temp_dir().join(format!("l2l-bench-{}", s.amqp.namespace));
        std::fs::create_dir_all(&logs)?;
        Ok(Fleet {
            env,
            logs,
            procs: Vec::new(),
        })
    }

    /// Start `replicas` copies of `binary` (`run` subcommand, warnings to a log file).
    pub fn spawn(&mut self, binary_name: &'static str, replicas: usize) -> anyhow::Result<()> {
        let path = binary(binary_name)?;
        for replica in 0..replicas {
            let log = self.logs.join(format!("{binary_name}-{replica}.log"));
            let stderr = std::fs::File::create(&log)?;
            let child = Command::new(&path)
                .arg("run")
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .with_context(|| format!("starting {}", path.display()))?;
            self.procs.push(Proc {
                binary: binary_name,
                replica,
                child,
                log,
            });
        }
        Ok(())
    }

    /// Fail with the child's log when any child died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.exited() {
                anyhow::bail!(
                    "{}#{} exited with {status}:\n{}",
                    p.binary,
                    p.replica,
                    p.log_tail(20)
                );
            }
        }
        Ok(())
    }

    /// Wait until ingest answers `/readyz` 200 and every work queue has as many consumers as
    /// replicas of its binary were started, so the measured run does not include start-up.
    pub async fn wait_ready(&mut self, stack: &Stack, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let http = reqwest::Client::new();
        let names = stack.settings.names();
        let conn = lapin::Connection::connect(
            &stack.settings.amqp.url,
            lapin::ConnectionProperties::default(),
        )
        .await?;
        let result = async {
            loop {
                self.check_alive()?;
                let ingest_ready = http
                    .get(format!("{}/readyz", stack.ingest_url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let mut consumers_ready = true;
                for q in WorkQueue::ALL {
                    let want = self.procs.iter().filter(|p| p.binary == q.binary()).count();
                    // A passive declare of a queue not declared yet closes the channel: use a
                    // fresh one each time.
                    let channel = conn.create_channel().await?;
                    let have = channel
                        .queue_declare(
                            names.queue(q).as_str().into(),
                            lapin::options::QueueDeclareOptions {
                                passive: true,
                                ..Default::default()
                            },
                            Default::default(),
                        )
                        .await
                        .map_or(0, |d| d.consumer_count() as usize);
                    let _ = channel.close(200, "ok".into()).await;
                    consumers_ready &= have >= want;
                }
                if ingest_ready && consumers_ready {
                    return Ok(());
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "services not ready after {timeout:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        .await;
        let _ = conn.close(200, "ok".into()).await;
        result
    }

    /// Highest `VmHWM` over the replicas of `binary`, in KiB.
    pub fn peak_rss_kib(&mut self, binary_name: &str) -> Option<u64> {
        self.procs
            .iter_mut()
            .filter(|p| p.binary == binary_name)
            .filter_map(Proc::peak_rss_kib)
            .max()
    }

    /// SIGTERM every child and wait for the drain (SIGKILL after `grace`).
    pub fn stop(mut self, grace: Duration) {
        for p in &self.procs {
            let _ = Command::new("kill")
                .args(["-TERM", &p.pid().to_string()])
                .status();
        }
        let deadline = Instant::now() + grace;
        for p in &mut self.procs {
            loop {
                if matches!(p.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.procs.clear();
        remove_dir(&self.logs);
    }
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}
