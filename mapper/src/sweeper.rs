//! Who sweeps, and when: the periodic [`Sweep`] inside `mapper run`, one replica at a time.
//!
//! Every `reconcile.interval` each mapper replica asks Redis for the sweep lease
//! (`SET <ns>:sweep:lease <replica> NX PX 60s`, renewed every 20 s while the sweep runs,
//! released with a compare-and-delete after it). The replica that gets it first looks at the
//! watermark: if another replica finished a sweep less than half an interval ago it does
//! nothing, so N replicas still sweep about once per interval. A replica that dies mid-sweep
//! holds the lease for at most its TTL, and its unsaved watermark makes the next sweep repeat
//! the window.
//!
//! Redis unavailable: the replica sweeps without the lease. Two replicas sweeping at once is
//! harmless — each publishes the same idempotent `crm.update_deal` commands, which crm-writer
//! orders by their source time — it only costs a second set of reads.
//!
//! `mapper reconcile --fix` takes the same lease ([`SweepLease::acquire`]) and refuses to run
//! while a replica holds it.

use std::time::Duration;

use chrono::Utc;
use redis::aio::ConnectionManager;
use shared::names::Names;
use tokio_util::sync::CancellationToken;

use crate::emit::Emitter;
use crate::metrics;
use crate::sweep::Sweep;

/// The lease outlives a stalled holder by at most this long.
const LEASE_TTL: Duration = Duration::from_secs(60);
/// How often a sweeping replica extends its lease.
const RENEW_EVERY: Duration = Duration::from_secs(20);
const REDIS_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Compare-and-extend: only the holder renews.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Compare-and-delete: only the holder releases.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The answer to a lease request.
#[derive(Debug)]
pub enum Acquired {
    Held(SweepLease),
    /// Another replica (or an operator's `mapper reconcile --fix`) is sweeping.
    Busy(Option<String>),
    /// Redis did not answer: sweep anyway (see the module doc).
    Unavailable,
}

/// The right to sweep, until released or expired.
#[derive(Debug)]
pub struct SweepLease {
    conn: ConnectionManager,
    key: String,
    value: String,
}

impl SweepLease {
    /// Try to take the lease as `holder` (a replica or operator name).
    pub async fn acquire(conn: ConnectionManager, names: &Names, holder: &str) -> Acquired {
        let key = names.sweep_key("lease");
        let value = format!("{holder}/{}", uuid::Uuid::now_v7().simple());
        let mut c = conn.clone();
        let set = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(LEASE_TTL.as_millis()).unwrap_or(u64::MAX))
            .to_owned();
        match tokio::time::timeout(REDIS_TIMEOUT, set.query_async::<Option<String>>(&mut c)).await {
            Ok(Ok(Some(_))) => Acquired::Held(SweepLease { conn, key, value }),
            Ok(Ok(None)) => {
                let mut c = conn.clone();
                let holder = tokio::time::timeout(
                    REDIS_TIMEOUT,
                    redis::cmd("GET")
                        .arg(&key)
                        .query_async::<Option<String>>(&mut c),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
                Acquired::Busy(holder)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Redis refused the sweep lease; sweeping without it");
                Acquired::Unavailable
            }
            Err(_) => {
                tracing::warn!("Redis did not answer for the sweep lease; sweeping without it");
                Acquired::Unavailable
            }
        }
    }

    /// Extend the lease; `false` when it is no longer ours (expired and taken) or Redis is away.
    pub async fn renew(&self) -> bool {
        let mut c = self.conn.clone();
        let script = redis::Script::new(RENEW);
        let mut call = script.key(&self.key);
        call.arg(&self.value)
            .arg(u64::try_from(LEASE_TTL.as_millis()).unwrap_or(u64::MAX));
        matches!(
            tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async::<i64>(&mut c)).await,
            Ok(Ok(1))
        )
    }

    /// Give the lease back (if it is still ours).
    pub async fn release(self) {
        let mut c = self.conn.clone();
        let script = redis::Script::new(RELEASE);
        let mut call = script.key(&self.key);
        call.arg(&self.value);
        let _ = tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async::<i64>(&mut c)).await;
    }
}

/// Run `sweep` every `interval` until `shutdown`, one replica at a time (see the module doc).
/// The first sweep comes when the last one (by the watermark) is an interval old, or one
/// interval after start when there is no watermark yet.
pub async fn run(
    sweep: Sweep,
    emitter: Emitter,
    conn: ConnectionManager,
    names: Names,
    interval: Duration,
    replica: String,
    shutdown: CancellationToken,
) {
    // A restarted replica sweeps when the last sweep is due, not a whole interval after its
    // start: replicas restarted more often than `interval` (deploys, crash loops) must not
    // postpone the sweep for ever.
    let mut wait = match sweep.watermark.load().await.0 {
        Some(w) => (w.swept_at + interval - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(interval),
        None => interval,
    };
    tracing::info!(?interval, first_in = ?wait, "periodic ERPNext sweep enabled");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        let lease = match SweepLease::acquire(conn.clone(), &names, &replica).await {
            Acquired::Held(l) => Some(l),
            Acquired::Busy(holder) => {
                tracing::debug!(?holder, "another replica is sweeping");
                continue;
            }
            Acquired::Unavailable => None,
        };
        let recent = match sweep.watermark.load().await.0 {
            Some(w) => (Utc::now() - w.swept_at)
                .to_std()
                .is_ok_and(|ago| ago < interval / 2),
            None => false,
        };
        if !recent {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = sweep_holding(&sweep, &emitter, lease.as_ref()) => {}
            }
        }
        if let Some(l) = lease {
            l.release().await;
        }
    }
}

/// One sweep, renewing `lease` while it runs.
async fn sweep_holding(sweep: &Sweep, emitter: &Emitter, lease: Option<&SweepLease>) {
    let work = sweep.run(Some(emitter));
    tokio::pin!(work);
    let mut renew =
        tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = renew.tick() => {
                if let Some(l) = lease && !l.renew().await {
                    tracing::warn!("the sweep lease could not be renewed; another replica may sweep too (harmless)");
                }
            }
        }
    };
    match result {
        Ok(report) => {
            metrics::sweep("ok");
            tracing::info!(
                invoices = report.invoices,
                sales_orders = report.sales_orders,
                deals_checked = report.deals_checked,
                repairs = report.repairs.len(),
                commands = report.commands,
                erpnext_calls = report.erpnext_calls,
                hubspot_calls = report.hubspot_calls,
                correlation_id = report.correlation_id.as_deref().unwrap_or(""),
                from = %report.from_site,
                "ERPNext sweep done"
            );
        }
        Err(e) => {
            metrics::sweep("error");
            tracing::warn!(error = %e, "ERPNext sweep failed; the next one repeats its window");
        }
    }
}
