//! `databroker_storage_type: postgres`: the shared session store in PostgreSQL, the store
//! Pomerium's own fleets use. Same duties as Redis (`redis.rs`), in tables Vallum creates and
//! migrates itself (`schema.rs`):
//! - `vallum.sessions` — sealed records (`record.rs`) with their expiry and the user they belong
//!   to (an index, for `vallum sessions`);
//! - `vallum.records` — WebAuthn devices and ceremonies, sealed and bound to their key;
//! - `vallum.claims` — single-use markers;
//! - `NOTIFY vallum_revoked` — a deleted session's id, sent in the statement that deletes it,
//!   for every node's cache (`listen.rs`).
//!
//! Every call is bounded by `timeout`, waiting for a pooled connection included, and the server
//! stops a pooled statement after the same time. Expired rows are never served and are deleted
//! in the background in bounded batches.

mod connect;
mod listen;
pub mod schema;

use super::{record, StoreError, UserSession};
use crate::clock::unix_now;
use crate::config::postgres::PostgresSettings;
use crate::crypto::Key;
use crate::telemetry::metrics::Metrics;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

const BACKEND: &str = "postgres";
/// Expired rows deleted per table and pass; a pass runs every `SWEEP_EVERY` writes and on the
/// listener's maintenance tick.
const SWEEP_BATCH: i64 = 500;
const SWEEP_EVERY: u64 = 256;
const SWEEP_TIMEOUT: &str = "SET LOCAL statement_timeout = '10s'";
/// How long creating one connection (TCP, TLS, authentication) may take. It runs apart from the
/// request that asked for it, so a slow handshake is not thrown away by a short call timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const GET: &str = "SELECT data FROM vallum.sessions WHERE id = $1 AND expires > $2";
const PUT: &str = "INSERT INTO vallum.sessions (id, user_name, issued, expires, data)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (id) DO UPDATE SET user_name = EXCLUDED.user_name, issued = EXCLUDED.issued,
         expires = EXCLUDED.expires, data = EXCLUDED.data";
const REPLACE: &str =
    "UPDATE vallum.sessions SET user_name = $2, issued = $3, expires = $4, data = $5
     WHERE id = $1";
/// The delete and its announcement in one statement: the notification is sent at commit, so no
/// node hears of a revocation that did not happen, nor misses one that did.
const DELETE: &str = "WITH gone AS (DELETE FROM vallum.sessions WHERE id = $1)
     SELECT pg_notify('vallum_revoked', $1)";
const CLAIM: &str = "INSERT INTO vallum.claims (key, expires) VALUES ($1, $2)
     ON CONFLICT (key) DO UPDATE SET expires = EXCLUDED.expires WHERE vallum.claims.expires <= $3";
const LIST: &str = "SELECT id, data FROM vallum.sessions
     WHERE user_name = $1 AND expires > $2 ORDER BY issued, id";
const PUT_RECORD: &str = "INSERT INTO vallum.records (key, expires, data) VALUES ($1, $2, $3)
     ON CONFLICT (key) DO UPDATE SET expires = EXCLUDED.expires, data = EXCLUDED.data";
const GET_RECORD: &str =
    "SELECT data FROM vallum.records WHERE key = $1 AND (expires = 0 OR expires > $2)";
const DELETE_RECORD: &str = "DELETE FROM vallum.records WHERE key = $1";
/// Per table: a bounded batch of expired rows, skipping rows another node is deleting.
const SWEEPS: [&str; 3] = [
    "DELETE FROM vallum.sessions WHERE ctid IN (SELECT ctid FROM vallum.sessions
         WHERE expires <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    "DELETE FROM vallum.records WHERE ctid IN (SELECT ctid FROM vallum.records
         WHERE expires <> 0 AND expires <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    "DELETE FROM vallum.claims WHERE ctid IN (SELECT ctid FROM vallum.claims
         WHERE expires <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
];

