//! `POST /.pomerium/mcp/token` and `/.pomerium/mcp/revoke`, and reading an access token on an
//! MCP request. Every exchange checks that the session behind the grant is still live, so a
//! sign-out anywhere in the fleet ends the client's access at its next request or refresh.

use super::grants::{self, Token};
use super::{clients, no_store, oauth_error, resource_fits, AuthState, Request};
use crate::authn::programmatic::token_host;
use crate::authn::SessionError;
use crate::clock::unix_now;
use crate::crypto::random_token;
use crate::respond::reply::Reply;
use crate::routes::route::Route;
use crate::session::UserSession;
use crate::snapshot::auth::Auth;
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;

/// The client a token request authenticates as: its id, checked against how it registered;
/// else why not.
async fn client_of(auth: &Auth<'_>, req: &Request<'_>) -> Result<String, &'static str> {
    let key = &auth.keys.mcp_key;
    let basic = req.authorization.and_then(basic_credentials);
    let (id, secret, method) = match basic {
        Some((id, secret)) => (id, Some(secret), clients::AuthMethod::ClientSecretBasic),
        None => {
            let id = req.field("client_id").unwrap_or_default().to_string();
            match req.field("client_secret") {
                Some(s) => (
                    id,
                    Some(s.to_string()),
                    clients::AuthMethod::ClientSecretPost,
                ),
                None => (id, None, clients::AuthMethod::None),
            }
        }
    };
    let Ok(client) = super::find_client(auth, &id).await else {
        return Err("unknown client");
    };
    let proven = match (&secret, client.auth) {
        (None, clients::AuthMethod::None) => true,
        (Some(s), m) if m == method => clients::secret_matches(key, &id, s),
        _ => false,
    };
    match proven {
        true => Ok(id),
        false => Err("client authentication failed"),
    }
}

fn unauthorized(why: &str) -> Reply {
    tracing::info!(
        reason = why,
        "MCP token request refused: client authentication"
    );
    oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why)
}

/// `Authorization: Basic base64(id:secret)`, each part form-encoded (RFC 6749 §2.3.1).
fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    let b64 = header.trim().strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

fn invalid_grant(why: &str) -> Reply {
    tracing::info!(reason = why, "MCP token request refused");
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why)
}

pub(super) async fn token(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let client_id = match client_of(auth, req).await {
        Ok(c) => c,
        Err(why) => return unauthorized(why),
    };
    match req.field("grant_type") {
        Some("authorization_code") => exchange_code(auth, state, req, &client_id).await,
        Some("refresh_token") => exchange_refresh(auth, state, req, &client_id).await,
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
        ),
    }
}

async fn exchange_code(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
    client_id: &str,
) -> Reply {
    let now = unix_now();
    let value = req.field("code").unwrap_or_default();
    let Some(code) = grants::open_code(&auth.keys.mcp_key, &token_host(req.host), value, now)
    else {
        return invalid_grant("the code is not valid here, or has expired");
    };
    if code.client != client_id {
        return invalid_grant("the code was issued to another client");
    }
    if req
        .field("redirect_uri")
        .is_some_and(|r| r != code.redirect_uri)
    {
        return invalid_grant("redirect_uri differs from the authorization request's");
    }
    if let Some(refused) = other_resource(req, &code.resource) {
        return refused;
    }
    let verifier = req.field("code_verifier").unwrap_or_default();
    if !grants::pkce_matches(verifier, &code.challenge) {
        return invalid_grant("code_verifier does not match the code_challenge");
    }
    let used = "the code has already been used";
    if let Some(refused) = spend(
        state,
        grants::claim_key("code", value),
        grants::CODE_TTL,
        used,
    )
    .await
    {
        return refused;
    }
    issue(
        auth,
        state,
        req,
        &code.sid,
        client_id,
        code.resource,
        code.scope,
    )
    .await
}

async fn exchange_refresh(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
    client_id: &str,
) -> Reply {
    let now = unix_now();
    let value = req.field("refresh_token").unwrap_or_default();
    let Some(t) = grants::open_refresh(&auth.keys.mcp_key, &token_host(req.host), value, now)
    else {
        return invalid_grant("the refresh token is not valid here, or has expired");
    };
    if t.client != client_id {
        return invalid_grant("the refresh token was issued to another client");
    }
    if let Some(refused) = other_resource(req, &t.resource) {
        return refused;
    }
    let ttl = t.exp.saturating_sub(now).max(1);
    let used = "the refresh token has already been used";
    if let Some(refused) = spend(state, grants::claim_key("refresh", &t.id), ttl, used).await {
        tracing::warn!(session_id = %t.sid, "MCP refresh token refused: used before (replayed?) or the store did not answer");
        return refused;
    }
    issue(auth, state, req, &t.sid, client_id, t.resource, t.scope).await
}

/// `invalid_target` when the request names a resource other than the grant's.
fn other_resource(req: &Request<'_>, granted: &str) -> Option<Reply> {
    req.field("resource").filter(|r| *r != granted).map(|_| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource differs from the grant's",
        )
    })
}

/// Records a single-use value fleet-wide; the refusal when it was used before (or the store
/// cannot say).
async fn spend(state: &AuthState, key: String, ttl: u64, used: &str) -> Option<Reply> {
    match state.store.claim_once(&key, ttl).await {
        Ok(true) => None,
        Ok(false) => Some(invalid_grant(used)),
        Err(e) => Some(store_down(e)),
    }
}

