//! An older fact never overwrites a newer one (DESIGN §5, "Ordering").
//!
//! Commands reach crm-writer out of order (retries, redeliveries, several mapper replicas): the
//! invoice's `Paid` can arrive before its `Overdue`. Each command carries `source_modified`, the
//! time its fact became true at the source. Redis keeps, per HubSpot object, a hash
//! property → last applied `source_modified` (µs; [`Names::crm_applied_key`]) and every write
//! goes through two atomic scripts:
//!
//! 1. **prepare**, before the HubSpot call, for every object of a batch at once: take the
//!    object's lease (`SET NX PX`, [`Names::lease_key`]) and compare each property's time with the
//!    stored one; a property whose stored time is newer is left out ([`Verdict::Write::stale`]).
//!    An object whose lease another writer holds is [`Verdict::Busy`]: its updates wait for the
//!    next batch. The lease is what makes the comparison safe across replicas: without it, two
//!    writers could both pass the check and HubSpot would keep whichever write landed last.
//! 2. **commit**, after the call: store each written property's time unless a newer one is there
//!    (compare-and-set to the maximum), refresh the hash's TTL, release the leases this batch
//!    holds (compare-and-delete: a lease that expired and was taken by another writer stays).
//!
//! Equal times pass: the same command redelivered after its write (a crash before the ack)
//! writes the same values again, which is harmless.
//!
//! # Redis unavailable
//! Redis is a guard here, not the truth. If a script fails or times out, the write goes ahead
//! unguarded (every property, no lease), with a warning (at most one per 30 s) and
//! `l2l_crm_writer_ordering_unavailable_total`; within one process the coalescer still writes
//! each object once at a time and newest-wins. What is lost until Redis returns is protection
//! against an old command arriving after a newer one was written.
//!
//! The scripts touch keys of several objects, so they need a single Redis (or every key in one
//! cluster slot), like the rate budget.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use shared::hubspot::ObjectType;
use shared::names::Names;

use crate::metrics;

