//! Sign-in endpoints (the authenticate service and the `/.pomerium/` endpoints on route hosts),
//! and reading a request's session.
//!
//! Flow (Pomerium's): app host without a session → signed `authenticate/.pomerium/sign_in` →
//! IdP (code + PKCE, `state` in a sealed per-attempt cookie, `nonce`) → `authenticate/oauth2/callback`
//! → session stored, authenticate cookie set → sealed one-time hand-off to
//! `app/.pomerium/callback/` → app cookie set → the original URL. A second app host finds the
//! authenticate cookie and skips the IdP.

pub mod discovery;
pub mod pages;
pub mod signed;

use crate::config::auth::AuthSettings;
use crate::crypto::{ct_eq, random_token};
use crate::identity::Oidc;
use crate::proxy::reply::Reply;
use crate::session::cookie::{self, Handle};
use crate::session::{unix_now, Session, SessionStore};
use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use url::Url;

/// How long a sign-in attempt (IdP round trip) may take.
const FLOW_TTL: u64 = 600;
/// How long the hand-off from the authenticate host to an app host is valid.
const HANDOFF_TTL: u64 = 60;

/// Process-wide sign-in state that outlives config reloads.
pub struct AuthState {
    pub store: Arc<dyn SessionStore>,
    pub idp: ArcSwapOption<Oidc>,
    /// One-time values already used (`state`, hand-off ids) → expiry, against replay.
    used: DashMap<String, u64>,
    /// Sessions being refreshed, or whose refresh failed for now → earliest next attempt.
    refreshing: DashMap<String, u64>,
}

impl AuthState {
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Self {
            store,
            idp: ArcSwapOption::empty(),
            used: DashMap::new(),
            refreshing: DashMap::new(),
        }
    }

    /// Records a one-time value; false if it was seen before.
    fn first_use(&self, id: &str, exp: u64) -> bool {
        let now = unix_now();
        if self.used.len() > 100_000 {
            self.used.retain(|_, e| *e > now);
        }
        self.used.insert(id.to_string(), exp).is_none()
    }
}

/// The parts of a request the sign-in endpoints look at.
pub struct Request<'a> {
    pub method: &'a http::Method,
    pub scheme: &'static str,
    /// `Host` as sent (lower-case, with port if any): cookies and hand-offs are bound to it.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Vec<(String, String)>,
    pub cookies: Option<&'a str>,
    pub wants_json: bool,
    /// Form fields of a POST body.
    pub form: Vec<(String, String)>,
}

impl Request<'_> {
    fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    fn field(&self, k: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn session_key(a: &AuthSettings) -> crate::crypto::Key {
    a.cookie_secret.derive("vallum session cookie")
}

fn auth_cookie_name(a: &AuthSettings) -> String {
    format!("{}_authenticate", a.cookie.name)
}

fn bad_request(detail: &str) -> Reply {
    Reply::html(
        StatusCode::BAD_REQUEST,
        pages::error("Sign-in problem", detail),
    )
}

/// The session a request carries for `host`, if any and still live.
pub async fn session_for(
    auth: &AuthSettings,
    state: &Arc<AuthState>,
    cookies: Option<&str>,
    name: &str,
    host: &str,
) -> Option<Arc<Session>> {
    let value = cookie::find(cookies?, name)?;
    let now = unix_now();
    let handle = cookie::open(&session_key(auth), name, host, value, now)?;
    match state.store.get(&handle.sid).await {
        Ok(Some(s)) if !s.is_expired(now) => {
            maybe_refresh(auth, state, &s, now);
            Some(s)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "session store lookup failed; treating the request as signed out");
            None
        }
    }
}

/// How long to wait before retrying a refresh that failed for a reason other than the IdP
/// refusing it (network, IdP down).
const REFRESH_RETRY_SECS: u64 = 30;

