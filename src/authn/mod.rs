//! Sign-in endpoints (the authenticate service and the `/.pomerium/` endpoints on route hosts),
//! and reading a request's session.
//!
//! Flow (Pomerium's): app host without a session → signed `authenticate/.pomerium/sign_in` →
//! IdP (code + PKCE, `state` in a sealed per-attempt cookie, `nonce`) → `authenticate/oauth2/callback`
//! → session stored, authenticate cookie set → sealed one-time hand-off to
//! `app/.pomerium/callback/` → app cookie set → the original URL. A second app host finds the
//! authenticate cookie and skips the IdP.

mod device_page;
mod identify;
pub mod idp_bearer;
pub mod programmatic;
mod refresh;
pub mod signed;
mod signout;
mod user;
pub mod webauthn;

use crate::clock::unix_now;
use crate::crypto::{ct_eq, random_token};
use crate::identity::Oidc;
use crate::respond::pages;
use crate::respond::refusal::{Answer, Refusal};
use crate::respond::reply::Reply;
use crate::session::cookie::{self, Handle};
use crate::session::{SessionStore, StoreError, UserSession};
use crate::snapshot::auth::Auth;
use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use http::StatusCode;
pub use identify::identify;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use url::Url;

/// How long a sign-in attempt (IdP round trip) may take.
const FLOW_TTL: u64 = 600;
/// Sign-in attempts a browser may have in flight before the older ones are dropped.
const MAX_PENDING_SIGN_INS: usize = 5;
/// Longest URL a sign-in may return to (it travels in a cookie and in signed URLs).
pub const MAX_REDIRECT_LEN: usize = 4096;
/// How long the hand-off from the authenticate host to an app host is valid.
const HANDOFF_TTL: u64 = 60;

/// Process-wide sign-in state that outlives config reloads.
pub struct AuthState {
    pub store: Arc<dyn SessionStore>,
    pub idp: ArcSwapOption<Oidc>,
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// Identities proven by IdP tokens presented as bearer tokens, for their remaining life.
    pub bearer_cache: idp_bearer::BearerCache,
    /// Sessions being refreshed, or whose refresh failed for now → earliest next attempt.
    refreshing: DashMap<String, u64>,
}

impl AuthState {
    pub fn new(
        store: Arc<dyn SessionStore>,
        metrics: Arc<crate::telemetry::metrics::Metrics>,
    ) -> Self {
        Self {
            store,
            metrics,
            bearer_cache: idp_bearer::BearerCache::default(),
            idp: ArcSwapOption::empty(),
            refreshing: DashMap::new(),
        }
    }

    /// Records a one-time value (`state`, hand-off id) in the store, so a replay fails on every
    /// node; `Err` when the store cannot say.
    async fn first_use(&self, id: &str, exp: u64) -> Result<bool, Refusal> {
        let ttl = exp.saturating_sub(unix_now()).max(1);
        self.store.claim_once(id, ttl).await.map_err(|e| {
            tracing::error!(error = %e, "cannot record a single-use sign-in value");
            Refusal::StoreUnavailable
        })
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
    /// A programmatic-login token sent in one of the bearer forms.
    pub bearer: Option<&'a str>,
    /// How Vallum answers this request (HTML or JSON, its id, the branding).
    pub answer: Answer<'a>,
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

fn session_key<'a>(a: &'a Auth<'_>) -> &'a crate::crypto::Key {
    &a.session_cookie_key
}

fn auth_cookie_name<'a>(a: &'a Auth<'_>) -> &'a str {
    &a.cookie.authenticate_name
}

fn bad_request(req: &Request<'_>, detail: &str) -> Reply {
    req.answer.refuse(Refusal::sign_in(
        StatusCode::BAD_REQUEST,
        "Sign-in problem",
        detail.to_string(),
    ))
}

/// The session a request carries for `host`, if any and still live. An error means the store
/// could not say (the caller answers 503 rather than sending a signed-in user to sign in again).
pub async fn session_for(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    cookies: Option<&str>,
    name: &str,
    host: &str,
) -> Result<Option<Arc<UserSession>>, StoreError> {
    let Some(value) = cookies.and_then(|c| cookie::find(c, name)) else {
        return Ok(None);
    };
    let now = unix_now();
    let Some(handle) = auth
        .keys
        .opened_cookies
        .open(session_key(auth), name, host, value, now)
    else {
        return Ok(None);
    };
    match state.store.get(&handle.sid).await {
        Ok(Some(s)) if !s.is_expired(now) => {
            refresh::maybe_refresh(auth, state, &s, now);
            Ok(Some(s))
        }
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "session store lookup failed");
            Err(e)
        }
    }
}

