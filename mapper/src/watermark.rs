//! Where the ERPNext sweep ([`crate::sweep`]) got to: the newest `modified` it has handled, the
//! documents it verified at that edge, and when it last ran.
//!
//! # Durability
//! Kept in Redis (`<ns>:sweep:watermark`, JSON, no TTL) as the fast path, and in the process as
//! a second copy. Redis is not the truth here either: a watermark Redis lost (a flush, a
//! failover) or cannot return, with no copy in the process, makes the next sweep read
//! `reconcile.lookback` back — a longer sweep, never a missed fact. It is written only after
//! every command of the sweep is confirmed by the broker, so a crash mid-sweep repeats the
//! sweep instead of skipping what it had not published.
//!
//! # Time
//! ERPNext stamps `modified` in naive site time (`erpnext.time_zone`); the watermark is a UTC
//! instant, read from the site time with [`crate::map::parse_erpnext_time`] and turned back into
//! site time for the query by [`site_bound`]. When a daylight-saving transition repeats an hour
//! of site time, a document stamped in the second pass of that hour carries a *smaller* naive
//! time than one stamped before it; the bound therefore uses the smaller of the site's UTC
//! offsets at the bound and now, so a window that spans the transition starts an hour earlier
//! instead of skipping the repeated hour.
//!
//! What this module does not decide: which watermark a sweep saves (that is the sweep's), or
//! which replica sweeps ([`crate::sweeper`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Offset as _, TimeZone as _, Utc};
use chrono_tz::Tz;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use shared::names::Names;

/// Bound on one Redis round trip (Redis answers in well under a millisecond).
const REDIS_TIMEOUT: Duration = Duration::from_millis(1_000);

/// The sweep's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Every document modified before this instant (minus the overlap) has been handled.
    pub modified: DateTime<Utc>,
    /// Documents (`<doctype>/<name>@<modified>`) the sweep verified that lie in the overlap the
    /// next sweep reads again: their deals need no second HubSpot read.
    #[serde(default)]
    pub edge: BTreeSet<String>,
    /// When the sweep that wrote this started; other replicas skip a sweep that recent.
    pub swept_at: DateTime<Utc>,
}

/// Where a loaded watermark came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Redis,
    /// Redis had none or did not answer; this process's last saved one.
    Process,
    /// None anywhere: the sweep reads `reconcile.lookback` back.
    Lost,
}

/// The watermark in Redis plus this process's copy. Cheap to clone.
#[derive(Clone)]
pub struct WatermarkStore {
    conn: ConnectionManager,
    key: String,
    memory: Arc<Mutex<Option<Watermark>>>,
}

impl std::fmt::Debug for WatermarkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkStore")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl WatermarkStore {
    pub fn new(conn: ConnectionManager, names: &Names) -> Self {
        Self {
            conn,
            key: names.sweep_key("watermark"),
            memory: Arc::new(Mutex::new(None)),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Option<Watermark>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The watermark and where it came from. Redis first; the process's copy when Redis has
    /// none (flushed) or does not answer; `None` (lost) when neither has one.
    pub async fn load(&self) -> (Option<Watermark>, Origin) {
        let mut conn = self.conn.clone();
        let read = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("GET")
                .arg(&self.key)
                .query_async::<Option<String>>(&mut conn),
        )
        .await;
        let stored = match read {
            Ok(Ok(Some(raw))) => match serde_json::from_str::<Watermark>(&raw) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(key = %self.key, error = %e, "unreadable sweep watermark; reading the lookback window");
                    None
                }
            },
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(key = %self.key, error = %e, "Redis did not return the sweep watermark");
                None
            }
            Err(_) => {
                tracing::warn!(key = %self.key, "Redis did not answer for the sweep watermark");
                None
            }
        };
        if let Some(w) = stored {
            return (Some(w), Origin::Redis);
        }
        match self.memory().clone() {
            Some(w) => (Some(w), Origin::Process),
            None => (None, Origin::Lost),
        }
    }

    /// Store `w` (after the sweep's commands are confirmed). `false` when Redis did not take it:
    /// the process keeps its copy, and another replica sweeps a longer window.
    pub async fn save(&self, w: &Watermark) -> bool {
        *self.memory() = Some(w.clone());
        let Ok(raw) = serde_json::to_string(w) else {
            return false;
        };
        let mut conn = self.conn.clone();
        let written = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("SET")
                .arg(&self.key)
                .arg(raw)
                .query_async::<()>(&mut conn),
        )
        .await;
        match written {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(key = %self.key, error = %e, "could not store the sweep watermark; the next sweep may read a longer window");
                false
            }
            Err(_) => {
                tracing::warn!(key = %self.key, "Redis did not answer storing the sweep watermark; the next sweep may read a longer window");
                false
            }
        }
    }

    /// Forget the watermark everywhere (Redis and this process): the next sweep reads the
    /// lookback window. For operators who want a full re-check, and for tests of a lost one.
    pub async fn clear(&self) -> bool {
        *self.memory() = None;
        let mut conn = self.conn.clone();
        matches!(
            tokio::time::timeout(
                REDIS_TIMEOUT,
                redis::cmd("DEL")
                    .arg(&self.key)
                    .query_async::<i64>(&mut conn)
            )
            .await,
            Ok(Ok(_))
        )
    }
}

