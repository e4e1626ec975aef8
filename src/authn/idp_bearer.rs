//! Machine-to-machine access with the IdP's own tokens (`bearer_token_format`): a service that
//! holds an access token (e.g. from the client-credentials grant) or an ID token from the same
//! IdP presents it as `Authorization: Bearer …`; Vallum verifies it and evaluates the route's
//! policy on its claims. Nothing is stored: the verified identity is cached in memory for the
//! token's remaining life (at most five minutes; one minute for opaque tokens, which only the
//! IdP's userinfo endpoint can vouch for).

use super::*;
use crate::config::auth::BearerFormat;
use dashmap::DashMap;
use serde_json::Value;
use std::time::{Duration, Instant};

const MAX_CACHE: Duration = Duration::from_secs(300);
const OPAQUE_CACHE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct BearerCache {
    entries: DashMap<[u8; 32], (Arc<UserSession>, Instant)>,
}

impl BearerCache {
    /// The identity a token (by digest) proved, while its cache entry lasts.
    pub(super) fn get(&self, key: &[u8; 32]) -> Option<Arc<UserSession>> {
        let e = self.entries.get(key)?;
        (e.1 > Instant::now()).then(|| Arc::clone(&e.0))
    }

    /// Remembers a proven identity for `ttl`; past 100,000 entries the expired ones go first.
    pub(super) fn put(&self, key: [u8; 32], session: &Arc<UserSession>, ttl: Duration) {
        if self.entries.len() > 100_000 {
            let t = Instant::now();
            self.entries.retain(|_, e| e.1 > t);
        }
        self.entries
            .insert(key, (Arc::clone(session), Instant::now() + ttl));
    }
}

/// A short, stable, non-secret id for a bearer identity (its sessions are never stored).
pub(super) fn bearer_id(key: &[u8; 32]) -> String {
    let hex: String = key.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("bearer-{hex}")
}

pub(super) fn digest(
    token: &str,
    format: BearerFormat,
    audiences: &[String],
    idp_key: &str,
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{format:?}|{}|{idp_key}|", audiences.join(",")).as_bytes());
    h.update(token.as_bytes());
    h.finalize().into()
}

/// The `Authorization: Bearer` token, unless it is a Vallum token (`Bearer Pomerium-…`).
pub fn idp_token(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let t = v.strip_prefix("Bearer ")?.trim();
    (!t.starts_with("Pomerium-") && !t.is_empty()).then_some(t)
}

/// The identity an IdP token proves, or `None` if it proves nothing (logged with the reason).
pub async fn session_for_idp_token(
    state: &Arc<AuthState>,
    token: &str,
    route: &crate::routes::route::Route,
    idp_key: &str,
) -> Option<Arc<UserSession>> {
    let (format, audiences) = (route.bearer, route.access_token_audiences.as_slice());
    if matches!(format, BearerFormat::Default | BearerFormat::Jwt) {
        return None;
    }
    let key = digest(token, format, audiences, idp_key);
    if let Some(s) = state.bearer_cache.get(&key) {
        return Some(s);
    }
    let idp = state.idp.get(idp_key)?;
    let jwt = token.split('.').count() == 3;
    let verified = match format {
        BearerFormat::IdpIdentityToken => {
            idp.verify_jwt(token, std::slice::from_ref(&idp.settings().client_id))
                .await
        }
        BearerFormat::IdpAccessToken if jwt => idp.verify_jwt(token, audiences).await,
        BearerFormat::IdpAccessToken => idp.userinfo_claims(token).await,
        BearerFormat::Default | BearerFormat::Jwt => return None,
    };
    let claims = match verified.and_then(|c| {
        crate::identity::check_claim_types(&c, &idp.settings().groups_claim).map(|()| c)
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(reason = %e, format = ?format, "IdP bearer token refused");
            return None;
        }
    };
    let now = unix_now();
    let str_claim = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
    let exp = claims.get("exp").and_then(Value::as_u64);
    let groups = crate::identity::groups_from(&claims, &idp.settings().groups_claim);
    let ttl = if jwt { MAX_CACHE } else { OPAQUE_CACHE };
    let ttl = match exp {
        Some(e) => ttl.min(Duration::from_secs(e.saturating_sub(now))),
        None => ttl,
    };
    let session = Arc::new(UserSession {
        id: bearer_id(&key),
        user_id: str_claim("sub")?,
        email: str_claim("email"),
        name: str_claim("name"),
        groups,
        claims: claims.clone().into(),
        id_token: String::new(),
        access_token: String::new(),
        refresh_token: None,
        access_expires_at: exp,
        issued_at: now,
        expires_at: exp.unwrap_or(now + ttl.as_secs()),
        claims_refreshed_at: now,
        idp: idp_key.to_string(),
        devices: Vec::new(),
    });
    state.bearer_cache.put(key, &session, ttl);
    Some(session)
}
