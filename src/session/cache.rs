//! Each node's cache in front of the shared store, so the steady-state request path makes no
//! network round trip.
//!
//! - An entry (a session, or the fact that there is none) is trusted for `ttl` (default 1 s);
//!   after that the next request re-reads it with one `GET`. Concurrent misses for one id share
//!   that `GET` (single-flight).
//! - A revocation message (sign-out, failed refresh, `vallum sessions revoke` on any node) drops
//!   the entry at once. A fetch that was in flight when a revocation arrived is returned to its
//!   caller but not cached, so a reply that crossed the message cannot resurrect the session.
//! - When the store cannot answer, a session this node saw within `max_stale` is still served
//!   (bounded staleness; a revocation published during the outage is not seen until the
//!   subscription reconnects, which then clears the cache). An unknown session is an error the
//!   caller turns into a 503.
//!
//! The same cache sits in front of the `file` store, where the other process of a graceful
//! upgrade is the "other node": it sees a sign-out made here within `ttl`.

use super::redis::RedisStore;
use super::{SessionStore, StoreError, UserSession};
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

type Fast = foldhash::fast::RandomState;

type Fetch = Arc<OnceCell<Result<Option<Arc<UserSession>>, StoreError>>>;

/// What a cache reads through to: a store's own calls (Redis and the file store).
#[async_trait]
pub trait Backing: Send + Sync + 'static {
    async fn get(&self, id: &str) -> Result<Option<Arc<UserSession>>, StoreError>;
    async fn put(&self, s: &UserSession) -> Result<(), StoreError>;
    async fn replace(&self, s: &UserSession) -> Result<bool, StoreError>;
    async fn delete(&self, id: &str) -> Result<(), StoreError>;
    async fn claim_once(&self, key: &str, ttl: u64) -> Result<bool, StoreError>;
    async fn sessions_of(&self, user: &str) -> Result<Vec<Arc<UserSession>>, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    async fn put_record(&self, key: &str, value: &[u8], ttl: u64) -> Result<(), StoreError>;
    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn delete_record(&self, key: &str) -> Result<(), StoreError>;
    fn name(&self) -> &'static str;
}

#[async_trait]
impl Backing for RedisStore {
    async fn get(&self, id: &str) -> Result<Option<Arc<UserSession>>, StoreError> {
        RedisStore::get(self, id).await
    }
    async fn put(&self, s: &UserSession) -> Result<(), StoreError> {
        RedisStore::put(self, s).await
    }
    async fn replace(&self, s: &UserSession) -> Result<bool, StoreError> {
        RedisStore::replace(self, s).await
    }
    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        RedisStore::delete(self, id).await
    }
    async fn claim_once(&self, key: &str, ttl: u64) -> Result<bool, StoreError> {
        RedisStore::claim_once(self, key, ttl).await
    }
    async fn sessions_of(&self, user: &str) -> Result<Vec<Arc<UserSession>>, StoreError> {
        RedisStore::sessions_of(self, user).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        RedisStore::ping(self).await
    }
    async fn put_record(&self, key: &str, value: &[u8], ttl: u64) -> Result<(), StoreError> {
        RedisStore::put_record(self, key, value, ttl).await
    }
    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        RedisStore::get_record(self, key).await
    }
    async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        RedisStore::delete_record(self, key).await
    }
    fn name(&self) -> &'static str {
        "redis"
    }
}

struct Entry {
    value: Option<Arc<UserSession>>,
    fetched: Instant,
}

pub struct CachedStore<S = RedisStore> {
    inner: S,
    /// Entries written since the last sweep (a store without a revocation listener sweeps as
    /// it goes).
    inserts: AtomicU64,
    /// Keyed by session ids, random and made by Vallum: a fast hasher is enough.
    entries: DashMap<String, Entry, Fast>,
    inflight: DashMap<String, Fetch, Fast>,
    /// Bumped by every revocation and cache clear; a fetch that saw it change is not cached.
    epoch: AtomicU64,
    ttl: Duration,
    max_stale: Duration,
    pub(super) metrics: Arc<Metrics>,
}