/// Starts a background refresh when the session's access token is about to expire or its claims
/// are older than `idp_refresh_claims_interval`, so group changes and revocations at the IdP
/// reach policy decisions. The request goes on with the session as it is.
fn maybe_refresh(auth: &AuthSettings, state: &Arc<AuthState>, session: &Arc<Session>, now: u64) {
    let (Some(idp_settings), Some(_)) = (&auth.idp, &session.refresh_token) else {
        return;
    };
    let claims_stale =
        session.claims_refreshed_at + idp_settings.refresh_claims_interval.as_secs() <= now;
    let access_expiring = session.access_expires_at.is_some_and(|t| t <= now + 60);
    if !claims_stale && !access_expiring {
        return;
    }
    if state
        .refreshing
        .get(&session.id)
        .is_some_and(|next| *next > now)
    {
        return;
    }
    // Single flight: whoever inserts first refreshes.
    if let Some(prev) = state
        .refreshing
        .insert(session.id.clone(), now + REFRESH_RETRY_SECS)
    {
        if prev > now {
            return;
        }
    }
    let (state, session) = (Arc::clone(state), Arc::clone(session));
    tokio::spawn(async move { refresh(&state, &session).await });
}

async fn refresh(state: &Arc<AuthState>, session: &Session) {
    let Some(idp) = state.idp.load_full() else {
        return;
    };
    let Some(rt) = &session.refresh_token else {
        return;
    };
    match idp.refresh(rt, &session.id_token).await {
        Ok(identity) => {
            let mut next = session.clone();
            next.user_id = identity.user_id;
            next.email = identity.email;
            next.name = identity.name;
            next.groups = identity.groups;
            next.claims = identity.claims;
            next.id_token = identity.id_token;
            next.access_token = identity.access_token;
            next.refresh_token = identity.refresh_token;
            next.access_expires_at = identity.access_expires_at;
            next.claims_refreshed_at = unix_now();
            match state.store.put(next).await {
                Ok(()) => {
                    state.refreshing.remove(&session.id);
                    tracing::info!(session_id = %session.id, "session refreshed");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store the refreshed session; will retry")
                }
            }
        }
        Err(crate::identity::IdpError::Unreachable(e)) => {
            tracing::warn!(session_id = %session.id, error = %e, "session refresh failed; keeping the session and retrying later");
        }
        Err(e) => {
            tracing::info!(session_id = %session.id, reason = %e, "session ended: the identity provider refused the refresh");
            let _ = state.store.delete(&session.id).await;
            state.refreshing.remove(&session.id);
        }
    }
}

/// Where to send a browser that needs to sign in: the signed sign-in URL.
pub fn sign_in_url(auth: &AuthSettings, original: &str) -> Url {
    signed::sign(
        &auth.shared_secret,
        &auth.authenticate_url,
        "/.pomerium/sign_in",
        original,
        &[],
        unix_now(),
    )
}

