//! Redis fast-path idempotency (DESIGN §5): the mapper's "seen" markers and the writers' leases and
//! "done" markers.
//!
//! Redis is never the truth here. Every effect is also keyed in the target system (a unique custom
//! field in ERPNext, the object ID in HubSpot), so when Redis is slow or down every call returns an
//! *unknown* answer ([`SeenResult::Unknown`], [`LeaseResult::Unavailable`], …) after a short timeout,
//! counts `l2l_dedup_unavailable_total`, logs at most once per interval, and the caller proceeds
//! relying on the target's keys. Only caller bugs (an empty key, a zero TTL) are errors.
//!
//! # Using `seen` without losing messages
//! A marker set for a message whose processing then fails would make its retry look like a
//! duplicate. Two ways out, both provided:
//! - [`Dedup::seen_by`] stores the message's own ID in the marker; the same message coming back
//!   (a retry-ladder republish keeps the envelope ID, a broker redelivery is byte-identical) is
//!   `New` again, while a different message with the same idempotency key (HubSpot re-sending a
//!   batch) is `Duplicate`. Prefer it.
//! - [`Dedup::forget`] deletes the marker when processing fails. Best effort: if Redis is down at
//!   that moment the marker stays, so callers should skip `seen` for deliveries that are retries.
//!
//! What this module does not do: decide what a duplicate means for an AMQP delivery (ack it) — that
//! is the consumer runtime's job.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{ExistenceCheck, SetExpiry, SetOptions, Value};

use crate::names::Names;
use crate::redis_conn::{self, LogThrottle};

/// Counter: Redis did not answer (error or timeout) and a dedup call returned "unknown".
pub const METRIC_UNAVAILABLE: &str = "l2l_dedup_unavailable_total";
/// Counter, label `kind` (`seen`, `lease`, `done`): a duplicate or a held key was detected.
pub const METRIC_HITS: &str = "l2l_dedup_hits_total";

/// Default bound on one Redis round trip. Redis answers in well under a millisecond; anything close
/// to this means it is unreachable, and waiting longer would stall the pipeline for nothing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// Compare-and-delete: only the holder of a lease may release it (a slow worker whose lease
/// expired must not delete the lease a second worker now holds).
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Compare-and-extend: only the holder of a lease may renew it.
const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("dedup key is empty")]
    EmptyKey,
    #[error("dedup TTL must be at least 1 ms (got {0:?})")]
    InvalidTtl(Duration),
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
}

/// Answer of [`Dedup::seen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenResult {
    /// First time (or the same message again, for [`Dedup::seen_by`]): process it.
    New,
    /// Another message with this key was already seen: drop it.
    Duplicate,
    /// Redis did not answer: process it and rely on the target's unique keys.
    Unknown,
}

/// Answer of [`Dedup::acquire_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseResult {
    Acquired(Lease),
    /// Another worker holds the key; `holder` is its lease value (`<worker>/<token>`) when known.
    Busy {
        holder: Option<String>,
    },
    /// Redis did not answer: work without a lease, on the target's unique keys.
    Unavailable,
}

/// A held lease. Release it with [`Dedup::release_lease`]; it also expires on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    key: String,
    value: String,
}

impl Lease {
    /// The idempotency key this lease guards.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value stored in Redis: `<worker_id>/<random token>`. The token makes two tasks of one
    /// worker distinguishable, so one cannot release the other's lease.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// Answer of [`Dedup::release_lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseResult {
    Released,
    /// The lease had expired or belongs to someone else now; nothing was deleted.
    NotHeld,
    Unknown,
}

/// Seen markers, leases and done markers in one Redis, under one namespace. Cheap to clone.
#[derive(Clone)]
pub struct Dedup {
    conn: ConnectionManager,
    names: Names,
    timeout: Duration,
    release: redis::Script,
    renew: redis::Script,
    log: Arc<LogThrottle>,
}

