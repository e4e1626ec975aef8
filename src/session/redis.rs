//! The shared session store: Redis or Redis Cluster, so every gateway node sees the same sessions
//! and a sign-out on one holds on all.
//!
//! Keys (all under the configured prefix):
//! - `session:{id}` — the sealed record (`record.rs`), Redis TTL = the session's remaining life;
//! - `user:{email or sub}` — a set of that user's session ids, for `vallum sessions`, expiring
//!   with the user's last session (ids of ended sessions are pruned when listed);
//! - `once:{key}` — single-use markers (sign-in `state`, hand-offs, refresh leases), `SET NX EX`;
//! - channel `revoked` — session ids whose sessions ended, for every node's local cache.
//!
//! Every call is bounded by `timeout` (connecting included), so a slow or absent Redis costs a
//! request at most that long; the caller decides what an error means.

use super::{record, StoreError, UserSession};
use crate::clock::unix_now;
use crate::config::storage::{RedisSettings, RedisTarget, StoreTls};
use crate::crypto::Key;
use crate::telemetry::metrics::Metrics;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ClientTlsConfig, FromRedisValue, Pipeline, TlsCertificates};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

// One per store, built once: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Client {
    Single(redis::Client),
    /// The cluster client, its seed URLs and TLS material (for the pub/sub connection).
    Cluster(ClusterClient, Vec<String>, Option<TlsCertificates>),
}

pub struct RedisStore {
    client: Client,
    conn: OnceCell<Conn>,
    prefix: String,
    key: Key,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

const BACKEND: &str = "redis";

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Builds the client; connects lazily, on first use, and reconnects by itself after a failure.
    pub fn new(
        settings: &RedisSettings,
        shared_secret: &Key,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let certs = tls_certificates(&settings.tls);
        let client = match &settings.target {
            RedisTarget::Single(url) => Client::Single(
                open(url, certs.as_ref()).map_err(|e| format!("invalid Redis URL: {e}"))?,
            ),
            RedisTarget::Cluster(urls) => {
                let mut b = ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(settings.timeout.max(Duration::from_millis(500)))
                    .response_timeout(settings.timeout.max(Duration::from_millis(500)));
                if let Some(c) = &certs {
                    b = b.certs(c.clone());
                }
                Client::Cluster(
                    b.build()
                        .map_err(|e| format!("invalid Redis Cluster nodes: {e}"))?,
                    urls.clone(),
                    certs,
                )
            }
        };
        Ok(Self {
            client,
            conn: OnceCell::new(),
            prefix: settings.prefix.clone(),
            key: shared_secret.derive("vallum session record"),
            timeout: settings.timeout,
            metrics,
        })
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        self.conn
            .get_or_try_init(|| async {
                match &self.client {
                    Client::Single(c) => {
                        let cfg = ConnectionManagerConfig::new()
                            .set_number_of_retries(1)
                            .set_connection_timeout(Some(Duration::from_secs(1)))
                            .set_response_timeout(Some(Duration::from_secs(1)));
                        ConnectionManager::new_with_config(c.clone(), cfg)
                            .await
                            .map(Conn::Single)
                    }
                    Client::Cluster(c, _, _) => c.get_async_connection().await.map(Conn::Cluster),
                }
            })
            .await
            .cloned()
            .map_err(unavailable)
    }