pub struct PgStore {
    pool: Pool,
    /// For the listening connection and migrations: no statement timeout.
    direct: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    pool_max: usize,
    key: Key,
    timeout: Duration,
    schema: OnceCell<()>,
    writes: AtomicU64,
    metrics: Arc<Metrics>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl PgStore {
    /// Builds the pool; connects lazily, on first use, and replaces closed connections by itself.
    pub fn new(
        settings: &PostgresSettings,
        shared_secret: &Key,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let tls = connect::tls(settings)?;
        let pooled = connect::client_config(settings, Some(settings.timeout))?;
        let manager = Manager::from_config(
            pooled,
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Waiting for a free connection gives up a little before the call does, so pool
        // exhaustion is reported as such.
        let pool = Pool::builder(manager)
            .max_size(settings.pool_max)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout.mul_f64(0.9)))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| format!("cannot build the PostgreSQL pool: {e}"))?;
        Ok(PgStore {
            pool,
            direct: connect::client_config(settings, None)?,
            tls,
            pool_max: settings.pool_max,
            key: shared_secret.derive("vallum session record"),
            timeout: settings.timeout,
            schema: OnceCell::new(),
            writes: AtomicU64::new(0),
            metrics,
        })
    }

    /// A connection outside the pool, without a statement timeout.
    async fn connect_direct(&self) -> Result<tokio_postgres::Client, String> {
        let (client, conn) = self
            .direct
            .connect(self.tls.clone())
            .await
            .map_err(|e| describe(&e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// Creates or migrates Vallum's tables once per process (every node may; they take turns).
    pub async fn ensure_schema(&self) -> Result<(), StoreError> {
        self.schema
            .get_or_try_init(|| async {
                let mut client = self.connect_direct().await.map_err(unavailable)?;
                let found = schema::migrate(&mut client)
                    .await
                    .map_err(|e| unavailable(describe(&e)))?;
                if found < schema::latest() {
                    tracing::info!(
                        from = found,
                        to = schema::latest(),
                        "PostgreSQL session tables migrated"
                    );
                }
                Ok(())
            })
            .await
            .copied()
    }

    /// A pooled connection. Asked for on a task of its own: if the call times out while a new
    /// connection is being made, the connection still joins the pool for the next call.
    async fn client(&self) -> Result<Object, StoreError> {
        let pool = self.pool.clone();
        let max = self.pool_max;
        match tokio::spawn(async move { pool.get().await }).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(deadpool_postgres::PoolError::Timeout(_))) => Err(StoreError::Unavailable(
                format!("all {max} PostgreSQL connections are busy (pool_max_conns)"),
            )),
            Ok(Err(deadpool_postgres::PoolError::Backend(e))) => Err(unavailable(describe(&e))),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Runs one store operation under the timeout, recording its latency and any error.
    async fn timed<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Object) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        super::bounded(&self.metrics, BACKEND, op, self.timeout, async {
            self.ensure_schema().await?;
            let client = self.client().await?;
            f(client).await.map_err(|e| unavailable(describe(&e)))
        })
        .await
    }

    /// A prepared (and per-connection cached) statement that changes rows; how many it changed.
    async fn execute(
        &self,
        op: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.timed(op, |c| async move {
            let st = c.prepare_cached(sql).await?;
            c.execute(&st, params).await
        })
        .await
    }

    /// A prepared (and per-connection cached) query's rows.
    async fn query(
        &self,
        op: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.timed(op, |c| async move {
            let st = c.prepare_cached(sql).await?;
            c.query(&st, params).await
        })
        .await
    }

    /// Every `SWEEP_EVERY` writes, a clean-up pass the write that triggers it does not wait for.
    fn sweep_now_and_then(&self) {
        if self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                if let Err(e) = sweep(&pool).await {
                    tracing::warn!(error = %e, "cannot delete expired sessions; will retry");
                }
            });
        }
    }

    /// Deletes a batch of expired rows now (the listener's maintenance tick).
    pub async fn sweep(&self) -> Result<u64, String> {
        sweep(&self.pool).await
    }
}