/// Everything served on the authenticate host.
pub async fn authenticate_host(
    auth: &AuthSettings,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Reply {
    match req.path {
        "/" => Reply::found("/.pomerium/"),
        "/robots.txt" => Reply::text(
            StatusCode::OK,
            bytes::Bytes::from_static(b"User-agent: *\nDisallow: /\n"),
        ),
        "/.pomerium/sign_in" => sign_in(auth, state, req).await,
        "/oauth2/callback" => oauth_callback(auth, state, req).await,
        "/.pomerium/sign_out" => authenticate_sign_out(auth, state, req).await,
        "/.pomerium/signed_out" => Reply::html(StatusCode::OK, pages::signed_out()),
        "/.well-known/pomerium/jwks.json" => jwks(auth),
        "/.pomerium/" => Reply::html(
            StatusCode::OK,
            pages::page("Vallum", "<p>This is the sign-in service.</p>"),
        ),
        _ => Reply::error(StatusCode::NOT_FOUND, "not found", req.wants_json),
    }
}

/// The `/.pomerium/` endpoints on a route host. `None`: not one of them.
pub async fn route_endpoint(
    auth: &AuthSettings,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Option<Reply> {
    Some(match req.path {
        "/.pomerium/callback/" | "/.pomerium/callback" => route_callback(auth, state, req).await,
        "/.pomerium/sign_out" => route_sign_out(auth, state, req).await,
        "/.pomerium/user" => user_json(auth, state, req).await,
        "/.pomerium/" => user_page(auth, state, req).await,
        "/.pomerium/jwt" if auth.jwt_endpoint => jwt_endpoint(auth, state, req).await,
        "/.well-known/pomerium/jwks.json" => jwks(auth),
        "/.well-known/pomerium" | "/.well-known/pomerium/" => well_known(auth, req),
        // Every other `/.pomerium/` path is Vallum's, never the app's.
        p if p.starts_with("/.pomerium/") => {
            Reply::error(StatusCode::NOT_FOUND, "not found", req.wants_json)
        }
        _ => return None,
    })
}

#[derive(Serialize, Deserialize)]
struct Flow {
    /// `state`
    s: String,
    /// `nonce`
    n: String,
    /// PKCE verifier
    v: String,
    /// where to go afterwards
    t: String,
    /// issued at
    i: u64,
}

fn flow_cookie_name(a: &AuthSettings, state: &str) -> String {
    format!("{}_csrf_{}", a.cookie.name, state.get(..8).unwrap_or(state))
}

fn flow_key(a: &AuthSettings) -> crate::crypto::Key {
    a.cookie_secret.derive("vallum oauth flow")
}

async fn sign_in(auth: &AuthSettings, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let now = unix_now();
    let target = match signed::verify(&auth.shared_secret, "/.pomerium/sign_in", &req.query, now) {
        Ok(t) => t,
        Err(e) => return bad_request(&e.to_string()),
    };
    let Some(target_url) = signed::safe_target(&target) else {
        return bad_request("the sign-in link points nowhere Vallum serves");
    };
    // Already signed in at the authenticate host: hand off straight away (single sign-on).
    let name = auth_cookie_name(auth);
    if let Some(session) = session_for(auth, state, req.cookies, &name, req.host).await {
        return handoff(auth, &target_url, &session);
    }
    let Some(idp) = state.idp.load_full() else {
        return Reply::html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::error(
                "Sign-in unavailable",
                "The identity provider has not been reached yet. Try again in a moment.",
            ),
        );
    };
    let flow = Flow {
        s: random_token(32),
        n: random_token(32),
        v: random_token(48),
        t: target,
        i: now,
    };
    let sealed = flow_key(auth).seal(
        &serde_json::to_vec(&flow).unwrap_or_default(),
        format!("flow|{}", req.host).as_bytes(),
    );
    let url = idp.authorize_url(&flow.s, &flow.n, &flow.v);
    Reply::found(url.as_str()).with_cookie(cookie::set_cookie(
        &auth.cookie,
        &flow_cookie_name(auth, &flow.s),
        &sealed,
        FLOW_TTL,
        true,
    ))
}

async fn oauth_callback(auth: &AuthSettings, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let now = unix_now();
    if let Some(err) = req.param("error") {
        let desc = req.param("error_description").unwrap_or("");
        tracing::warn!(
            error = err,
            description = desc,
            "identity provider returned an error"
        );
        return Reply::html(
            StatusCode::UNAUTHORIZED,
            pages::error(
                "Sign-in refused",
                &format!("The identity provider said: {err} {desc}"),
            ),
        );
    }
    let Some(state_param) = req.param("state").filter(|s| !s.is_empty()) else {
        return bad_request("missing state");
    };
    let cookie_name = flow_cookie_name(auth, state_param);
    let clear = cookie::set_cookie(&auth.cookie, &cookie_name, "", 0, true);
    let flow: Option<Flow> = req
        .cookies
        .and_then(|c| cookie::find(c, &cookie_name))
        .and_then(|v| flow_key(auth).open(v, format!("flow|{}", req.host).as_bytes()))
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(flow) = flow else {
        tracing::warn!(
            reason = "csrf",
            "sign-in callback without a matching sign-in attempt"
        );
        return bad_request("this sign-in attempt is unknown or expired (state check failed); start again from the application").with_cookie(clear);
    };
    if !ct_eq(&flow.s, state_param) {
        tracing::warn!(reason = "csrf", "sign-in callback state mismatch");
        // The cookie is left in place: a forged callback must not cancel the user's real attempt.
        return bad_request("state mismatch");
    }
    if now > flow.i + FLOW_TTL {
        return bad_request("this sign-in attempt expired; start again").with_cookie(clear);
    }
    if !state.first_use(&format!("state|{}", flow.s), flow.i + FLOW_TTL) {
        tracing::warn!(reason = "replay", "sign-in callback replayed");
        return bad_request("this sign-in response was already used").with_cookie(clear);
    }
    let Some(code) = req.param("code") else {
        return bad_request("missing code").with_cookie(clear);
    };
    let Some(idp) = state.idp.load_full() else {
        return Reply::html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::error("Sign-in unavailable", "identity provider not reachable"),
        );
    };
    let identity = match idp.exchange(code, &flow.v, &flow.n).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(reason = %e, "sign-in failed; no session created");
            return Reply::html(
                StatusCode::UNAUTHORIZED,
                pages::error(
                    "Sign-in failed",
                    "The identity provider's answer could not be verified.",
                ),
            )
            .with_cookie(clear);
        }
    };
    let Some(target) = signed::safe_target(&flow.t) else {
        return bad_request("invalid destination").with_cookie(clear);
    };
    let expires_at = now + auth.cookie.expire.as_secs();
    let session = Session {
        id: random_token(24),
        user_id: identity.user_id,
        email: identity.email,
        name: identity.name,
        groups: identity.groups,
        claims: identity.claims,
        id_token: identity.id_token,
        access_token: identity.access_token,
        refresh_token: identity.refresh_token,
        access_expires_at: identity.access_expires_at,
        issued_at: now,
        expires_at,
        claims_refreshed_at: now,
    };
    if let Err(e) = state.store.put(session.clone()).await {
        tracing::error!(error = %e, "cannot store the new session");
        return Reply::html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::error("Sign-in unavailable", "the session store is unavailable"),
        )
        .with_cookie(clear);
    }
    tracing::info!(user = %session.user_id, session_id = %session.id, "signed in");
    let name = auth_cookie_name(auth);
    let handle = Handle {
        sid: session.id.clone(),
        exp: expires_at,
    };
    let auth_cookie = cookie::set_cookie(
        &auth.cookie,
        &name,
        &cookie::seal(&session_key(auth), &name, req.host, &handle),
        auth.cookie.expire.as_secs(),
        true,
    );
    handoff(auth, &target, &session)
        .with_cookie(clear)
        .with_cookie(auth_cookie)
}