/// Where to send a browser that needs to sign in: the signed sign-in URL.
pub fn sign_in_url(auth: &Auth<'_>, original: &str) -> Url {
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
    auth: &Auth<'_>,
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
        "/.pomerium/sign_out" => signout::authenticate_sign_out(auth, state, req).await,
        "/.pomerium/signed_out" => {
            Reply::html(StatusCode::OK, pages::signed_out(req.answer.branding))
        }
        webauthn::PATH => webauthn::authenticate_page(auth, state, req).await,
        "/.well-known/pomerium/jwks.json" => user::jwks(auth),
        "/.pomerium/" => Reply::html(
            StatusCode::OK,
            req.answer
                .page_html("Vallum", "<p>This is the sign-in service.</p>"),
        ),
        _ => req.answer.refuse(Refusal::NotFound),
    }
}

/// The `/.pomerium/` endpoints on a route host. `None`: not one of them.
pub async fn route_endpoint(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Option<Reply> {
    Some(match req.path {
        "/.pomerium/callback/" | "/.pomerium/callback" => route_callback(auth, state, req).await,
        "/.pomerium/sign_out" => signout::route_sign_out(auth, state, req).await,
        "/.pomerium/api/v1/login" => programmatic::login_url(auth, req),
        "/.pomerium/programmatic" => programmatic::hand_token(auth, state, req).await,
        "/.pomerium/user" => user::user_json(auth, state, req).await,
        webauthn::PATH => webauthn::route_page(auth, state, req).await,
        "/.pomerium/" => user::user_page(auth, state, req).await,
        "/.pomerium/jwt" if auth.jwt_endpoint => user::jwt_endpoint(auth, state, req).await,
        "/.well-known/pomerium/jwks.json" => user::jwks(auth),
        "/.well-known/pomerium" | "/.well-known/pomerium/" => user::well_known(auth, req),
        // Every other `/.pomerium/` path is Vallum's, never the app's.
        p if p.starts_with("/.pomerium/") => req.answer.refuse(Refusal::NotFound),
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

fn flow_cookie_name(a: &Auth<'_>, state: &str) -> String {
    format!("{}_csrf_{}", a.cookie.name, state.get(..8).unwrap_or(state))
}

fn flow_key(a: &Auth<'_>) -> crate::crypto::Key {
    a.cookie_secret.derive("vallum oauth flow")
}

async fn sign_in(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let now = unix_now();
    let target = match signed::verify(&auth.shared_secret, "/.pomerium/sign_in", &req.query, now) {
        Ok(t) => t,
        Err(e) => return bad_request(req, &e.to_string()),
    };
    let Some(target_url) = signed::safe_target(&target) else {
        return bad_request(req, "the sign-in link points nowhere Vallum serves");
    };
    // Already signed in at the authenticate host: hand off straight away (single sign-on).
    let name = auth_cookie_name(auth);
    match session_for(auth, state, req.cookies, name, req.host).await {
        Ok(Some(session)) => return handoff(auth, &target_url, &session),
        Ok(None) => {}
        Err(_) => return req.answer.refuse(Refusal::StoreUnavailable),
    }
    let Some(idp) = state.idp.load_full() else {
        return req.answer.refuse(Refusal::sign_in(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "The identity provider has not been reached yet. Try again in a moment.",
        ));
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
    // Each attempt leaves a small cookie until its callback; a client that starts attempts
    // without finishing them would grow the Cookie header without bound. Past a few, the old
    // attempts are dropped (a tab still waiting on one restarts its sign-in).
    let prefix = format!("{}_csrf_", auth.cookie.name);
    let stale: Vec<String> = req
        .cookies
        .map(|c| {
            c.split(';')
                .filter_map(|kv| kv.trim().split_once('=').map(|(k, _)| k.trim()))
                .filter(|k| k.starts_with(&prefix))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut reply = Reply::found(url.as_str());
    if stale.len() >= MAX_PENDING_SIGN_INS {
        for name in stale {
            reply = reply.with_cookie(cookie::set_cookie(&auth.cookie, &name, "", 0, true));
        }
    }
    state
        .metrics
        .sign_ins
        .with_label_values(&["started", ""])
        .inc();
    reply.with_cookie(cookie::set_cookie(
        &auth.cookie,
        &flow_cookie_name(auth, &flow.s),
        &sealed,
        FLOW_TTL,
        true,
    ))
}

/// Counts a sign-in that ended without a session, by a bounded reason.
fn failed(state: &AuthState, reason: &'static str) {
    state
        .metrics
        .sign_ins
        .with_label_values(&["failed", reason])
        .inc();
}

/// The sign-in attempt this callback finishes: its sealed cookie matches `state`, is fresh, and
/// is used once across the fleet. Also the `Set-Cookie` that clears the attempt's cookie.
async fn verified_flow(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
    now: u64,
) -> Result<(Flow, String), Reply> {
    let Some(state_param) = req.param("state").filter(|s| !s.is_empty()) else {
        failed(state, "csrf");
        return Err(bad_request(req, "missing state"));
    };
    let cookie_name = flow_cookie_name(auth, state_param);
    let clear = cookie::set_cookie(&auth.cookie, &cookie_name, "", 0, true);
    let flow: Option<Flow> = req
        .cookies
        .and_then(|c| cookie::find(c, &cookie_name))
        .and_then(|v| flow_key(auth).open(v, format!("flow|{}", req.host).as_bytes()))
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(flow) = flow else {
        failed(state, "csrf");
        tracing::warn!(
            reason = "csrf",
            "sign-in callback without a matching sign-in attempt"
        );
        return Err(bad_request(req, "this sign-in attempt is unknown or expired (state check failed); start again from the application").with_cookie(clear));
    };
    if !ct_eq(&flow.s, state_param) {
        failed(state, "csrf");
        tracing::warn!(reason = "csrf", "sign-in callback state mismatch");
        // The cookie is left in place: a forged callback must not cancel the user's real attempt.
        return Err(bad_request(req, "state mismatch"));
    }
    if now > flow.i + FLOW_TTL {
        failed(state, "expired");
        return Err(
            bad_request(req, "this sign-in attempt expired; start again").with_cookie(clear),
        );
    }
    let first = match state
        .first_use(&format!("state|{}", flow.s), flow.i + FLOW_TTL)
        .await
    {
        Ok(first) => first,
        Err(refusal) => {
            failed(state, "store_unavailable");
            return Err(req.answer.refuse(refusal));
        }
    };
    if !first {
        failed(state, "replay");
        tracing::warn!(reason = "replay", "sign-in callback replayed");
        return Err(bad_request(req, "this sign-in response was already used").with_cookie(clear));
    }
    Ok((flow, clear))
}

/// A new session record from a verified sign-in.
fn new_session(identity: crate::identity::Identity, now: u64, expires_at: u64) -> UserSession {
    UserSession {
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
        devices: Vec::new(),
    }
}

async fn oauth_callback(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let now = unix_now();
    if let Some(err) = req.param("error") {
        failed(state, "idp_error");
        let desc = req.param("error_description").unwrap_or("");
        tracing::warn!(
            error = err,
            description = desc,
            "identity provider returned an error"
        );
        return req.answer.refuse(Refusal::sign_in(
            StatusCode::UNAUTHORIZED,
            "Sign-in refused",
            format!("The identity provider said: {err} {desc}"),
        ));
    }
    // A parameter given twice is refused, not resolved first- or last-wins: the two halves of
    // a stack that disagree on which one counts is how parameter pollution attacks work.
    if ["state", "code", "error"]
        .iter()
        .any(|k| req.query.iter().filter(|(n, _)| n == k).count() > 1)
    {
        failed(state, "bad_response");
        return bad_request(req, "a sign-in parameter was given more than once");
    }
    let (flow, clear) = match verified_flow(auth, state, req, now).await {
        Ok(f) => f,
        Err(reply) => return reply,
    };
    let Some(code) = req.param("code") else {
        failed(state, "bad_response");
        return bad_request(req, "missing code").with_cookie(clear);
    };
    let Some(idp) = state.idp.load_full() else {
        failed(state, "idp_unavailable");
        return req.answer.refuse(Refusal::sign_in(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "identity provider not reachable",
        ));
    };
    let identity = match idp.exchange(code, &flow.v, &flow.n).await {
        Ok(i) => i,
        Err(e) => {
            failed(state, "token_rejected");
            tracing::warn!(reason = %e, "sign-in failed; no session created");
            return req
                .answer
                .refuse(Refusal::sign_in(
                    StatusCode::UNAUTHORIZED,
                    "Sign-in failed",
                    "The identity provider's answer could not be verified.",
                ))
                .with_cookie(clear);
        }
    };
    let Some(target) = signed::safe_target(&flow.t) else {
        failed(state, "bad_destination");
        return bad_request(req, "invalid destination").with_cookie(clear);
    };
    let expires_at = now + auth.cookie.expire.as_secs();
    let session = new_session(identity, now, expires_at);
    if let Err(e) = state.store.put(session.clone()).await {
        failed(state, "store_unavailable");
        tracing::error!(error = %e, "cannot store the new session");
        return req
            .answer
            .refuse(Refusal::sign_in(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in unavailable",
                "the session store is unavailable",
            ))
            .with_cookie(clear);
    }
    tracing::info!(user = %session.user_id, session_id = %session.id, "signed in");
    state
        .metrics
        .sign_ins
        .with_label_values(&["completed", ""])
        .inc();
    let name = auth_cookie_name(auth);
    let handle = Handle {
        sid: session.id.clone(),
        exp: expires_at,
    };
    let auth_cookie = cookie::set_cookie(
        &auth.cookie,
        name,
        &cookie::seal(session_key(auth), name, req.host, &handle),
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

fn handoff_key(a: &Auth<'_>) -> crate::crypto::Key {
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
fn handoff(auth: &Auth<'_>, target: &Url, session: &UserSession) -> Reply {
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

async fn route_callback(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let now = unix_now();
    let h: Option<Handoff> = req
        .param("pomerium_session")
        .and_then(|v| handoff_key(auth).open(v, format!("handoff|{}", req.host).as_bytes()))
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(h) = h.filter(|h| h.exp > now) else {
        return bad_request(req, "invalid or expired sign-in hand-off");
    };
    let first = match state.first_use(&format!("handoff|{}", h.jti), h.exp).await {
        Ok(first) => first,
        Err(refusal) => return req.answer.refuse(refusal),
    };
    if !first {
        return bad_request(req, "this sign-in hand-off was already used");
    }
    let Some(target) = signed::safe_target(&h.t).filter(|t| authority(t) == req.host) else {
        return bad_request(req, "the hand-off is for another host");
    };
    let session = match state.store.get(&h.sid).await {
        Ok(Some(s)) if !s.is_expired(now) => s,
        Ok(_) => return bad_request(req, "the session has ended; sign in again"),
        Err(_) => return req.answer.refuse(Refusal::StoreUnavailable),
    };
    let handle = Handle {
        sid: session.id.clone(),
        exp: session.expires_at,
    };
    let name = &auth.cookie.name;
    let value = cookie::seal(session_key(auth), name, req.host, &handle);
    Reply::found(target.as_str()).with_cookie(cookie::set_cookie(
        &auth.cookie,
        name,
        &value,
        session.ttl(now).as_secs(),
        false,
    ))
}
