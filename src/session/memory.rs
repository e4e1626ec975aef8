//! The embedded session store: a concurrent map with expiry and a size bound. Single node only;
//! sessions do not survive a restart.

use super::{SessionStore, StoreError, UserSession};
use crate::clock::unix_now;
use async_trait::async_trait;
use dashmap::DashMap;
use std::sync::Arc;

pub struct MemoryStore {
    /// Keyed by a boxed copy of the id: a table slot 8 bytes smaller than a `String`'s.
    map: DashMap<Box<str>, Arc<UserSession>>,
    /// Single-use keys → expiry (unix seconds).
    claimed: DashMap<String, u64>,
    /// Other records → (value, expiry; 0 = none).
    records: DashMap<String, (Vec<u8>, u64)>,
    capacity: usize,
}

impl MemoryStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: DashMap::new(),
            claimed: DashMap::new(),
            records: DashMap::new(),
            capacity,
        }
    }

    fn evict_expired(&self, now: u64) {
        self.map.retain(|_, s| !s.is_expired(now));
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(1_000_000)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, id: &str) -> Result<Option<Arc<UserSession>>, StoreError> {
        let now = unix_now();
        let found = self.map.get(id).map(|s| Arc::clone(s.value()));
        match found {
            Some(s) if s.is_expired(now) => {
                self.map.remove(id);
                Ok(None)
            }
            other => Ok(other),
        }
    }

    async fn put(&self, session: UserSession) -> Result<(), StoreError> {
        if self.map.len() >= self.capacity && !self.map.contains_key(session.id.as_str()) {
            self.evict_expired(unix_now());
            if self.map.len() >= self.capacity {
                return Err(StoreError::Full(self.capacity));
            }
        }
        self.map
            .insert(session.id.as_str().into(), Arc::new(session));
        Ok(())
    }

    async fn replace(&self, session: UserSession) -> Result<bool, StoreError> {
        // Under the entry's shard lock: a concurrent delete either ran first (nothing to
        // replace) or runs after (and removes the new version).
        Ok(match self.map.get_mut(session.id.as_str()) {
            Some(mut e) => {
                *e = Arc::new(session);
                true
            }
            None => false,
        })
    }

    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.map.remove(id);
        Ok(())
    }

    async fn claim_once(&self, key: &str, ttl: u64) -> Result<bool, StoreError> {
        let now = unix_now();
        if self.claimed.len() > 100_000 {
            self.claimed.retain(|_, exp| *exp > now);
        }
        let mut fresh = false;
        self.claimed
            .entry(key.to_string())
            .and_modify(|exp| {
                if *exp <= now {
                    *exp = now + ttl;
                    fresh = true;
                }
            })
            .or_insert_with(|| {
                fresh = true;
                now + ttl
            });
        Ok(fresh)
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<Arc<UserSession>>, StoreError> {
        let now = unix_now();
        let mut out: Vec<Arc<UserSession>> = self
            .map
            .iter()
            .filter(|e| !e.is_expired(now) && super::redis::index_name(e) == user.to_lowercase())
            .map(|e| Arc::clone(e.value()))
            .collect();
        out.sort_by(|a, b| (a.issued_at, &a.id).cmp(&(b.issued_at, &b.id)));
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_record(&self, key: &str, value: Vec<u8>, ttl: u64) -> Result<(), StoreError> {
        let now = unix_now();
        if self.records.len() >= self.capacity && !self.records.contains_key(key) {
            self.records.retain(|_, (_, exp)| *exp == 0 || *exp > now);
            if self.records.len() >= self.capacity {
                return Err(StoreError::Full(self.capacity));
            }
        }
        let exp = if ttl == 0 { 0 } else { now + ttl };
        self.records.insert(key.to_string(), (value, exp));
        Ok(())
    }

    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = unix_now();
        Ok(self
            .records
            .get(key)
            .filter(|e| e.1 == 0 || e.1 > now)
            .map(|e| e.0.clone()))
    }

    async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        self.records.remove(key);
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