#[derive(Serialize, Deserialize)]
struct Handoff {
    sid: String,
    jti: String,
    exp: u64,
    t: String,
}

fn handoff_key(a: &AuthSettings) -> crate::crypto::Key {
    a.shared_secret.derive("vallum handoff")
}

fn authority(u: &Url) -> String {
    match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
        None => u.host_str().unwrap_or_default().to_string(),
    }
    .to_ascii_lowercase()
}

/// 302 to the target host's callback with a sealed, one-time, short-lived hand-off.
fn handoff(auth: &AuthSettings, target: &Url, session: &Session) -> Reply {
    let host = authority(target);
    let h = Handoff {
        sid: session.id.clone(),
        jti: random_token(16),
        exp: unix_now() + HANDOFF_TTL,
        t: target.to_string(),
    };
    let sealed = handoff_key(auth).seal(
        &serde_json::to_vec(&h).unwrap_or_default(),
        format!("handoff|{host}").as_bytes(),
    );
    let mut cb = target.clone();
    cb.set_path("/.pomerium/callback/");
    cb.set_query(None);
    cb.set_fragment(None);
    cb.query_pairs_mut()
        .append_pair("pomerium_session", &sealed);
    Reply::found(cb.as_str())
}

async fn route_callback(auth: &AuthSettings, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let now = unix_now();
    let h: Option<Handoff> = req
        .param("pomerium_session")
        .and_then(|v| handoff_key(auth).open(v, format!("handoff|{}", req.host).as_bytes()))
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(h) = h.filter(|h| h.exp > now) else {
        return bad_request("invalid or expired sign-in hand-off");
    };
    if !state.first_use(&format!("handoff|{}", h.jti), h.exp) {
        return bad_request("this sign-in hand-off was already used");
    }
    let Some(target) = signed::safe_target(&h.t).filter(|t| authority(t) == req.host) else {
        return bad_request("the hand-off is for another host");
    };
    let session = match state.store.get(&h.sid).await {
        Ok(Some(s)) if !s.is_expired(now) => s,
        _ => return bad_request("the session has ended; sign in again"),
    };
    let handle = Handle {
        sid: session.id.clone(),
        exp: session.expires_at,
    };
    let name = &auth.cookie.name;
    let value = cookie::seal(&session_key(auth), name, req.host, &handle);
    Reply::found(target.as_str()).with_cookie(cookie::set_cookie(
        &auth.cookie,
        name,
        &value,
        session.ttl(now).as_secs(),
        false,
    ))
}