/// ERPNext's own format of a site time, microseconds included (`2026-11-24 12:17:30.000000`).
const SITE_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

/// `t` as ERPNext writes it in `tz`.
pub fn site_time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format(SITE_FORMAT).to_string()
}

/// The query's lower bound in site time for the instant `from`: converted with the smaller of
/// the site's offsets at `from` and at `now` (see the module doc on repeated hours).
pub fn site_bound(from: DateTime<Utc>, now: DateTime<Utc>, tz: Tz) -> String {
    let offset = |t: DateTime<Utc>| {
        tz.offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc()
    };
    let seconds = offset(from).min(offset(now));
    (from.naive_utc() + chrono::Duration::seconds(i64::from(seconds)))
        .format(SITE_FORMAT)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::parse_erpnext_time;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn site_time_round_trips_through_the_site_zone() {
        let tz = chrono_tz::America::New_York;
        let t = at("2026-11-24T17:17:41.035485Z");
        assert_eq!(site_time(t, tz), "2026-11-24 12:17:41.035485");
        assert_eq!(parse_erpnext_time(&site_time(t, tz), tz), Some(t));
        assert_eq!(
            site_bound(t, at("2026-11-24T18:00:00Z"), tz),
            "2026-11-24 12:17:41.035485",
            "no transition: the plain conversion"
        );
    }

    #[test]
    fn a_window_across_the_repeated_hour_starts_an_hour_earlier() {
        let tz = chrono_tz::America::New_York;
        // 2026-11-01 01:59 EDT = 05:59Z; clocks fall back at 06:00Z to 01:00 EST.
        let from = at("2026-11-01T05:59:00Z");
        let now = at("2026-11-01T06:30:00Z");
        let bound = site_bound(from, now, tz);
        assert_eq!(bound, "2026-11-01 00:59:00.000000");
        // A document stamped at 01:10 EST (06:10Z), after `from`, is inside the window.
        assert!("2026-11-01 01:10:00.000000" >= bound.as_str());
        // Spring forward needs nothing: the earlier offset is the bound's own.
        let from = at("2026-03-08T06:59:00Z");
        assert_eq!(
            site_bound(from, at("2026-03-08T08:00:00Z"), tz),
            "2026-03-08 01:59:00.000000"
        );
    }

    #[test]
    fn the_stored_form_is_stable() {
        let w = Watermark {
            modified: at("2026-11-24T17:17:41.035485Z"),
            edge: BTreeSet::from([
                "Sales Invoice/ACC-SINV-2026-00001@2026-11-24 12:17:41.035485".to_string(),
            ]),
            swept_at: at("2026-11-24T17:20:00Z"),
        };
        let raw = serde_json::to_string(&w).expect("json");
        assert_eq!(serde_json::from_str::<Watermark>(&raw).expect("parse"), w);
        let old: Watermark = serde_json::from_str(
            r#"{"modified":"2026-11-24T17:17:41Z","swept_at":"2026-11-24T17:20:00Z"}"#,
        )
        .expect("an edge is optional");
        assert!(old.edge.is_empty());
    }
}