/// One bounded pass over each table; returns the rows deleted. In a transaction of its own with
/// a longer statement timeout than a request's: a large batch on a busy server must not be cut
/// off every time and never finish.
async fn sweep(pool: &Pool) -> Result<u64, String> {
    let mut c = pool.get().await.map_err(|e| e.to_string())?;
    let now = unix_now() as i64;
    let tx = c.transaction().await.map_err(|e| describe(&e))?;
    tx.batch_execute(SWEEP_TIMEOUT)
        .await
        .map_err(|e| describe(&e))?;
    let mut deleted = 0;
    for sql in SWEEPS {
        deleted += tx
            .execute(sql, &[&now, &SWEEP_BATCH])
            .await
            .map_err(|e| describe(&e))?;
    }
    tx.commit().await.map_err(|e| describe(&e))?;
    Ok(deleted)
}

/// The server's own message where there is one (tokio-postgres's `Display` says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("PostgreSQL: {e}: {cause}"),
            None => format!("PostgreSQL: {e}"),
        },
    }
}

#[async_trait::async_trait]
impl super::cache::Backing for PgStore {
    async fn get(&self, id: &str) -> Result<Option<Arc<UserSession>>, StoreError> {
        let now = unix_now() as i64;
        let rows = self.query("get", GET, &[&id, &now]).await?;
        Ok(rows
            .first()
            .and_then(|r| record::open_session(&self.key, id, r.get(0))))
    }

    async fn put(&self, session: &UserSession) -> Result<(), StoreError> {
        let data = record::encode(&self.key, session).map_err(StoreError::Unavailable)?;
        let user = super::redis::index_name(session);
        let (issued, expires) = (session.issued_at as i64, session.expires_at as i64);
        self.execute("put", PUT, &[&session.id, &user, &issued, &expires, &data])
            .await?;
        self.sweep_now_and_then();
        Ok(())
    }

    async fn replace(&self, session: &UserSession) -> Result<bool, StoreError> {
        let data = record::encode(&self.key, session).map_err(StoreError::Unavailable)?;
        let user = super::redis::index_name(session);
        let (issued, expires) = (session.issued_at as i64, session.expires_at as i64);
        let changed = self
            .execute(
                "replace",
                REPLACE,
                &[&session.id, &user, &issued, &expires, &data],
            )
            .await?;
        Ok(changed == 1)
    }

    /// Deletes the session and, in the same statement, tells every node to drop its copy.
    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.execute("delete", DELETE, &[&id]).await?;
        self.metrics.revocations.with_label_values(&["sent"]).inc();
        Ok(())
    }

    async fn claim_once(&self, key: &str, ttl: u64) -> Result<bool, StoreError> {
        let now = unix_now() as i64;
        let until = now + ttl.max(1) as i64;
        let changed = self.execute("claim", CLAIM, &[&key, &until, &now]).await?;
        Ok(changed == 1)
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<Arc<UserSession>>, StoreError> {
        let (name, now) = (user.to_ascii_lowercase(), unix_now() as i64);
        let rows = self.query("list", LIST, &[&name, &now]).await?;
        Ok(rows
            .iter()
            .filter_map(|r| record::open_session(&self.key, r.get(0), r.get(1)))
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", |c| async move { c.simple_query("SELECT 1").await })
            .await
            .map(|_| ())
    }

    async fn put_record(&self, key: &str, value: &[u8], ttl: u64) -> Result<(), StoreError> {
        let sealed = record::seal_record(&self.key, key, value);
        let expires = if ttl == 0 {
            0
        } else {
            unix_now() as i64 + ttl as i64
        };
        self.execute("put_record", PUT_RECORD, &[&key, &expires, &sealed])
            .await
            .map(|_| ())
    }

    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = unix_now() as i64;
        let rows = self.query("get_record", GET_RECORD, &[&key, &now]).await?;
        Ok(rows
            .first()
            .and_then(|r| record::open_record(&self.key, key, r.get(0))))
    }

    async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        self.execute("delete_record", DELETE_RECORD, &[&key])
            .await
            .map(|_| ())
    }

    fn name(&self) -> &'static str {
        BACKEND
    }
}