/// `/.pomerium/user`: the signed-in user's claims as JSON (never tokens).
async fn user_json(auth: &AuthSettings, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let Some(s) = session_for(auth, state, req.cookies, &auth.cookie.name, req.host).await else {
        return Reply::json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({ "error": "user-unauthenticated" }),
        );
    };
    let mut claims = s.claims.clone();
    for k in [
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "nonce",
        "azp",
        "at_hash",
        "auth_time",
    ] {
        claims.remove(k);
    }
    claims.insert("sub".into(), serde_json::json!(s.user_id));
    claims.insert("user".into(), serde_json::json!(s.user_id));
    claims.insert("email".into(), serde_json::json!(s.email));
    claims.insert("name".into(), serde_json::json!(s.name));
    claims.insert("groups".into(), serde_json::json!(s.groups));
    claims.insert("sid".into(), serde_json::json!(s.id));
    Reply::json(StatusCode::OK, &serde_json::Value::Object(claims))
}

/// `/.pomerium/`: who you are signed in as. Never shows tokens (Pomerium's CVE-2024-39315).
async fn user_page(auth: &AuthSettings, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let Some(s) = session_for(auth, state, req.cookies, &auth.cookie.name, req.host).await else {
        if req.wants_json {
            return Reply::json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({ "error": "user-unauthenticated" }),
            );
        }
        let original = format!("{}://{}/.pomerium/", req.scheme, req.host);
        return Reply::found(sign_in_url(auth, &original).as_str());
    };
    let e = pages::escape;
    let mut claims: Vec<(&String, &serde_json::Value)> = s
        .claims
        .iter()
        .filter(|(k, _)| {
            ![
                "iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp",
            ]
            .contains(&k.as_str())
        })
        .collect();
    claims.sort_by(|a, b| a.0.cmp(b.0));
    let rows: String = claims
        .iter()
        .map(|(k, v)| format!("<tr><th>{}</th><td>{}</td></tr>", e(k), e(&v.to_string())))
        .collect();
    let expires = chrono::DateTime::from_timestamp(s.expires_at as i64, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let csrf = csrf_token(auth, Some(&s));
    let body = format!(
        "<table><tr><th>User</th><td>{}</td></tr><tr><th>Email</th><td>{}</td></tr><tr><th>Name</th><td>{}</td></tr>\
         <tr><th>Groups</th><td>{}</td></tr><tr><th>Session expires</th><td>{}</td></tr></table>\
         <h2>Claims</h2><table>{rows}</table>\
         <form method=\"post\" action=\"/.pomerium/sign_out\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\">Sign out</button></form>",
        e(&s.user_id),
        e(s.email.as_deref().unwrap_or("")),
        e(s.name.as_deref().unwrap_or("")),
        e(&s.groups.join(", ")),
        e(&expires),
        e(&csrf),
    );
    Reply::html(StatusCode::OK, pages::page("Signed in", &body))
}

