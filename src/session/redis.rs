//! The shared session store: Redis, so every gateway node sees the same sessions and a sign-out
//! on one holds on all. Records are sealed (XChaCha20-Poly1305, key derived from
//! `shared_secret`, bound to the session id) so tokens are encrypted at rest, and expire in Redis
//! with the session (TTL = remaining lifetime).

use super::{unix_now, Session, SessionStore, StoreError};
use crate::crypto::Key;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Record format version, so a rolling upgrade can read what the previous version wrote.
const FORMAT: &str = "v1";

pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    key: Key,
}

impl RedisStore {
    /// `url`: `redis://[user:pass@]host:port[/db]` or `rediss://…` (TLS). Connects lazily, on
    /// first use, and reconnects by itself after a failure.
    pub fn new(url: &str, prefix: &str, shared_secret: &Key) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        Ok(Self {
            client,
            conn: OnceCell::new(),
            prefix: prefix.to_string(),
            key: shared_secret.derive("vallum session record"),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.conn
            .get_or_try_init(|| {
                // Fail fast on the request path: a Redis outage must not hold requests for long.
                let cfg = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(1)));
                ConnectionManager::new_with_config(self.client.clone(), cfg)
            })
            .await
            .cloned()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn redis_key(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    fn ad(id: &str) -> Vec<u8> {
        format!("{FORMAT}|{id}").into_bytes()
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn get(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        let mut c = self.conn().await?;
        let raw: Option<String> = c
            .get(self.redis_key(id))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let Some(raw) = raw else { return Ok(None) };
        let Some(sealed) = raw.strip_prefix(&format!("{FORMAT}:")) else {
            tracing::warn!("session record in an unknown format; treating it as absent");
            return Ok(None);
        };
        let Some(plain) = self.key.open(sealed, &Self::ad(id)) else {
            tracing::warn!(
                "session record does not open (another shared_secret?); treating it as absent"
            );
            return Ok(None);
        };
        let Ok(s) = serde_json::from_slice::<Session>(&plain) else {
            return Ok(None);
        };
        if s.is_expired(unix_now()) || s.id != id {
            return Ok(None);
        }
        Ok(Some(Arc::new(s)))
    }

    async fn put(&self, session: Session) -> Result<(), StoreError> {
        let ttl = session.ttl(unix_now()).as_secs().max(1);
        let plain =
            serde_json::to_vec(&session).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let value = format!("{FORMAT}:{}", self.key.seal(&plain, &Self::ad(&session.id)));
        let mut c = self.conn().await?;
        c.set_ex::<_, _, ()>(self.redis_key(&session.id), value, ttl)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        c.del::<_, ()>(self.redis_key(id))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
