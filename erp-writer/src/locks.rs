//! In-process mutual exclusion per key (a HubSpot company), under the Redis lease.
//!
//! Why both: the Redis lease keeps *processes* apart but is only a fast path — with Redis down
//! every acquire answers "unavailable" and work goes ahead. Inside one process, tasks handling
//! commands for the same company still must not race on the Address and Contacts, which have no
//! unique key in ERPNext. A local mutex per key costs nothing and holds whatever Redis does.
//! Entries are removed when the last holder lets go, so the map does not grow with every company.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default, Clone)]
pub struct KeyedLocks {
    inner: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

/// Held while working on one key; dropping it releases the key.
#[derive(Debug)]
pub struct KeyGuard {
    key: String,
    locks: KeyedLocks,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wait for and take the lock of `key`.
    pub async fn lock(&self, key: &str) -> KeyGuard {
        let mutex = {
            let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        KeyGuard {
            key: key.to_string(),
            locks: self.clone(),
            guard: Some(guard),
        }
    }

    /// Keys currently held or awaited (tests).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it now: nobody holds or awaits this key.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_entries_are_cleaned_up() {
        let locks = KeyedLocks::new();
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (locks, inside, max) = (locks.clone(), inside.clone(), max.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock("company-1").await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        // Another key is never blocked by the first.
        let _other = tokio::time::timeout(Duration::from_secs(1), locks.lock("company-2"))
            .await
            .expect("independent key");
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(max.load(Ordering::SeqCst), 1);
        drop(_other);
        assert!(locks.is_empty());
    }
}
