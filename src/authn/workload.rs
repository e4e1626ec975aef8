//! Workload identities on a route with `bearer_token_format: jwt`: the caller is who its
//! `Authorization: Bearer` JWT says, once one of the route's `identity_providers` is shown to
//! have signed it. Nothing is stored: the identity lives in memory for the token's remaining
//! life (at most five minutes), and its user id is `provider/sub`, so one issuer's subjects can
//! never pass for another's or for a person's.

use super::idp_bearer::{bearer_id, digest};
use super::*;
use crate::config::auth::BearerFormat;
use crate::routes::route::Route;
use serde_json::Value;
use std::time::Duration;

const MAX_CACHE: Duration = Duration::from_secs(300);

/// The caller a bearer JWT proves on `route`. A request that also carries a session cookie is
/// refused (which credential speaks is not guessed), and so is a token that does not verify:
/// a machine is never sent to sign in.
pub async fn identify(
    auth: Option<&Auth<'_>>,
    state: &Arc<AuthState>,
    headers: &http::HeaderMap,
    route: &Route,
    token: &str,
) -> Result<Arc<UserSession>, Refusal> {
    if let Some(a) = auth {
        let cookies = crate::session::cookie::header(headers);
        if cookies.is_some_and(|c| has_session_cookie(&c, &a.cookie.name)) {
            tracing::info!(route = %route.id, "refused: a bearer token and a session cookie on one request");
            return Err(Refusal::AmbiguousCredentials);
        }
    }
    let names: Vec<String> = route
        .workload_issuers
        .iter()
        .map(|i| i.name.clone())
        .collect();
    let key = digest(token, BearerFormat::Jwt, &names, "");
    if let Some(s) = state.bearer_cache.get(&key) {
        return Ok(s);
    }
    let (issuer, claims) = match state
        .workload_keys
        .verify(token, &route.workload_issuers)
        .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(route = %route.id, reason = %e, "workload bearer token refused");
            return Err(Refusal::BearerRejected);
        }
    };
    let now = unix_now();
    let str_claim = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
    let sub = str_claim("sub").unwrap_or_default();
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
    let ttl = MAX_CACHE.min(Duration::from_secs(exp.saturating_sub(now)));
    let session = Arc::new(UserSession {
        id: bearer_id(&key),
        user_id: format!("{}/{sub}", issuer.name),
        email: str_claim("email"),
        name: str_claim("name"),
        groups: crate::identity::groups_from(&claims, "groups"),
        claims: claims.into(),
        id_token: String::new(),
        access_token: String::new(),
        refresh_token: None,
        access_expires_at: Some(exp),
        issued_at: now,
        expires_at: exp,
        claims_refreshed_at: now,
        idp: String::new(),
        devices: Vec::new(),
    });
    tracing::debug!(provider = %issuer.name, user = %session.user_id, "workload identity verified");
    state.bearer_cache.put(key, &session, ttl);
    Ok(session)
}

/// Whether a `Cookie` header holds a session cookie of any sign-in provider: `name`, or
/// `name_<key>` (a route's own provider; `route_idp::key_of` is 12 hex digits).
fn has_session_cookie(header: &str, name: &str) -> bool {
    header.split(';').any(|kv| {
        let k = kv.split_once('=').map_or(kv, |(k, _)| k).trim();
        match k.strip_prefix(name) {
            Some("") => true,
            Some(rest) => rest
                .strip_prefix('_')
                .is_some_and(|key| key.len() == 12 && key.bytes().all(|b| b.is_ascii_hexdigit())),
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_cookies_of_every_provider_count() {
        let has = |h: &str| super::has_session_cookie(h, "_pomerium");
        assert!(has("a=1; _pomerium=x"));
        assert!(has("_pomerium_0123456789ab=x"));
        assert!(!has("_pomerium_csrf_abcdefgh=x; other=1"));
        assert!(!has("_pomeriumx=1; _pomerium_authenticate=y"));
    }
}