impl std::fmt::Debug for Dedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedup")
            .field("namespace", &self.names.namespace())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Dedup {
    pub fn new(conn: ConnectionManager, names: Names) -> Self {
        Self {
            conn,
            names,
            timeout: DEFAULT_TIMEOUT,
            release: redis::Script::new(RELEASE_SCRIPT),
            renew: redis::Script::new(RENEW_SCRIPT),
            log: Arc::new(LogThrottle::new(Duration::from_secs(30))),
        }
    }

    /// Connect lazily (see [`crate::redis_conn::connect`]): succeeds while Redis is down. Must be
    /// called inside a Tokio runtime.
    pub fn connect(url: &str, names: Names) -> Result<Self, DedupError> {
        Ok(Self::new(
            redis_conn::connect(url).map_err(DedupError::Url)?,
            names,
        ))
    }

    /// Bound on each Redis round trip (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// `SET <ns>:seen:<consumer>:<key> 1 NX EX <ttl>`: `New` the first time, then `Duplicate`.
    pub async fn seen(
        &self,
        consumer: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<SeenResult, DedupError> {
        check(key, ttl)?;
        let redis_key = self.names.seen_key(consumer, key);
        let opts = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(expiry(ttl));
        let cmd = redis::cmd("SET")
            .arg(&redis_key)
            .arg(1)
            .arg(&opts)
            .to_owned();
        Ok(match self.run::<Value>("seen", &cmd).await {
            Some(Value::Okay) => SeenResult::New,
            Some(_) => {
                metrics::counter!(METRIC_HITS, "kind" => "seen").increment(1);
                SeenResult::Duplicate
            }
            None => SeenResult::Unknown,
        })
    }

    /// Like [`Dedup::seen`], but the marker holds `message_id` (`SET … NX GET`): the same message
    /// seen again (a retry or redelivery of it) is `New`; another message with the same key is a
    /// `Duplicate`. So a message whose processing failed is never dropped as its own duplicate.
    pub async fn seen_by(
        &self,
        consumer: &str,
        key: &str,
        message_id: &str,
        ttl: Duration,
    ) -> Result<SeenResult, DedupError> {
        check(key, ttl)?;
        let redis_key = self.names.seen_key(consumer, key);
        let opts = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .get(true)
            .with_expiration(expiry(ttl));
        let cmd = redis::cmd("SET")
            .arg(&redis_key)
            .arg(message_id)
            .arg(&opts)
            .to_owned();
        Ok(match self.run::<Option<String>>("seen", &cmd).await {
            Some(None) => SeenResult::New,
            Some(Some(previous)) if previous == message_id => SeenResult::New,
            Some(Some(_)) => {
                metrics::counter!(METRIC_HITS, "kind" => "seen").increment(1);
                SeenResult::Duplicate
            }
            None => SeenResult::Unknown,
        })
    }

    /// Delete a seen marker, so a retry of a message whose processing failed is not dropped.
    /// `Some(true)` deleted, `Some(false)` there was none, `None` Redis did not answer.
    pub async fn forget(&self, consumer: &str, key: &str) -> Result<Option<bool>, DedupError> {
        if key.is_empty() {
            return Err(DedupError::EmptyKey);
        }
        let cmd = redis::cmd("DEL")
            .arg(self.names.seen_key(consumer, key))
            .to_owned();
        Ok(self.run::<i64>("forget", &cmd).await.map(|n| n > 0))
    }

    /// `SET <ns>:lease:<key> <worker>/<token> NX PX <ttl>`.
    pub async fn acquire_lease(
        &self,
        key: &str,
        worker_id: &str,
        ttl: Duration,
    ) -> Result<LeaseResult, DedupError> {
        check(key, ttl)?;
        let redis_key = self.names.lease_key(key);
        let value = format!("{worker_id}/{}", uuid::Uuid::now_v7().simple());
        let opts = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .get(true)
            .with_expiration(SetExpiry::PX(millis(ttl)));
        let cmd = redis::cmd("SET")
            .arg(&redis_key)
            .arg(&value)
            .arg(&opts)
            .to_owned();
        Ok(match self.run::<Option<String>>("lease", &cmd).await {
            Some(None) => LeaseResult::Acquired(Lease {
                key: key.to_string(),
                value,
            }),
            Some(Some(holder)) => {
                metrics::counter!(METRIC_HITS, "kind" => "lease").increment(1);
                LeaseResult::Busy {
                    holder: Some(holder),
                }
            }
            None => LeaseResult::Unavailable,
        })
    }

    /// Release a lease if (and only if) it is still ours.
    pub async fn release_lease(&self, lease: &Lease) -> Result<ReleaseResult, DedupError> {
        let redis_key = self.names.lease_key(&lease.key);
        let mut inv = self.release.key(&redis_key);
        inv.arg(&lease.value);
        let mut conn = self.conn.clone();
        let result = tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut conn)).await;
        Ok(match self.absorb("release", result) {
            Some(n) if n > 0 => ReleaseResult::Released,
            Some(_) => ReleaseResult::NotHeld,
            None => ReleaseResult::Unknown,
        })
    }

    /// Extend a lease we still hold to `ttl` from now: `Some(true)` renewed, `Some(false)` it
    /// expired (another worker may hold it now), `None` Redis did not answer.
    pub async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<bool>, DedupError> {
        check(&lease.key, ttl)?;
        let redis_key = self.names.lease_key(&lease.key);
        let mut inv = self.renew.key(&redis_key);
        inv.arg(&lease.value).arg(millis(ttl));
        let mut conn = self.conn.clone();
        let result = tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut conn)).await;
        Ok(self.absorb("renew", result).map(|n| n > 0))
    }

    /// `SET <ns>:done:<key> <result> EX <ttl>` after the effect is durable. `false` when Redis did
    /// not answer (the target's unique key still makes a repeat harmless).
    pub async fn mark_done(
        &self,
        key: &str,
        result: &str,
        ttl: Duration,
    ) -> Result<bool, DedupError> {
        check(key, ttl)?;
        let opts = SetOptions::default().with_expiration(expiry(ttl));
        let cmd = redis::cmd("SET")
            .arg(self.names.done_key(key))
            .arg(result)
            .arg(&opts)
            .to_owned();
        Ok(self.run::<Value>("done", &cmd).await.is_some())
    }

    /// The result recorded by [`Dedup::mark_done`], if any. `None` also when Redis did not answer:
    /// either way the caller does the work, looking the record up by its unique key first.
    pub async fn done(&self, key: &str) -> Result<Option<String>, DedupError> {
        if key.is_empty() {
            return Err(DedupError::EmptyKey);
        }
        let cmd = redis::cmd("GET").arg(self.names.done_key(key)).to_owned();
        let found = self.run::<Option<String>>("done", &cmd).await.flatten();
        if found.is_some() {
            metrics::counter!(METRIC_HITS, "kind" => "done").increment(1);
        }
        Ok(found)
    }

    /// `SADD <ns>:done:<key> <member>` and refresh its TTL: a set of results under one key (e.g.
    /// every deal a company was synced for). `false` when Redis did not answer.
    pub async fn add_done_member(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<bool, DedupError> {
        check(key, ttl)?;
        let full = self.names.done_key(key);
        let added = redis::cmd("SADD").arg(&full).arg(member).to_owned();
        let expire = redis::cmd("PEXPIRE").arg(&full).arg(millis(ttl)).to_owned();
        Ok(self.run::<Value>("done", &added).await.is_some()
            && self.run::<Value>("done", &expire).await.is_some())
    }

    /// The members recorded by [`Dedup::add_done_member`]; empty also when Redis did not answer.
    pub async fn done_members(&self, key: &str) -> Result<Vec<String>, DedupError> {
        if key.is_empty() {
            return Err(DedupError::EmptyKey);
        }
        let cmd = redis::cmd("SMEMBERS")
            .arg(self.names.done_key(key))
            .to_owned();
        let mut found = self
            .run::<Vec<String>>("done", &cmd)
            .await
            .unwrap_or_default();
        found.sort();
        Ok(found)
    }

    async fn run<T: redis::FromRedisValue>(&self, op: &'static str, cmd: &redis::Cmd) -> Option<T> {
        let mut conn = self.conn.clone();
        let result = tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await;
        self.absorb(op, result)
    }

    /// Turn a failed or timed-out call into `None`, counting and (rate-limited) logging it.
    fn absorb<T>(
        &self,
        op: &'static str,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        let error = match result {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        metrics::counter!(METRIC_UNAVAILABLE).increment(1);
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(
                operation = op,
                error = %error,
                suppressed,
                "Redis unavailable for dedup; continuing on the target's unique keys"
            );
        }
        None
    }
}

fn check(key: &str, ttl: Duration) -> Result<(), DedupError> {
    if key.is_empty() {
        return Err(DedupError::EmptyKey);
    }
    if ttl < Duration::from_millis(1) {
        return Err(DedupError::InvalidTtl(ttl));
    }
    Ok(())
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Whole seconds when the TTL is whole seconds (the `EX` of DESIGN §5), milliseconds otherwise.
fn expiry(ttl: Duration) -> SetExpiry {
    if ttl.subsec_nanos() == 0 {
        SetExpiry::EX(ttl.as_secs())
    } else {
        SetExpiry::PX(millis(ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_prefers_seconds() {
        assert!(matches!(expiry(Duration::from_secs(60)), SetExpiry::EX(60)));
        assert!(matches!(
            expiry(Duration::from_millis(1500)),
            SetExpiry::PX(1500)
        ));
        assert!(check("k", Duration::ZERO).is_err());
        assert!(check("", Duration::from_secs(1)).is_err());
    }
}
