//! `databroker_storage_type: file`: sessions in a SQLite database (WAL mode) in a local directory,
//! so they survive restarts and binary upgrades on one node. WAL lets the old and the new process
//! of a graceful upgrade read and write the same file at once. The gateway holds it behind the
//! same cache as Redis (`cache.rs`), so a sign-out in one process holds in the other within the
//! cache's trust window. Sessions are sealed as in Redis (`record.rs`): the file holds no
//! readable token.

use super::{record, SessionStore, StoreError, UserSession};
use crate::clock::unix_now;
use crate::crypto::Key;
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Expired rows deleted per clean-up pass (a pass runs in the background every `SWEEP_EVERY`
/// writes).
const SWEEP_BATCH: u32 = 500;
const SWEEP_EVERY: u64 = 256;
/// How long a write waits for the other process's write to finish.
const BUSY_MS: u64 = 5_000;

pub struct FileStore {
    conn: Arc<Mutex<Connection>>,
    key: Key,
    path: PathBuf,
    writes: AtomicU64,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl FileStore {
    /// Opens (creating) `dir/sessions.db`. A directory or file that cannot be used is an error
    /// here, at startup, with the path and the reason.
    pub fn open(dir: &Path, key: Key) -> Result<FileStore, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("sessions.db");
        let conn =
            Connection::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_MS))
            .and_then(|_| {
                conn.execute_batch(
                    "PRAGMA journal_mode=WAL;
                     PRAGMA synchronous=NORMAL;
                     CREATE TABLE IF NOT EXISTS sessions (
                         id TEXT PRIMARY KEY, user TEXT NOT NULL, issued INTEGER NOT NULL,
                         expires INTEGER NOT NULL, data BLOB NOT NULL);
                     CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user);
                     CREATE INDEX IF NOT EXISTS sessions_expires ON sessions(expires);
                     CREATE TABLE IF NOT EXISTS records (
                         key TEXT PRIMARY KEY, expires INTEGER NOT NULL, data BLOB NOT NULL);
                     CREATE TABLE IF NOT EXISTS claims (
                         key TEXT PRIMARY KEY, expires INTEGER NOT NULL);",
                )
            })
            .map_err(|e| format!("cannot use {}: {e}", path.display()))?;
        Ok(FileStore {
            conn: Arc::new(Mutex::new(conn)),
            key,
            path,
            writes: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection off the async threads.
    /// A session as its table row: id, user index name, issued, expires, sealed record.
    fn row(
        &self,
        session: &UserSession,
    ) -> Result<(String, String, i64, i64, Vec<u8>), StoreError> {
        let data = record::encode(&self.key, session).map_err(unavailable)?;
        Ok((
            session.id.clone(),
            super::redis::index_name(session),
            session.issued_at as i64,
            session.expires_at as i64,
            data,
        ))
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let c = conn
                .lock()
                .map_err(|_| unavailable("store lock poisoned"))?;
            f(&c).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    /// Every `SWEEP_EVERY` writes, deletes a bounded batch of expired rows.
    fn sweep_due(&self) -> bool {
        self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1
    }
}

fn sweep(c: &Connection, now: i64) -> rusqlite::Result<()> {
    for table in ["sessions", "records", "claims"] {
        let extra = if table == "records" {
            " AND expires != 0"
        } else {
            ""
        };
        c.execute(
            &format!("DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE expires <= ?1{extra} LIMIT {SWEEP_BATCH})"),
            params![now],
        )?;
    }
    Ok(())
}

#[async_trait]
impl SessionStore for FileStore {
    async fn get(&self, id: &str) -> Result<Option<Arc<UserSession>>, StoreError> {
        let (key, now) = (id.to_string(), unix_now() as i64);
        let raw = self
            .with(move |c| {
                c.query_row(
                    "SELECT data FROM sessions WHERE id = ?1 AND expires > ?2",
                    params![key, now],
                    |r| r.get::<_, Vec<u8>>(0),
                )
                .optional()
            })
            .await?;
        Ok(raw.and_then(|r| record::open_session(&self.key, id, &r)))
    }

    async fn put(&self, session: UserSession) -> Result<(), StoreError> {
        let (id, user, issued, expires, data) = self.row(&session)?;
        let sweep_now = self.sweep_due().then(|| unix_now() as i64);
        self.with(move |c| {
            c.execute(
                "INSERT INTO sessions (id, user, issued, expires, data) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET user = ?2, issued = ?3, expires = ?4, data = ?5",
                params![id, user, issued, expires, data],
            )
            .map(|_| ())
        })
        .await?;
        // Clean-up in the background: the write that triggers it does not wait for it.
        if let Some(now) = sweep_now {
            let conn = Arc::clone(&self.conn);
            tokio::task::spawn_blocking(move || {
                if let Ok(c) = conn.lock() {
                    if let Err(e) = sweep(&c, now) {
                        tracing::warn!(error = %e, "cannot delete expired sessions; will retry");
                    }
                }
            });
        }
        Ok(())
    }

    async fn replace(&self, session: UserSession) -> Result<bool, StoreError> {
        let (id, user, issued, expires, data) = self.row(&session)?;
        self.with(move |c| {
            c.execute(
                "UPDATE sessions SET user = ?2, issued = ?3, expires = ?4, data = ?5 WHERE id = ?1",
                params![id, user, issued, expires, data],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            c.execute("DELETE FROM sessions WHERE id = ?1", params![id])
                .map(|_| ())
        })
        .await
    }

    async fn claim_once(&self, key: &str, ttl: u64) -> Result<bool, StoreError> {
        let (key, now) = (key.to_string(), unix_now() as i64);
        let until = now + ttl as i64;
        self.with(move |c| {
            // One statement: a claim that has expired is taken over, a live one is not.
            let changed = c.execute(
                "INSERT INTO claims (key, expires) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET expires = ?2 WHERE claims.expires <= ?3",
                params![key, until, now],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<Arc<UserSession>>, StoreError> {
        let (name, now) = (user.to_ascii_lowercase(), unix_now() as i64);
        let rows = self
            .with(move |c| {
                let mut st = c.prepare(
                    "SELECT id, data FROM sessions WHERE user = ?1 AND expires > ?2 ORDER BY issued, id",
                )?;
                let rows = st
                    .query_map(params![name, now], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>();
                rows
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, raw)| record::open_session(&self.key, &id, &raw))
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn put_record(&self, key: &str, value: Vec<u8>, ttl: u64) -> Result<(), StoreError> {
        let key = key.to_string();
        let expires = if ttl == 0 {
            0
        } else {
            unix_now() as i64 + ttl as i64
        };
        self.with(move |c| {
            c.execute(
                "INSERT INTO records (key, expires, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET expires = ?2, data = ?3",
                params![key, expires, value],
            )
            .map(|_| ())
        })
        .await
    }

    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (key, now) = (key.to_string(), unix_now() as i64);
        self.with(move |c| {
            c.query_row(
                "SELECT data FROM records WHERE key = ?1 AND (expires = 0 OR expires > ?2)",
                params![key, now],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
        })
        .await
    }

    async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.with(move |c| {
            c.execute("DELETE FROM records WHERE key = ?1", params![key])
                .map(|_| ())
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "file"
    }
}

#[async_trait]
impl super::cache::Backing for FileStore {
    async fn get(&self, id: &str) -> Result<Option<Arc<UserSession>>, StoreError> {
        SessionStore::get(self, id).await
    }
    async fn put(&self, s: &UserSession) -> Result<(), StoreError> {
        SessionStore::put(self, s.clone()).await
    }
    async fn replace(&self, s: &UserSession) -> Result<bool, StoreError> {
        SessionStore::replace(self, s.clone()).await
    }
    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        SessionStore::delete(self, id).await
    }
    async fn claim_once(&self, key: &str, ttl: u64) -> Result<bool, StoreError> {
        SessionStore::claim_once(self, key, ttl).await
    }
    async fn sessions_of(&self, user: &str) -> Result<Vec<Arc<UserSession>>, StoreError> {
        SessionStore::sessions_of(self, user).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        SessionStore::ping(self).await
    }
    async fn put_record(&self, key: &str, value: &[u8], ttl: u64) -> Result<(), StoreError> {
        SessionStore::put_record(self, key, value.to_vec(), ttl).await
    }
    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        SessionStore::get_record(self, key).await
    }
    async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        SessionStore::delete_record(self, key).await
    }
    fn name(&self) -> &'static str {
        "file"
    }
}
