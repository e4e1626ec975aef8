//! What `vallum sessions` does: an operator's view of the shared store, from any machine that
//! has the config. Revocations go through the store like a sign-out, so every node drops the
//! session from its cache at once.

use crate::clock::unix_now;
use crate::config::storage::Storage;
use crate::config::Settings;
use crate::session::cache::{Backing, CachedStore};
use crate::session::postgres::PgStore;
use crate::session::redis::RedisStore;
use crate::session::{SessionStore, StoreError, UserSession};
use crate::telemetry::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("this config has no sign-in settings (authenticate_service_url, idp_*)")]
    NoAuth,
    #[error(
        "sessions are in the memory store, inside the running gateway; `vallum sessions` needs \
         databroker_storage_type: file, redis or postgres"
    )]
    MemoryStore,
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no session {0}")]
    NoSuchSession(String),
}

/// How long a command waits for a shared store: a person is waiting, not a request.
const PATIENCE: Duration = Duration::from_secs(5);

/// A shared store read straight through: an operator's command sees what is there now.
fn uncached<S: Backing>(inner: S, metrics: Arc<Metrics>) -> Arc<dyn SessionStore> {
    Arc::new(CachedStore::new(
        inner,
        Duration::ZERO,
        Duration::ZERO,
        metrics,
    ))
}

/// The config's store, as an operator reaches it: Redis or PostgreSQL with a timeout meant for a
/// person (and no local cache), or the local database the gateway on this machine uses.
pub fn connect(settings: &Settings) -> Result<Arc<dyn SessionStore>, AdminError> {
    let auth = settings.auth.as_ref().ok_or(AdminError::NoAuth)?;
    match &auth.storage {
        Storage::Redis(redis) => {
            let mut redis = redis.clone();
            redis.timeout = redis.timeout.max(PATIENCE);
            let metrics = Metrics::new().map_err(|e| AdminError::Setup(e.to_string()))?;
            let inner = RedisStore::new(&redis, &auth.shared_secret, Arc::clone(&metrics))
                .map_err(AdminError::Setup)?;
            Ok(uncached(inner, metrics))
        }
        Storage::Postgres(pg) => {
            let mut pg = pg.clone();
            pg.timeout = pg.timeout.max(PATIENCE);
            let metrics = Metrics::new().map_err(|e| AdminError::Setup(e.to_string()))?;
            let inner = PgStore::new(&pg, &auth.shared_secret, Arc::clone(&metrics))
                .map_err(AdminError::Setup)?;
            Ok(uncached(inner, metrics))
        }
        Storage::File(dir) => {
            crate::session::file::FileStore::open(&dir.dir, auth.shared_secret.clone())
                .map(|s| Arc::new(s) as Arc<dyn SessionStore>)
                .map_err(AdminError::Setup)
        }
        Storage::Memory => Err(AdminError::MemoryStore),
    }
}

/// Ends one session, or every session of a user; returns how many ended.
pub async fn revoke(
    store: &dyn SessionStore,
    user: Option<&str>,
    session: Option<&str>,
) -> Result<usize, AdminError> {
    let ids: Vec<String> = match (user, session) {
        (_, Some(id)) => {
            if store.get(id).await?.is_none() {
                return Err(AdminError::NoSuchSession(id.to_string()));
            }
            vec![id.to_string()]
        }
        (Some(user), None) => store
            .sessions_of(user)
            .await?
            .iter()
            .map(|s| s.id.clone())
            .collect(),
        (None, None) => Vec::new(),
    };
    for id in &ids {
        store.delete(id).await?;
        tracing::info!(session_id = %id, "session revoked by an operator");
    }
    Ok(ids.len())
}

/// One line per session: a table row, or JSON. Never the tokens.
pub fn describe(s: &UserSession, json: bool) -> String {
    let now = unix_now();
    if json {
        serde_json::json!({
            "session_id": s.id,
            "user": s.user_id,
            "email": s.email,
            "groups": s.groups,
            "issued_at": s.issued_at,
            "expires_at": s.expires_at,
        })
        .to_string()
    } else {
        format!(
            "{}  {}  signed in {}s ago  expires in {}s",
            s.id,
            s.email.as_deref().unwrap_or(&s.user_id),
            now.saturating_sub(s.issued_at),
            s.expires_at.saturating_sub(now)
        )
    }
}

/// What `vallum devices` changes on one enrolled device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChange {
    Approve,
    Revoke,
    Remove,
}

/// A user's enrolled WebAuthn devices. `user`: an email or IdP subject, as for sessions; the
/// devices are keyed by subject, found through the user's live sessions when given an email.
pub async fn devices_of(
    store: &dyn SessionStore,
    user: &str,
) -> Result<(String, Vec<crate::authn::webauthn::EnrolledDevice>), AdminError> {
    let sessions = store.sessions_of(user).await?;
    let subject = sessions
        .first()
        .map(|s| s.user_id.clone())
        .unwrap_or_else(|| user.to_string());
    let devices = store
        .get_record(&format!("devices:{subject}"))
        .await?
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .unwrap_or_default();
    Ok((subject, devices))
}

#[derive(Debug, thiserror::Error)]
#[error("no device {0} for this user")]
pub struct NoSuchDevice(pub String);

/// Approves, un-approves or removes a device, and updates the proofs in the user's live sessions
/// so the change holds from the next request on.
pub async fn change_device(
    store: &dyn SessionStore,
    user: &str,
    device: &str,
    change: DeviceChange,
) -> Result<(), AdminError> {
    let (subject, mut devices) = devices_of(store, user).await?;
    let Some(pos) = devices.iter().position(|d| d.id == device) else {
        return Err(AdminError::Setup(
            NoSuchDevice(device.to_string()).to_string(),
        ));
    };
    match change {
        DeviceChange::Approve => devices[pos].approved = true,
        DeviceChange::Revoke => devices[pos].approved = false,
        DeviceChange::Remove => {
            devices.remove(pos);
        }
    }
    let key = format!("devices:{subject}");
    if devices.is_empty() {
        store.delete_record(&key).await?;
    } else {
        let raw = serde_json::to_vec(&devices).map_err(|e| AdminError::Setup(e.to_string()))?;
        store.put_record(&key, raw, 0).await?;
    }
    for s in store.sessions_of(user).await? {
        if !s.devices.iter().any(|d| d.id == device) {
            continue;
        }
        let mut s = (*s).clone();
        match change {
            DeviceChange::Remove => s.devices.retain(|d| d.id != device),
            DeviceChange::Approve | DeviceChange::Revoke => {
                for d in s.devices.iter_mut().filter(|d| d.id == device) {
                    d.approved = change == DeviceChange::Approve;
                }
            }
        }
        store.put(s).await?;
    }
    tracing::info!(user = %subject, device, ?change, "device changed by an operator");
    Ok(())
}