/// `/.pomerium/jwt` (when `runtime_flags.pomerium_jwt_endpoint`): the assertion for this host, for
/// browser apps that want to read it.
async fn jwt_endpoint(auth: &AuthSettings, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let Some(s) = session_for(auth, state, req.cookies, &auth.cookie.name, req.host).await else {
        return Reply::json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({ "error": "user-unauthenticated" }),
        );
    };
    let host = req.host.split(':').next().unwrap_or(req.host);
    let issuer = if auth.issuer_uri {
        format!("https://{host}/")
    } else {
        host.to_string()
    };
    let extra: Vec<String> = auth.claim_headers.iter().map(|(_, c)| c.clone()).collect();
    let jwt = auth.signer.assertion(&s.id, host, unix_now(), || {
        crate::headers::assertion_claims(&s, host, &issuer, &extra)
    });
    let mut r = Reply::text(StatusCode::OK, bytes::Bytes::from(jwt));
    r.content_type = "application/jwt";
    r
}

fn cors_cacheable(r: Reply, etag: Option<String>) -> Reply {
    use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, ETAG};
    let mut r = r
        .with_header(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            http::HeaderValue::from_static("*"),
        )
        .with_header(CACHE_CONTROL, http::HeaderValue::from_static("max-age=60"));
    if let Some(t) = etag.and_then(|t| http::HeaderValue::from_str(&t).ok()) {
        r = r.with_header(ETAG, t);
    }
    r
}

/// `/.well-known/pomerium/jwks.json`: the key upstreams verify the assertion with.
fn jwks(auth: &AuthSettings) -> Reply {
    let body = auth.signer.jwks();
    let etag = format!("\"{}\"", auth.signer.kid());
    cors_cacheable(Reply::json(StatusCode::OK, &body), Some(etag))
}

/// `/.well-known/pomerium`: where this host's keys and endpoints are.
fn well_known(auth: &AuthSettings, req: &Request<'_>) -> Reply {
    let base = format!("{}://{}", req.scheme, req.host);
    let mut callback = auth.authenticate_url.clone();
    callback.set_path("/oauth2/callback");
    let body = serde_json::json!({
        "issuer": format!("{base}/"),
        "authentication_callback_endpoint": callback.as_str(),
        "jwks_uri": format!("{base}/.well-known/pomerium/jwks.json"),
        "frontchannel_logout_uri": format!("{base}/.pomerium/sign_out"),
    });
    cors_cacheable(Reply::json(StatusCode::OK, &body), None)
}

fn csrf_token(auth: &AuthSettings, session: Option<&Session>) -> String {
    auth.cookie_secret.derive("vallum csrf").sign(
        session
            .map(|s| s.id.as_str())
            .unwrap_or("anonymous")
            .as_bytes(),
    )
}

/// Sign-out is a state change, so it takes a POST with the CSRF token bound to the session;
/// a GET shows the confirmation form. `None`: go ahead; else the page to answer with.
fn confirm_sign_out(
    auth: &AuthSettings,
    session: Option<&Session>,
    req: &Request<'_>,
) -> Option<Reply> {
    let csrf = csrf_token(auth, session);
    if req.method != http::Method::POST {
        return Some(Reply::html(StatusCode::OK, pages::sign_out_confirm(&csrf)));
    }
    if !req.field("csrf").is_some_and(|c| ct_eq(c, &csrf)) {
        return Some(Reply::html(
            StatusCode::FORBIDDEN,
            pages::error(
                "Sign-out refused",
                "The form has expired (CSRF check failed); reload and try again.",
            ),
        ));
    }
    None
}

