//! Keeps a node's session cache in step with the fleet: every shared store announces the ids of
//! ended sessions (Redis `PUBLISH`, PostgreSQL `NOTIFY`) and each node listens. One loop for
//! both: subscribe, clear the cache (whatever was announced while not subscribed is unknown),
//! evict each announced id, and subscribe again with backoff when the subscription is lost.

use super::cache::{Backing, CachedStore};
use super::redis::RedisStore;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// A store that announces revocations.
#[async_trait]
pub trait Feed: Backing {
    /// A subscription: the ids of sessions that ended, until the stream ends (subscription lost).
    /// `attempt` counts failures, for stores that rotate through nodes.
    async fn subscribe(&self, attempt: usize) -> Result<BoxStream<'static, String>, String>;
    /// The store's own housekeeping, on the listener's tick.
    async fn maintain(&self) {}
}

#[async_trait]
impl Feed for RedisStore {
    async fn subscribe(&self, attempt: usize) -> Result<BoxStream<'static, String>, String> {
        let client = self.pubsub_client(attempt)?;
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
        pubsub
            .subscribe(self.revocation_channel())
            .await
            .map_err(|e| e.to_string())?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|m| futures_util::future::ready(m.get_payload::<String>().ok()))
            .boxed())
    }
}

/// The background service: for as long as the server runs, this node hears every revocation.
pub struct RevocationListener<S: Feed = RedisStore> {
    pub store: Arc<CachedStore<S>>,
}

impl<S: Feed> RevocationListener<S> {
    /// One subscription, until it is lost.
    async fn listen(&self, attempt: usize) -> Result<(), String> {
        let mut ids = self.store.inner().subscribe(attempt).await?;
        // Subscribed: whatever was announced while we were not is unknown to us.
        self.store.clear();
        tracing::info!(
            store = self.store.inner().name(),
            "subscribed to session revocations"
        );
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                id = ids.next() => {
                    let Some(id) = id else { return Ok(()) };
                    self.store.evict(&id);
                    self.store.metrics.revocations.with_label_values(&["received"]).inc();
                }
                _ = tick.tick() => {
                    self.store.sweep();
                    self.store.inner().maintain().await;
                }
            }
        }
    }
}

#[async_trait]
impl<S: Feed> pingora_core::services::background::BackgroundService for RevocationListener<S> {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let mut attempt = 0usize;
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                r = self.listen(attempt) => {
                    match r {
                        Ok(()) => {
                            tracing::warn!("session revocation subscription lost; reconnecting");
                            backoff = Duration::from_millis(100);
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot subscribe to session revocations; retrying"),
                    }
                    attempt += 1;
                }
                _ = shutdown.changed() => return,
            }
            // The cache is kept while unsubscribed so recently seen sessions can be served during
            // an outage (bounded by `max_stale`); it is cleared on resubscription.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