/// Bound on one Redis round trip; Redis answers in well under a millisecond.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// At most one "Redis unavailable" warning per this interval.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// KEYS: lease, applied per object. ARGV: token, lease ms, then per object `n` and `n` pairs
/// (property, µs). Returns per object 1 (leased) followed by one 1/0 (fresh/stale) per property,
/// or 0 (busy).
const PREPARE: &str = r"
local token, lease_ms = ARGV[1], ARGV[2]
local out = {}
local a = 3
for i = 1, #KEYS, 2 do
  local n = tonumber(ARGV[a]); a = a + 1
  if redis.call('SET', KEYS[i], token, 'NX', 'PX', lease_ms) then
    out[#out + 1] = 1
    for j = 1, n do
      local stored = tonumber(redis.call('HGET', KEYS[i + 1], ARGV[a]) or '')
      if stored and stored > tonumber(ARGV[a + 1]) then out[#out + 1] = 0 else out[#out + 1] = 1 end
      a = a + 2
    end
  else
    out[#out + 1] = 0
    a = a + 2 * n
  end
end
return out
";

/// KEYS as [`PREPARE`]. ARGV: token, hash TTL ms, then per object `n` pairs (property, µs) of
/// what was written (`n = 0`: only release the lease).
const COMMIT: &str = r"
local token, ttl_ms = ARGV[1], ARGV[2]
local a = 3
for i = 1, #KEYS, 2 do
  local n = tonumber(ARGV[a]); a = a + 1
  for j = 1, n do
    local stored = tonumber(redis.call('HGET', KEYS[i + 1], ARGV[a]) or '')
    if not stored or tonumber(ARGV[a + 1]) >= stored then
      redis.call('HSET', KEYS[i + 1], ARGV[a], ARGV[a + 1])
    end
    a = a + 2
  end
  if n > 0 then redis.call('PEXPIRE', KEYS[i + 1], ttl_ms) end
  if redis.call('GET', KEYS[i]) == token then redis.call('DEL', KEYS[i]) end
end
return 1
";

/// A property value and when it became true at the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub value: String,
    pub at: DateTime<Utc>,
}

/// What [`OrderingGuard::prepare`] decided for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Write these properties (possibly none: every one was older than what is applied).
    Write {
        fresh: BTreeMap<String, Stamped>,
        stale: usize,
    },
    /// Another writer holds the object's lease; try again shortly.
    Busy,
}

/// The leases of one batch, released by [`OrderingGuard::commit`].
#[derive(Debug, Clone)]
pub struct Claim {
    token: String,
    /// Whether Redis answered `prepare` (otherwise there are no leases and no comparison).
    pub guarded: bool,
}

pub struct OrderingGuard {
    conn: ConnectionManager,
    names: Names,
    lease_ttl: Duration,
    ttl: Duration,
    prepare: redis::Script,
    commit: redis::Script,
    last_warning: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for OrderingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderingGuard")
            .field("namespace", &self.names.namespace())
            .field("lease_ttl", &self.lease_ttl)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl OrderingGuard {
    /// `lease_ttl` must outlast one HubSpot write (budget wait included); `ttl` is how long the
    /// applied times are remembered.
    pub fn new(conn: ConnectionManager, names: Names, lease_ttl: Duration, ttl: Duration) -> Self {
        Self {
            conn,
            names,
            lease_ttl,
            ttl,
            prepare: redis::Script::new(PREPARE),
            commit: redis::Script::new(COMMIT),
            last_warning: Mutex::new(None),
        }
    }

    /// Connect lazily: succeeds while Redis is down (only a malformed URL fails).
    pub fn connect(
        url: &str,
        names: Names,
        lease_ttl: Duration,
        ttl: Duration,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self::new(
            shared::redis_conn::connect(url)?,
            names,
            lease_ttl,
            ttl,
        ))
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// Take the leases of `objects` and leave out every property older than what is applied.
    /// One verdict per object, in order. Never fails: without Redis every property is written.
    pub async fn prepare(
        &self,
        object_type: ObjectType,
        objects: &[(&str, &BTreeMap<String, Stamped>)],
    ) -> (Claim, Vec<Verdict>) {
        let token = uuid::Uuid::now_v7().simple().to_string();
        let mut invocation = self.prepare.prepare_invoke();
        invocation.arg(&token).arg(
            u64::try_from(self.lease_ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        for (id, props) in objects {
            invocation
                .key(self.lease_key(object_type, id))
                .key(self.names.crm_applied_key(object_type.as_str(), id))
                .arg(props.len());
            for (name, stamped) in props.iter() {
                invocation.arg(name).arg(stamped.at.timestamp_micros());
            }
        }
        let mut conn = self.conn.clone();
        let reply: Result<Vec<i64>, String> =
            match tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut conn)).await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
            };
        let unguarded = || {
            objects
                .iter()
                .map(|(_, props)| Verdict::Write {
                    fresh: (*props).clone(),
                    stale: 0,
                })
                .collect::<Vec<_>>()
        };
        let reply = match reply {
            Ok(r) => r,
            Err(error) => {
                self.unavailable("prepare", &error);
                let claim = Claim {
                    token,
                    guarded: false,
                };
                return (claim, unguarded());
            }
        };
        match decode_prepare(objects, &reply) {
            Some(verdicts) => (
                Claim {
                    token,
                    guarded: true,
                },
                verdicts,
            ),
            None => {
                // Cannot happen with this script; refuse to guess which leases we hold.
                self.unavailable("prepare", "unexpected reply shape");
                (
                    Claim {
                        token,
                        guarded: false,
                    },
                    unguarded(),
                )
            }
        }
    }

    /// Record what was written and release this batch's leases. `objects` lists every object
    /// `prepare` leased; an empty map only releases (the write failed or had nothing to do).
    pub async fn commit(
        &self,
        object_type: ObjectType,
        claim: &Claim,
        objects: &[(&str, &BTreeMap<String, Stamped>)],
    ) {
        if objects.is_empty() {
            return;
        }
        let mut invocation = self.commit.prepare_invoke();
        invocation.arg(&claim.token).arg(
            u64::try_from(self.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        for (id, props) in objects {
            invocation
                .key(self.lease_key(object_type, id))
                .key(self.names.crm_applied_key(object_type.as_str(), id))
                .arg(props.len());
            for (name, stamped) in props.iter() {
                invocation.arg(name).arg(stamped.at.timestamp_micros());
            }
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.unavailable("commit", &e.to_string()),
            Err(_) => self.unavailable("commit", &format!("no answer within {REDIS_TIMEOUT:?}")),
        }
    }

    fn lease_key(&self, object_type: ObjectType, id: &str) -> String {
        self.names
            .lease_key(&format!("crm:{}:{id}", object_type.as_str()))
    }

    fn unavailable(&self, step: &'static str, error: &str) {
        metrics::ordering_unavailable(step);
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                step,
                %error,
                "Redis unavailable: writing to HubSpot without the ordering guard (an older update may overwrite a newer one until Redis is back)"
            );
        }
    }
}

/// Turn the flat script reply into verdicts; `None` if its length does not match.
fn decode_prepare(
    objects: &[(&str, &BTreeMap<String, Stamped>)],
    reply: &[i64],
) -> Option<Vec<Verdict>> {
    let mut it = reply.iter();
    let mut out = Vec::with_capacity(objects.len());
    for (_, props) in objects {
        if *it.next()? == 0 {
            out.push(Verdict::Busy);
            continue;
        }
        let mut fresh = BTreeMap::new();
        let mut stale = 0;
        for (name, stamped) in props.iter() {
            if *it.next()? == 1 {
                fresh.insert(name.clone(), stamped.clone());
            } else {
                stale += 1;
            }
        }
        out.push(Verdict::Write { fresh, stale });
    }
    it.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(value: &str, secs: i64) -> Stamped {
        Stamped {
            value: value.into(),
            at: DateTime::from_timestamp(secs, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn decodes_busy_fresh_and_stale() {
        let a: BTreeMap<String, Stamped> = [
            ("invoice_status".to_string(), stamped("paid", 3)),
            ("erpnext_sync_status".to_string(), stamped("synced", 3)),
        ]
        .into_iter()
        .collect();
        let b: BTreeMap<String, Stamped> =
            [("x".to_string(), stamped("1", 1))].into_iter().collect();
        let objects = [("1", &a), ("2", &b)];
        // Object 1 leased: erpnext_sync_status fresh, invoice_status stale; object 2 busy.
        let v = decode_prepare(&objects, &[1, 1, 0, 0]).expect("shape");
        assert_eq!(
            v[0],
            Verdict::Write {
                fresh: [("erpnext_sync_status".to_string(), stamped("synced", 3))]
                    .into_iter()
                    .collect(),
                stale: 1
            }
        );
        assert_eq!(v[1], Verdict::Busy);
        assert!(decode_prepare(&objects, &[1, 1]).is_none(), "too short");
        assert!(decode_prepare(&objects, &[0, 0, 1]).is_none(), "too long");
    }
}