/// The store (or what is kept in it) could not answer: try again.
fn store_down(e: impl std::fmt::Display) -> Reply {
    tracing::error!(error = %e, "MCP token request: the session store did not answer");
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "try again shortly",
    )
}

/// A new access token and refresh token for a live session.
async fn issue(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
    sid: &str,
    client: &str,
    resource: String,
    scope: Option<String>,
) -> Reply {
    let now = unix_now();
    let session = match state.store.get(sid).await {
        Ok(Some(s)) if !s.is_expired(now) => s,
        Ok(_) => return invalid_grant("the sign-in behind this grant has ended"),
        Err(e) => return store_down(e),
    };
    // A route whose MCP server needs the user's own upstream token: without one (revoked, or
    // refused at refresh), the client must authorize again, and the person grant it again.
    let needs_upstream =
        super::resource_route(req, &resource).filter(|r| super::upstream::applies(auth, r));
    if let Some(route) = needs_upstream {
        match super::upstream::granted(auth, state, route, &session).await {
            Ok(true) => {}
            Ok(false) => return invalid_grant("the upstream grant is gone; authorize again"),
            Err(e) => return store_down(e),
        }
    }
    let lifetime = auth.mcp.access_token_lifetime.as_secs();
    let access_exp = (now + lifetime).min(session.expires_at);
    let host = token_host(req.host);
    let key = &auth.keys.mcp_key;
    let mut t = Token {
        sid: sid.to_string(),
        client: client.to_string(),
        resource,
        scope: scope.clone(),
        exp: access_exp,
        id: String::new(),
    };
    let access = grants::seal_access(key, &host, &t);
    t.exp = session.expires_at;
    t.id = random_token(16);
    let refresh = grants::seal_refresh(key, &host, &t);
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": access_exp.saturating_sub(now),
        "refresh_token": refresh,
    });
    if let Some(s) = scope {
        body["scope"] = json!(s);
    }
    no_store(Reply::json(StatusCode::OK, &body))
}

/// RFC 7009: a refresh token is spent at once; an access token cannot be recalled one by one
/// (it is short-lived and ends with its session). Always `200`, as the RFC asks.
pub(super) async fn revoke(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let client_id = match client_of(auth, req).await {
        Ok(c) => c,
        Err(why) => return unauthorized(why),
    };
    let now = unix_now();
    let value = req.field("token").unwrap_or_default();
    let key = &auth.keys.mcp_key;
    if let Some(t) = grants::open_refresh(key, &token_host(req.host), value, now) {
        if t.client == client_id {
            let ttl = t.exp.saturating_sub(now).max(1);
            if let Err(e) = state
                .store
                .claim_once(&grants::claim_key("refresh", &t.id), ttl)
                .await
            {
                return store_down(e);
            }
            tracing::info!(session_id = %t.sid, "MCP refresh token revoked");
        }
    }
    no_store(Reply::text(StatusCode::OK, bytes::Bytes::new()))
}

/// The MCP access token in `Authorization: Bearer …`, if the request carries one.
pub fn access_token(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    super::bearer(v).filter(|t| t.starts_with(grants::ACCESS_PREFIX))
}

/// The live session an access token stands for on this route. A token that does not open here,
/// has expired, is for another resource, or whose session has ended is refused
/// (`SessionError::TokenRejected`): the client refreshes or authorizes again.
pub async fn session_for_access_token(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    token: &str,
    host: &str,
    route: &Route,
) -> Result<Arc<UserSession>, SessionError> {
    let now = unix_now();
    let key = &auth.keys.mcp_key;
    let t = grants::open_access(key, &token_host(host), token, now)
        .filter(|t| resource_fits(&t.resource, route))
        .or_else(|| grants::open_access(key, grants::ANY_HOST, token, now))
        .ok_or(SessionError::TokenRejected)?;
    match state.store.get(&t.sid).await? {
        Some(s) if !s.is_expired(now) => {
            crate::authn::refresh::maybe_refresh(auth, state, &s, now);
            Ok(s)
        }
        _ => Err(SessionError::TokenRejected),
    }
}

/// The token an `mcp.client` route's app gets for its user (`Authorization: Bearer`): good on
/// every MCP server route of the gateway, whose policies decide each call as for the user, for
/// `mcp_access_token_lifetime`, and ended with the session. A fresh one comes with every request.
pub fn delegated_token(auth: &Auth<'_>, s: &UserSession, route_id: &str) -> Arc<str> {
    let now = unix_now();
    let t = Token {
        sid: s.id.clone(),
        client: format!("mcp.client {route_id}"),
        resource: grants::ANY_HOST.to_string(),
        scope: None,
        exp: (now + auth.mcp.access_token_lifetime.as_secs()).min(s.expires_at),
        id: String::new(),
    };
    Arc::from(grants::seal_access(
        &auth.keys.mcp_key,
        grants::ANY_HOST,
        &t,
    ))
}

/// The live session behind a bearer token a client app presents to the MCP endpoints of this
/// host (its delegated token, or a token issued on this host).
pub(super) async fn session_of_bearer(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Result<Option<Arc<UserSession>>, crate::session::StoreError> {
    let now = unix_now();
    let Some(token) = req.authorization.and_then(super::bearer) else {
        return Ok(None);
    };
    let key = &auth.keys.mcp_key;
    let Some(t) = grants::open_access(key, grants::ANY_HOST, token, now)
        .or_else(|| grants::open_access(key, &token_host(req.host), token, now))
    else {
        return Ok(None);
    };
    Ok(state
        .store
        .get(&t.sid)
        .await?
        .filter(|s| !s.is_expired(now)))
}
