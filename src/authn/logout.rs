//! Logouts the identity provider starts, so disabling an account there ends its sessions here:
//! OpenID Connect Back-Channel Logout 1.0 (a signed `logout_token` POSTed server to server) and
//! Front-Channel Logout 1.0 (a GET from the IdP's logout page, in an iframe, with `iss` and
//! `sid`). Both find sessions by what the IdP knows — its session id (the ID token's `sid`) or
//! the subject — through two records written at sign-in, and end them through the store, so
//! every node of a fleet drops them as it does for a sign-out.

use super::*;
use crate::session::redis::index_name;
use serde_json::{Map, Value};

pub const BACKCHANNEL_PATH: &str = "/.pomerium/backchannel_logout";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// How old a logout token may be (its `iat`); also how long its `jti` is remembered.
const MAX_TOKEN_AGE: u64 = 600;
/// Clock skew tolerated on `iat` in the future.
const SKEW: u64 = 60;

fn sid_key(sid: &str) -> String {
    format!("idp-sid:{sid}")
}

fn sub_key(sub: &str) -> String {
    format!("idp-sub:{sub}")
}

/// The IdP session a session came from (the ID token's `sid`), if the IdP said.
pub fn idp_sid(s: &UserSession) -> Option<&str> {
    s.claims.get("sid").and_then(Value::as_str)
}

/// At sign-in: remember under which user index this IdP session's and subject's sessions are
/// listed, for as long as the session lives.
pub(super) async fn remember(state: &AuthState, s: &UserSession) -> Result<(), StoreError> {
    let ttl = s.ttl(unix_now()).as_secs().max(1);
    let index = index_name(s).into_bytes();
    if let Some(sid) = idp_sid(s) {
        state
            .store
            .put_record(&sid_key(sid), index.clone(), ttl)
            .await?;
    }
    state
        .store
        .put_record(&sub_key(&s.user_id), index, ttl)
        .await
}

/// Ends the sessions of IdP session `sid` (and subject `sub`, when both are given), or every
/// session of `sub`; returns how many ended.
pub(super) async fn end_sessions(
    state: &AuthState,
    sub: Option<&str>,
    sid: Option<&str>,
    how: &'static str,
) -> Result<usize, StoreError> {
    let key = match (sid, sub) {
        (Some(sid), _) => sid_key(sid),
        (None, Some(sub)) => sub_key(sub),
        (None, None) => return Ok(0),
    };
    let Some(index) = state.store.get_record(&key).await? else {
        return Ok(0);
    };
    let index = String::from_utf8_lossy(&index);
    let mut ended = 0;
    for s in state.store.sessions_of(&index).await? {
        let same_sid = sid.is_none_or(|sid| idp_sid(&s) == Some(sid));
        let same_sub = sub.is_none_or(|sub| s.user_id == sub);
        if same_sid && same_sub {
            state.store.delete(&s.id).await?;
            tracing::info!(user = %s.user_id, session_id = %s.id, how, "session ended by the identity provider");
            state.metrics.sessions_ended.with_label_values(&[how]).inc();
            ended += 1;
        }
    }
    Ok(ended)
}

/// Why a logout token is refused (the answer's `error_description`; never ends a session).
fn check_logout_claims(
    c: &Map<String, Value>,
    now: u64,
) -> Result<(Option<&str>, Option<&str>, &str), String> {
    let event = c
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(EVENT));
    if !event.is_some_and(Value::is_object) {
        return Err(format!("the events claim must hold {EVENT}"));
    }
    if c.contains_key("nonce") {
        return Err("a logout token must not carry a nonce".into());
    }
    let iat = c.get("iat").and_then(Value::as_u64).ok_or("no iat")?;
    if iat > now + SKEW || now.saturating_sub(iat) > MAX_TOKEN_AGE {
        return Err("issued outside the accepted window".into());
    }
    let jti = c.get("jti").and_then(Value::as_str).ok_or("no jti")?;
    let sub = c.get("sub").and_then(Value::as_str);
    let sid = c.get("sid").and_then(Value::as_str);
    if sub.is_none() && sid.is_none() {
        return Err("neither sub nor sid".into());
    }
    Ok((sub, sid, jti))
}