    /// Runs one store operation under the timeout, recording its latency and any error.
    async fn timed<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        super::bounded(&self.metrics, BACKEND, op, self.timeout, async {
            let conn = self.connect().await?;
            f(conn).await.map_err(unavailable)
        })
        .await
    }

    async fn cmd<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        self.timed(op, |conn| async move {
            match conn {
                Conn::Single(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        })
        .await
    }

    /// A pipeline; under Redis Cluster all its keys must share a slot (one key here).
    async fn pipe<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: Pipeline,
    ) -> Result<T, StoreError> {
        self.timed(op, |conn| async move {
            match conn {
                Conn::Single(mut c) => pipe.query_async(&mut c).await,
                Conn::Cluster(mut c) => pipe.query_async(&mut c).await,
            }
        })
        .await
    }

    fn session_key(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    fn user_key(&self, user: &str) -> String {
        format!("{}user:{}", self.prefix, user.to_lowercase())
    }

    /// The channel that carries ended session ids to every node.
    pub fn revocation_channel(&self) -> String {
        format!("{}revoked", self.prefix)
    }

    /// A client for the revocation subscription. Under Redis Cluster, `PUBLISH` reaches every
    /// node, so subscribing on any one of them is enough; `attempt` rotates through the nodes so
    /// a dead one is skipped on the next try.
    pub fn pubsub_client(&self, attempt: usize) -> Result<redis::Client, String> {
        match &self.client {
            Client::Single(c) => Ok(c.clone()),
            Client::Cluster(_, urls, certs) => {
                let url = urls
                    .get(attempt % urls.len().max(1))
                    .ok_or("no cluster nodes")?;
                open(url, certs.as_ref()).map_err(|e| e.to_string())
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Arc<UserSession>>, StoreError> {
        let raw: Option<Vec<u8>> = self
            .cmd("get", redis::cmd("GET").arg(self.session_key(id)).clone())
            .await?;
        Ok(raw
            .and_then(|raw| record::open_session(&self.key, id, &raw))
            .filter(|s| !s.is_expired(unix_now())))
    }

    pub async fn put(&self, session: &UserSession) -> Result<(), StoreError> {
        let ttl = session.ttl(unix_now()).as_secs().max(1);
        let value = record::encode(&self.key, session).map_err(StoreError::Unavailable)?;
        self.cmd::<()>(
            "put",
            redis::cmd("SET")
                .arg(self.session_key(&session.id))
                .arg(value)
                .arg("EX")
                .arg(ttl)
                .clone(),
        )
        .await?;
        self.index(session).await
    }

    /// Writes a new version of a session only if its key still exists (`SET … XX`, atomic
    /// against a concurrent `DEL`).
    pub async fn replace(&self, session: &UserSession) -> Result<bool, StoreError> {
        let ttl = session.ttl(unix_now()).as_secs().max(1);
        let value = record::encode(&self.key, session).map_err(StoreError::Unavailable)?;
        let set: Option<String> = self
            .cmd(
                "replace",
                redis::cmd("SET")
                    .arg(self.session_key(&session.id))
                    .arg(value)
                    .arg("EX")
                    .arg(ttl)
                    .arg("XX")
                    .clone(),
            )
            .await?;
        if set.is_none() {
            return Ok(false);
        }
        self.index(session).await?;
        Ok(true)
    }

    /// The user index lives until the user's last session ends: set the expiry on a new set
    /// (NX), and push it later for a longer-lived session (GT).
    async fn index(&self, session: &UserSession) -> Result<(), StoreError> {
        let idx = self.user_key(&index_name(session));
        let mut p = redis::pipe();
        p.cmd("SADD").arg(&idx).arg(&session.id).ignore();
        p.cmd("EXPIREAT")
            .arg(&idx)
            .arg(session.expires_at)
            .arg("NX")
            .ignore();
        p.cmd("EXPIREAT")
            .arg(&idx)
            .arg(session.expires_at)
            .arg("GT")
            .ignore();
        self.pipe::<()>("index", p).await
    }

    /// Deletes the record and tells every node to drop its cached copy.
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.cmd::<()>(
            "delete",
            redis::cmd("DEL").arg(self.session_key(id)).clone(),
        )
        .await?;
        self.cmd::<()>(
            "publish",
            redis::cmd("PUBLISH")
                .arg(self.revocation_channel())
                .arg(id)
                .clone(),
        )
        .await?;
        self.metrics.revocations.with_label_values(&["sent"]).inc();
        Ok(())
    }

    /// True the first time `key` is claimed within `ttl`, on any node.
    pub async fn claim_once(&self, key: &str, ttl: u64) -> Result<bool, StoreError> {
        let set: Option<String> = self
            .cmd(
                "claim",
                redis::cmd("SET")
                    .arg(format!("{}once:{key}", self.prefix))
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl.max(1))
                    .clone(),
            )
            .await?;
        Ok(set.is_some())
    }

    /// The live sessions of `user` (an email, or the IdP's subject for users without one).
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<Arc<UserSession>>, StoreError> {
        let idx = self.user_key(user);
        let ids: Vec<String> = self
            .cmd("list", redis::cmd("SMEMBERS").arg(&idx).clone())
            .await?;
        let mut out = Vec::new();
        for id in ids {
            match self.get(&id).await? {
                Some(s) => out.push(s),
                None => {
                    self.cmd::<()>("index", redis::cmd("SREM").arg(&idx).arg(&id).clone())
                        .await?
                }
            }
        }
        out.sort_by(|a, b| (a.issued_at, &a.id).cmp(&(b.issued_at, &b.id)));
        Ok(out)
    }

    fn record_key(&self, key: &str) -> String {
        format!("{}rec:{key}", self.prefix)
    }

    /// A record, sealed like sessions so that write access to Redis alone cannot plant one
    /// (a WebAuthn device, say).
    pub async fn put_record(&self, key: &str, value: &[u8], ttl: u64) -> Result<(), StoreError> {
        let sealed = record::seal_record(&self.key, key, value);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.record_key(key)).arg(sealed);
        if ttl > 0 {
            cmd.arg("EX").arg(ttl);
        }
        self.cmd::<()>("put_record", cmd).await
    }

    pub async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let raw: Option<Vec<u8>> = self
            .cmd(
                "get_record",
                redis::cmd("GET").arg(self.record_key(key)).clone(),
            )
            .await?;
        Ok(raw.and_then(|r| record::open_record(&self.key, key, &r)))
    }

    pub async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        self.cmd::<()>(
            "delete_record",
            redis::cmd("DEL").arg(self.record_key(key)).clone(),
        )
        .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.cmd::<String>("ping", redis::cmd("PING"))
            .await
            .map(|_| ())
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The redis crate's form of the configured CA and client certificate, if any.
fn tls_certificates(t: &StoreTls) -> Option<TlsCertificates> {
    if t.ca_pem.is_none() && t.client.is_none() {
        return None;
    }
    Some(TlsCertificates {
        client_tls: t.client.as_ref().map(|(cert, key)| ClientTlsConfig {
            client_cert: cert.clone(),
            client_key: key.clone(),
        }),
        root_cert: t.ca_pem.clone(),
    })
}

fn open(url: &str, certs: Option<&TlsCertificates>) -> redis::RedisResult<redis::Client> {
    match certs {
        Some(c) => redis::Client::build_with_tls(url, c.clone()),
        None => redis::Client::open(url),
    }
}

/// The name a session is indexed under: its email (lower-case), else the IdP subject.
pub fn index_name(s: &UserSession) -> String {
    s.email
        .as_deref()
        .unwrap_or(&s.user_id)
        .to_ascii_lowercase()
}
