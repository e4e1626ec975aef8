//! The embedded session store: a concurrent map with expiry and a size bound. Single node only;
//! sessions do not survive a restart.

use super::{SessionStore, StoreError, UserSession};
use crate::clock::unix_now;
use async_trait::async_trait;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A stored session that is its own key, found by its id: a copy of the id as a separate key,
/// and the wider table slot it needs, cost about 60 bytes a session at a million of them.
struct ById(Arc<UserSession>);

impl Hash for ById {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // As `str` hashes: lookups borrow the key as the id.
        self.0.id.as_str().hash(h);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

pub struct MemoryStore {
    /// Ids are random and made here, so a fast hasher (not SipHash) is enough.
    map: DashMap<ById, (), foldhash::fast::RandomState>,
    /// Single-use keys → expiry (unix seconds).
    claimed: DashMap<String, u64>,
    /// Other records → (value, expiry; 0 = none).
    records: DashMap<String, (Vec<u8>, u64)>,
    capacity: usize,
}

impl MemoryStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: DashMap::with_hasher(Default::default()),
            claimed: DashMap::new(),
            records: DashMap::new(),
            capacity,
        }
    }

    fn evict_expired(&self, now: u64) {
        self.map.retain(|s, _| !s.0.is_expired(now));
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
        let found = self.map.get(id).map(|s| Arc::clone(&s.key().0));
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
        // A new version replaces the key too (the key is the session).
        match self.map.entry(ById(Arc::new(session))) {
            Entry::Occupied(e) => drop(e.replace_entry(())),
            Entry::Vacant(e) => drop(e.insert(())),
        }
        Ok(())
    }

    async fn replace(&self, session: UserSession) -> Result<bool, StoreError> {
        // Under the entry's shard lock: a concurrent delete either ran first (nothing to
        // replace) or runs after (and removes the new version).
        Ok(match self.map.entry(ById(Arc::new(session))) {
            Entry::Occupied(e) => {
                e.replace_entry(());
                true
            }
            Entry::Vacant(_) => false,
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
            .map(|e| Arc::clone(&e.key().0))
            .filter(|s| !s.is_expired(now) && super::redis::index_name(s) == user.to_lowercase())
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