impl<S: Backing> CachedStore<S> {
    pub fn new(inner: S, ttl: Duration, max_stale: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            inserts: AtomicU64::new(0),
            entries: DashMap::with_hasher(Fast::default()),
            inflight: DashMap::with_hasher(Fast::default()),
            epoch: AtomicU64::new(0),
            ttl,
            max_stale,
            metrics,
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Every 4096 entries written, forgets those too old to serve (bounds the cache where no
    /// listener sweeps it).
    fn inserted(&self) {
        if self.inserts.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.sweep();
        }
    }

    /// Drops one session from this node's cache (a revocation message).
    pub fn evict(&self, id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(id);
    }

    /// Drops everything (after a subscription gap, when messages may have been missed).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    /// Forgets entries too old to be served even during an outage.
    pub fn sweep(&self) {
        let keep = self.ttl.max(self.max_stale);
        self.entries.retain(|_, e| e.fetched.elapsed() < keep);
    }

    pub fn cached(&self) -> usize {
        self.entries.len()
    }

    fn fresh(&self, id: &str) -> Option<Option<Arc<UserSession>>> {
        if self.ttl.is_zero() {
            return None;
        }
        let e = self.entries.get(id)?;
        (e.fetched.elapsed() < self.ttl).then(|| e.value.clone())
    }

    fn stale(&self, id: &str) -> Option<Arc<UserSession>> {
        let e = self.entries.get(id)?;
        if e.fetched.elapsed() >= self.max_stale {
            return None;
        }
        e.value.clone().filter(|s| !s.is_expired(super::unix_now()))
    }

    async fn fetch(&self, id: &str) -> Result<Option<Arc<UserSession>>, StoreError> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let cell = Arc::clone(self.inflight.entry(id.to_string()).or_default().value());
        let result = cell.get_or_init(|| self.inner.get(id)).await.clone();
        self.inflight.remove_if(id, |_, c| Arc::ptr_eq(c, &cell));
        if let Ok(value) = &result {
            if !self.ttl.is_zero() && self.epoch.load(Ordering::SeqCst) == epoch {
                self.entries.insert(
                    id.to_string(),
                    Entry {
                        value: value.clone(),
                        fetched: Instant::now(),
                    },
                );
                self.inserted();
            }
        }
        result
    }
}

#[async_trait]
impl<S: Backing> SessionStore for CachedStore<S> {
    async fn get(&self, id: &str) -> Result<Option<Arc<UserSession>>, StoreError> {
        if let Some(v) = self.fresh(id) {
            self.metrics.session_cache.with_label_values(&["hit"]).inc();
            return Ok(v.filter(|s| !s.is_expired(super::unix_now())));
        }
        self.metrics
            .session_cache
            .with_label_values(&["miss"])
            .inc();
        match self.fetch(id).await {
            Ok(v) => Ok(v),
            Err(e) => match self.stale(id) {
                Some(s) => {
                    self.metrics
                        .session_cache
                        .with_label_values(&["stale"])
                        .inc();
                    tracing::debug!(error = %e, "session store unavailable; serving a recently seen session");
                    Ok(Some(s))
                }
                None => Err(e),
            },
        }
    }

    async fn put(&self, session: UserSession) -> Result<(), StoreError> {
        self.inner.put(&session).await?;
        if !self.ttl.is_zero() {
            self.entries.insert(
                session.id.clone(),
                Entry {
                    value: Some(Arc::new(session)),
                    fetched: Instant::now(),
                },
            );
        }
        Ok(())
    }

    async fn replace(&self, session: UserSession) -> Result<bool, StoreError> {
        let replaced = self.inner.replace(&session).await?;
        if replaced && !self.ttl.is_zero() {
            self.entries.insert(
                session.id.clone(),
                Entry {
                    value: Some(Arc::new(session)),
                    fetched: Instant::now(),
                },
            );
        } else if !replaced {
            self.evict(&session.id);
        }
        Ok(replaced)
    }

    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.evict(id);
        self.inner.delete(id).await
    }

    async fn claim_once(&self, key: &str, ttl: u64) -> Result<bool, StoreError> {
        self.inner.claim_once(key, ttl).await
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<Arc<UserSession>>, StoreError> {
        self.inner.sessions_of(user).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    // Records are read where a person is waiting (enrolment pages), never per request: no cache.
    async fn put_record(&self, key: &str, value: Vec<u8>, ttl: u64) -> Result<(), StoreError> {
        self.inner.put_record(key, &value, ttl).await
    }

    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_record(key).await
    }

    async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete_record(key).await
    }

    fn backend(&self) -> &'static str {
        self.inner.name()
    }
}
