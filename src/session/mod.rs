//! Sessions: the record a sign-in creates, the store that holds it, and the sealed cookie handle
//! that points to it. The cookie carries only an id and an expiry; everything else lives in the
//! store, so deleting a session there ends it for every copy of the cookie at once.

pub mod cache;
pub mod cookie;
pub mod file;
pub mod memory;
pub mod postgres;
pub mod record;
pub mod redis;
pub mod revocations;

use crate::clock::unix_now;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// A signed-in user's session.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct UserSession {
    pub id: String,
    /// The IdP's `sub`.
    pub user_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// ID token and userinfo claims, merged.
    pub claims: crate::policy::Claims,
    pub id_token: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// When the access token expires (unix seconds), if the IdP said.
    pub access_expires_at: Option<u64>,
    pub issued_at: u64,
    /// Hard cap: `cookie_expire` after sign-in; refreshes never extend it.
    pub expires_at: u64,
    /// When claims were last read from the IdP.
    pub claims_refreshed_at: u64,
    /// WebAuthn devices the user proved during this session (the `device` criterion).
    #[serde(default)]
    pub devices: Vec<ProvenDevice>,
    /// The sign-in provider's key (`config::route_idp`); empty: the global provider (and every
    /// session made before routes could have their own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idp: String,
}

/// A device proven with a WebAuthn assertion (or at enrolment) in this session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProvenDevice {
    /// Credential id, base64url.
    pub id: String,
    /// The device type it was enrolled as.
    pub type_id: String,
    pub approved: bool,
}

impl std::fmt::Debug for UserSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSession")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .field("groups", &self.groups)
            .field("expires_at", &self.expires_at)
            .field("tokens", &"<redacted>")
            .finish()
    }
}

impl UserSession {
    /// Who this session is to a policy; `email` is the address its rules may see (verified, or
    /// allowed unverified by the route).
    pub fn subject<'a>(&'a self, email: Option<&'a str>) -> crate::policy::Subject<'a> {
        crate::policy::Subject {
            user_id: &self.user_id,
            email,
            groups: &self.groups,
            name: self.name.as_deref(),
            claims: &self.claims,
        }
    }

    /// The devices proven in this session, as a policy reads them.
    pub fn proven_devices(&self) -> Vec<crate::policy::ProvenDevice<'_>> {
        self.devices
            .iter()
            .map(|d| crate::policy::ProvenDevice {
                id: &d.id,
                type_id: &d.type_id,
                approved: d.approved,
            })
            .collect()
    }

    /// Drops the claims the session already holds as fields (`sub`, `email`, `name`, `groups`,
    /// where they say the same): every session in memory and in the store carried them twice.
    /// Readers of a claim by name fall back to the field (`policy::claim_values`, the identity
    /// headers, `/.pomerium/user`).
    pub fn compact_claims(&mut self) {
        let same = |v: &serde_json::Value, field: Option<&str>| {
            v.as_str().is_some_and(|x| Some(x) == field)
        };
        let groups_same = |v: &serde_json::Value| {
            v.as_array().is_some_and(|a| {
                a.len() == self.groups.len()
                    && a.iter()
                        .zip(&self.groups)
                        .all(|(x, g)| x.as_str() == Some(g.as_str()))
            })
        };
        let verified = self.claims.get("email_verified") == Some(&serde_json::Value::Bool(true));
        let drop: Vec<&str> = [
            (
                "sub",
                self.claims
                    .get("sub")
                    .is_some_and(|v| same(v, Some(&self.user_id))),
            ),
            // Only a verified address: an unverified one stays a claim `claim/email` can read,
            // while the field a policy sees as `email` would hide it.
            (
                "email",
                verified
                    && self
                        .claims
                        .get("email")
                        .is_some_and(|v| same(v, self.email.as_deref())),
            ),
            (
                "name",
                self.claims
                    .get("name")
                    .is_some_and(|v| same(v, self.name.as_deref())),
            ),
            ("groups", self.claims.get("groups").is_some_and(groups_same)),
        ]
        .into_iter()
        .filter_map(|(k, dup)| dup.then_some(k))
        .collect();
        for k in drop {
            self.claims.remove(k);
        }
    }

    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires_at
    }

    pub fn ttl(&self, now: u64) -> Duration {
        Duration::from_secs(self.expires_at.saturating_sub(now))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session store is full ({0} sessions)")]
    Full(usize),
}

/// Where sessions live. Implementations must treat an expired session as absent.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn get(&self, id: &str) -> Result<Option<Arc<UserSession>>, StoreError>;
    async fn put(&self, session: UserSession) -> Result<(), StoreError>;
    /// Writes a new version of a session only if it is still stored; false when it has ended
    /// meanwhile. Every update of an existing session (refresh, a proven device) goes through
    /// here, so a refresh that crossed a sign-out cannot bring the session back.
    async fn replace(&self, session: UserSession) -> Result<bool, StoreError>;
    /// Ends a session everywhere (a shared store also tells every node's cache).
    async fn delete(&self, id: &str) -> Result<(), StoreError>;
    /// True the first time `key` is claimed within `ttl` seconds, fleet-wide for a shared store:
    /// single-use sign-in values and refresh leases.
    async fn claim_once(&self, key: &str, ttl: u64) -> Result<bool, StoreError>;
    /// The live sessions of a user (email, or IdP subject for users without one).
    async fn sessions_of(&self, user: &str) -> Result<Vec<Arc<UserSession>>, StoreError>;
    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Small records beside sessions (WebAuthn devices and ceremonies), shared by the fleet like
    /// sessions are. `ttl` in seconds; 0 keeps the record until it is deleted.
    async fn put_record(&self, key: &str, value: Vec<u8>, ttl: u64) -> Result<(), StoreError>;
    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn delete_record(&self, key: &str) -> Result<(), StoreError>;
    fn backend(&self) -> &'static str;
}