#[derive(Serialize, Deserialize)]
struct Logout {
    id_token: String,
    exp: u64,
}

fn logout_key(a: &AuthSettings) -> crate::crypto::Key {
    a.shared_secret.derive("vallum logout")
}

fn signed_out_url(auth: &AuthSettings) -> String {
    match &auth.signout_redirect_url {
        Some(u) => u.to_string(),
        None => {
            let mut u = auth.authenticate_url.clone();
            u.set_path("/.pomerium/signed_out");
            u.to_string()
        }
    }
}

/// Sign-out on an app host: GET confirms, POST with the CSRF token ends the session everywhere
/// (the store record is deleted, so every copy of every cookie stops working) and continues to
/// the authenticate host and the IdP.
async fn route_sign_out(auth: &AuthSettings, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let name = auth.cookie.name.clone();
    let session = session_for(auth, state, req.cookies, &name, req.host).await;
    if let Some(reply) = confirm_sign_out(auth, session.as_deref(), req) {
        return reply;
    }
    let mut extra = Vec::new();
    if let Some(s) = &session {
        if let Err(e) = state.store.delete(&s.id).await {
            tracing::error!(error = %e, "cannot delete the session");
            return Reply::html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::error(
                    "Sign-out failed",
                    "the session store is unavailable; try again",
                ),
            );
        }
        tracing::info!(user = %s.user_id, session_id = %s.id, "signed out");
        let l = Logout {
            id_token: s.id_token.clone(),
            exp: unix_now() + signed::VALIDITY_SECS,
        };
        extra.push(logout_key(auth).seal(
            &serde_json::to_vec(&l).unwrap_or_default(),
            format!("logout|{}", auth.authenticate_host).as_bytes(),
        ));
    }
    let extra_pairs: Vec<(&str, &str)> = extra
        .iter()
        .map(|v| ("pomerium_logout", v.as_str()))
        .collect();
    let url = signed::sign(
        &auth.shared_secret,
        &auth.authenticate_url,
        "/.pomerium/sign_out",
        &signed_out_url(auth),
        &extra_pairs,
        unix_now(),
    );
    Reply::found(url.as_str()).with_cookie(cookie::set_cookie(&auth.cookie, &name, "", 0, false))
}

/// Sign-out on the authenticate host: clears its cookie, ends its session, and goes to the IdP's
/// end-session endpoint (RP-initiated logout) or the signed-out page.
async fn authenticate_sign_out(
    auth: &AuthSettings,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Reply {
    let now = unix_now();
    let name = auth_cookie_name(auth);
    let session = session_for(auth, state, req.cookies, &name, req.host).await;
    let target = match signed::verify(&auth.shared_secret, "/.pomerium/sign_out", &req.query, now) {
        Ok(t) => t,
        Err(_) => {
            // Unsigned: confirm first, as on app hosts.
            if let Some(reply) = confirm_sign_out(auth, session.as_deref(), req) {
                return reply;
            }
            signed_out_url(auth)
        }
    };
    let mut id_token = req
        .param("pomerium_logout")
        .and_then(|v| logout_key(auth).open(v, format!("logout|{}", req.host).as_bytes()))
        .and_then(|b| serde_json::from_slice::<Logout>(&b).ok())
        .filter(|l| l.exp > now)
        .map(|l| l.id_token);
    if let Some(s) = &session {
        let _ = state.store.delete(&s.id).await;
        id_token = id_token.or_else(|| Some(s.id_token.clone()));
    }
    let clear = cookie::set_cookie(&auth.cookie, &name, "", 0, true);
    let Some(target) = signed::safe_target(&target) else {
        return bad_request("invalid sign-out destination").with_cookie(clear);
    };
    let idp_logout = match (state.idp.load_full(), id_token) {
        (Some(idp), Some(t)) => idp.end_session_url(&t, &target),
        _ => None,
    };
    Reply::found(idp_logout.as_ref().unwrap_or(&target).as_str()).with_cookie(clear)
}