fn logout_error(status: StatusCode, description: &str) -> Reply {
    Reply::json(
        status,
        &serde_json::json!({"error": "invalid_request", "error_description": description}),
    )
}

/// `POST /.pomerium/backchannel_logout` with `logout_token`: verified fully (signature against the
/// IdP's keys, issuer, audience = our client id, `iat` window, the logout event, no `nonce`,
/// `sid` or `sub`, a `jti` never seen on any node), then the matching sessions end.
pub(super) async fn backchannel(state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    if req.method != http::Method::POST {
        return logout_error(StatusCode::METHOD_NOT_ALLOWED, "POST a logout_token");
    }
    let Some(token) = req.field("logout_token") else {
        return logout_error(StatusCode::BAD_REQUEST, "no logout_token");
    };
    let providers = state.idp.all();
    if providers.is_empty() {
        return logout_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity provider not discovered yet",
        );
    }
    let refused = |reason: String| {
        tracing::warn!(reason = %reason, "back-channel logout token refused");
        state
            .metrics
            .logout_tokens
            .with_label_values(&["refused"])
            .inc();
        logout_error(StatusCode::BAD_REQUEST, &reason)
    };
    let claims = match verify_with_any(&providers, token).await {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    let (sub, sid, jti) = match check_logout_claims(&claims, unix_now()) {
        Ok(v) => v,
        Err(reason) => return refused(reason),
    };
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match state
        .store
        .claim_once(&format!("logout-jti:{iss}|{jti}"), MAX_TOKEN_AGE + SKEW)
        .await
    {
        Ok(true) => {}
        Ok(false) => return refused("this logout token was already used".into()),
        Err(_) => {
            return logout_error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
        }
    }
    match end_sessions(state, sub, sid, "backchannel_logout").await {
        Ok(n) => {
            state
                .metrics
                .logout_tokens
                .with_label_values(&["accepted"])
                .inc();
            tracing::info!(sessions = n, sub, sid, "back-channel logout");
            Reply::text(StatusCode::OK, bytes::Bytes::new())
        }
        Err(e) => {
            tracing::error!(error = %e, "back-channel logout could not end sessions");
            logout_error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
        }
    }
}

/// The logout token's claims, verified by the provider that issued it: those whose issuer is the
/// token's `iss` are tried in turn (two clients of one IdP share an issuer; the audience tells
/// them apart).
async fn verify_with_any(
    providers: &[(String, Arc<crate::identity::Provider>)],
    token: &str,
) -> Result<serde_json::Map<String, Value>, String> {
    let iss = crate::identity::unverified_issuer(token).unwrap_or_default();
    let mut last = format!("issuer {iss:?} is not a configured identity provider");
    for (_, idp) in providers {
        if idp.settings().issuer.as_str().trim_end_matches('/') != iss.trim_end_matches('/') {
            continue;
        }
        match idp.verify_logout_token(token).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// A front-channel logout request: `GET …/sign_out?iss=…&sid=…` from the IdP's logout page. `None`
/// when the request has no `iss`/`sid` (a user's own sign-out: the confirmation page applies).
pub(super) async fn frontchannel(state: &Arc<AuthState>, req: &Request<'_>) -> Option<Reply> {
    if req.method != http::Method::GET {
        return None;
    }
    let (iss, sid) = (req.param("iss")?, req.param("sid")?);
    let known = state.idp.all().iter().any(|(_, i)| {
        i.settings().issuer.as_str().trim_end_matches('/') == iss.trim_end_matches('/')
    });
    if !known {
        tracing::warn!(iss, "front-channel logout from an unknown issuer refused");
        return Some(req.answer.refuse(Refusal::sign_in(
            StatusCode::BAD_REQUEST,
            "Sign-out refused",
            "This logout request does not come from the configured identity provider.",
        )));
    }
    Some(
        match end_sessions(state, None, Some(sid), "frontchannel_logout").await {
            // What an IdP's iframe expects: a plain 200, nothing to follow, nothing cached.
            Ok(n) => {
                tracing::info!(sessions = n, sid, "front-channel logout");
                Reply::html(
                    StatusCode::OK,
                    "<!doctype html><title>Signed out</title>".into(),
                )
            }
            Err(_) => req.answer.refuse(Refusal::StoreUnavailable),
        },
    )
}