/// Applies `change` to the session as the store holds it now, not to a copy read earlier: a
/// refresh waits an IdP round trip, and a device proven meanwhile (or a refresh finishing while a
/// device is proven) must not be overwritten by the other's stale copy. Through a local cache the
/// copy read is this node's latest; the write itself is `replace`, so an ended session stays
/// ended. False when the session is gone.
pub async fn update(
    store: &dyn SessionStore,
    id: &str,
    change: impl FnOnce(&mut UserSession),
) -> Result<bool, StoreError> {
    let Some(current) = store.get(id).await? else {
        return Ok(false);
    };
    let mut next = (*current).clone();
    change(&mut next);
    store.replace(next).await
}

/// One call to a shared store (Redis, PostgreSQL), bounded by `timeout` and recorded: its latency
/// and, when it fails or times out, an error, both by backend and operation.
pub(crate) async fn bounded<T>(
    metrics: &crate::telemetry::metrics::Metrics,
    backend: &'static str,
    op: &'static str,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    use tracing::Instrument;
    let start = std::time::Instant::now();
    let span = if crate::telemetry::traces::in_request() {
        crate::trace_span!(
            "session_store",
            otel.kind = "client",
            db.system.name = backend,
            db.operation.name = op,
            otel.status_code = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    let result = tokio::time::timeout(timeout, call.instrument(span.clone()))
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no answer within {timeout:?}"
            )))
        });
    metrics
        .store_duration
        .with_label_values(&[backend, op])
        .observe(start.elapsed().as_secs_f64());
    if result.is_err() {
        metrics.store_errors.with_label_values(&[backend, op]).inc();
        span.record("otel.status_code", "ERROR");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::UserSession;
    use serde_json::json;

    fn session(claims: serde_json::Value) -> UserSession {
        UserSession {
            id: "s".into(),
            user_id: "alice-id".into(),
            email: Some("alice@example.com".into()),
            name: Some("Alice".into()),
            groups: vec!["eng".into(), "ops".into()],
            claims: claims.as_object().cloned().unwrap_or_default().into(),
            id_token: String::new(),
            access_token: String::new(),
            refresh_token: None,
            access_expires_at: None,
            issued_at: 0,
            expires_at: 1,
            claims_refreshed_at: 0,
            devices: Vec::new(),
            idp: String::new(),
        }
    }

    #[test]
    fn claims_the_fields_hold_are_kept_once_and_read_back_the_same() {
        let mut s = session(json!({
            "sub": "alice-id", "email": "alice@example.com", "email_verified": true,
            "name": "Alice", "groups": ["eng", "ops"], "department": "R&D",
        }));
        s.compact_claims();
        let kept: Vec<&str> = s.claims.keys().collect();
        assert_eq!(kept, ["department", "email_verified"]);
        let subject = s.subject(s.email.as_deref());
        for (claim, want) in [
            ("sub", vec!["alice-id"]),
            ("email", vec!["alice@example.com"]),
            ("name", vec!["Alice"]),
            ("groups", vec!["eng", "ops"]),
        ] {
            assert_eq!(
                crate::policy::claim_values_for_test(&subject, claim),
                want,
                "{claim}"
            );
        }
    }

    #[test]
    fn a_stored_session_fits_a_320_byte_allocation() {
        // An `Arc<UserSession>` is the session's largest allocation; mimalloc's size classes go
        // from 320 to 384 bytes, so one more field here costs 64 bytes for every session.
        let size = std::mem::size_of::<UserSession>() + 2 * std::mem::size_of::<usize>();
        assert!(size <= 320, "Arc<UserSession> is {size} bytes");
    }

    #[tokio::test]
    async fn an_update_applies_to_the_stored_session_not_to_an_earlier_copy() {
        use super::{update, ProvenDevice, SessionStore};
        let store = super::memory::MemoryStore::new(10);
        let mut s = session(json!({}));
        s.expires_at = crate::clock::unix_now() + 3600;
        store.put(s.clone()).await.unwrap();
        // A refresh read `s` before a device was proven, and finishes after.
        let device = ProvenDevice {
            id: "d1".into(),
            type_id: "any".into(),
            approved: true,
        };
        assert!(update(&store, "s", |s| s.devices.push(device))
            .await
            .unwrap());
        let renew = |s: &mut UserSession| s.access_token = "renewed".into();
        assert!(update(&store, "s", renew).await.unwrap());
        let now = store.get("s").await.unwrap().unwrap();
        assert_eq!(now.access_token, "renewed");
        assert_eq!(now.devices.len(), 1, "the proof survives the refresh");
        // An ended session is not written back.
        store.delete("s").await.unwrap();
        assert!(!update(&store, "s", |_| {}).await.unwrap());
        assert!(store.get("s").await.unwrap().is_none());
    }

    #[test]
    fn claims_that_differ_or_are_unverified_stay() {
        let mut s = session(json!({
            "sub": "other", "email": "alice@example.com", "email_verified": false,
            "name": "Alice A.", "groups": ["eng"],
        }));
        s.compact_claims();
        assert_eq!(s.claims.len(), 5, "{:?}", s.claims);
    }
}
