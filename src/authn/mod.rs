//! Sign-in endpoints (the authenticate service and the `/.pomerium/` endpoints on route hosts),
//! and reading a request's session.
//!
//! Flow (Pomerium's): app host without a session → signed `authenticate/.pomerium/sign_in` →
//! IdP (code + PKCE, `state` in a sealed per-attempt cookie, `nonce`) → `authenticate/oauth2/callback`
//! → session stored, authenticate cookie set → sealed one-time hand-off to
//! `app/.pomerium/callback/` → app cookie set → the original URL. A second app host finds the
//! authenticate cookie and skips the IdP.

mod chooser;
mod device_page;
mod handoff;
mod identify;
mod idle;
pub mod idp_bearer;
pub mod logout;
pub mod mcp_oauth;
mod portal;
pub mod programmatic;
mod refresh;
mod sign_in;
pub mod signed;
mod signout;
mod user;
pub mod webauthn;
pub mod workload;

use crate::clock::unix_now;
use crate::crypto::{ct_eq, random_token};
use crate::respond::pages;
use crate::respond::refusal::{Answer, Refusal};
use crate::respond::reply::Reply;
use crate::routes::RouteTable;
use crate::session::cookie::{self, Handle};
use crate::session::{SessionStore, StoreError, UserSession};
use crate::snapshot::auth::Auth;
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
    /// Discovered sign-in providers, by key (empty: the global one).
    pub idp: crate::identity::Providers,
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// Identities proven by IdP tokens presented as bearer tokens, for their remaining life.
    pub bearer_cache: idp_bearer::BearerCache,
    /// Workload issuers' key sets (`identity_providers`), kept across reloads.
    pub workload_keys: crate::identity::workload::WorkloadKeys,
    /// Sessions being refreshed, or whose refresh failed for now → earliest next attempt.
    refreshing: DashMap<String, u64>,
    /// When this node last recorded each session's activity (`session_idle_timeout`).
    activity: idle::Activity,
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
            workload_keys: Default::default(),
            idp: Default::default(),
            refreshing: DashMap::new(),
            activity: idle::Activity::default(),
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
    /// The serving snapshot's routes: a target or hand-off for a host no route serves is never
    /// signed, accepted or redeemed.
    pub routes: &'a RouteTable,
    /// Form fields of a POST body.
    pub form: Vec<(String, String)>,
    /// The POST body as sent (JSON for MCP client registration).
    pub body: &'a [u8],
    /// `Authorization` as sent (client credentials at the MCP token endpoint).
    pub authorization: Option<&'a str>,
    /// The client's address (the routes portal asks policies about it).
    pub client_ip: Option<std::net::IpAddr>,
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

/// The cookie `base` for sessions from provider `key`: `base` itself for the global provider
/// (Pomerium's names), `base_<key>` for a route's own.
fn keyed_cookie<'a>(base: &'a str, key: &str) -> std::borrow::Cow<'a, str> {
    match key.is_empty() {
        true => std::borrow::Cow::Borrowed(base),
        false => std::borrow::Cow::Owned(format!("{base}_{key}")),
    }
}

/// The app-host cookie that holds sessions from provider `key`.
pub fn session_cookie<'a>(a: &'a Auth<'_>, key: &str) -> std::borrow::Cow<'a, str> {
    keyed_cookie(&a.cookie.name, key)
}

/// The authenticate-host cookie of provider `key`.
fn auth_cookie<'a>(a: &'a Auth<'_>, key: &str) -> std::borrow::Cow<'a, str> {
    keyed_cookie(auth_cookie_name(a), key)
}

/// The provider keys of a route (the global provider's when it has none of its own: no
/// allocation on that, the common path).
pub fn route_idp_keys(route: &crate::routes::route::Route) -> std::borrow::Cow<'_, [&str]> {
    const GLOBAL: &[&str] = &[""];
    match route.idps.is_empty() {
        true => std::borrow::Cow::Borrowed(GLOBAL),
        false => std::borrow::Cow::Owned(route.idps.iter().map(|i| i.key.as_str()).collect()),
    }
}

/// The provider keys of the routes serving the request's host, the global one first when any
/// route there uses it: the `/.pomerium/` pages of a host read the sessions of those providers.
fn host_idps(req: &Request<'_>) -> Vec<String> {
    let host = req.host.split(':').next().unwrap_or(req.host);
    let mut out: Vec<String> = Vec::new();
    for r in req.routes.for_host(host) {
        for k in route_idp_keys(r).iter() {
            if !out.iter().any(|o| o == k) {
                out.push(k.to_string());
            }
        }
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out.sort_by_key(|k| !k.is_empty());
    out
}

/// The session a request carries on a route host for any of `keys`' providers, in that order.
async fn session_of(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    cookies: Option<&str>,
    keys: &[&str],
    host: &str,
) -> Result<Option<Arc<UserSession>>, SessionError> {
    for key in keys {
        let name = session_cookie(auth, key);
        if let Some(s) = session_for(auth, state, cookies, &name, host).await? {
            if s.idp == *key {
                return Ok(Some(s));
            }
        }
    }
    Ok(None)
}

/// Every session the authenticate host's cookies hold, one per provider (global first).
async fn auth_sessions(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Result<Vec<Arc<UserSession>>, SessionError> {
    let mut keys = state.idp.keys();
    if !keys.iter().any(String::is_empty) {
        keys.push(String::new());
    }
    keys.sort_by_key(|k| !k.is_empty());
    let mut out = Vec::new();
    for key in keys {
        let name = auth_cookie(auth, &key);
        if let Some(s) = session_for(auth, state, req.cookies, &name, req.host).await? {
            out.push(s);
        }
    }
    Ok(out)
}

/// The session of the request's host (`host_idps`).
async fn host_session(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Result<Option<Arc<UserSession>>, SessionError> {
    let idps = host_idps(req);
    let keys: Vec<&str> = idps.iter().map(String::as_str).collect();
    session_of(auth, state, req.cookies, &keys, req.host).await
}

/// The sign-in URL for a `/.pomerium/` page of the request's host.
fn host_sign_in_url(auth: &Auth<'_>, req: &Request<'_>, original: &str) -> Url {
    let idps = host_idps(req);
    let keys: Vec<&str> = idps.iter().map(String::as_str).collect();
    sign_in_url(auth, original, &keys)
}

/// The sign-in parameters that say which provider(s) the route signs in with: none for the
/// global one, `idp` for one of its own, `idp_choices` for a choice. Not signed: they only
/// choose where the user signs in, and the route checks the session's provider anyway.
fn idp_params(keys: &[&str]) -> Vec<(&'static str, String)> {
    match keys {
        [] => vec![],
        [""] => vec![],
        [one] => vec![("idp", one.to_string())],
        many => {
            let keys: Vec<&str> = many
                .iter()
                .map(|k| if k.is_empty() { GLOBAL_CHOICE } else { k })
                .collect();
            vec![("idp_choices", keys.join(","))]
        }
    }
}

/// The global provider in an `idp_choices` list.
const GLOBAL_CHOICE: &str = "global";

/// A return target that is safe (`signed::safe_target`) and on a host one of the routes serves:
/// a link for any other host could carry a user's sign-in hand-off there.
fn routed_target(req: &Request<'_>, target: &str) -> Option<Url> {
    let url = signed::safe_target(target)?;
    let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    req.routes.serves_host(&host).then_some(url)
}

fn bad_request(req: &Request<'_>, detail: &str) -> Reply {
    req.answer.refuse(Refusal::sign_in(
        StatusCode::BAD_REQUEST,
        "Sign-in problem",
        detail.to_string(),
    ))
}

/// Why a request's session cannot be told: the store did not answer (a 503, never a sign-in
/// loop), or the request carries two different live sessions for this host.
#[derive(Debug)]
pub enum SessionError {
    Store(StoreError),
    Ambiguous,
    /// The session went unused past the route's idle timeout and has just been ended.
    Idle,
    /// An MCP access token that does not open here, has expired, is for another resource, or
    /// whose session has ended.
    TokenRejected,
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        SessionError::Store(e)
    }
}

impl From<SessionError> for Refusal {
    fn from(e: SessionError) -> Refusal {
        match e {
            SessionError::Store(_) => Refusal::StoreUnavailable,
            SessionError::Ambiguous => Refusal::AmbiguousSession,
            SessionError::Idle => Refusal::SignInRequired { location: None },
            SessionError::TokenRejected => Refusal::BearerRejected,
        }
    }
}

/// The session a request carries for `host`, if any and still live. Every cookie of Vallum's
/// name counts, not the first: a cookie planted from a sibling subdomain (cookie tossing) must
/// neither win nor hide the user's own. Junk and other hosts' cookies are skipped; two
/// different live sessions are refused rather than picked from.
pub async fn session_for(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    cookies: Option<&str>,
    name: &str,
    host: &str,
) -> Result<Option<Arc<UserSession>>, SessionError> {
    let Some(cookies) = cookies else {
        return Ok(None);
    };
    let now = unix_now();
    let mut found: Option<Arc<UserSession>> = None;
    for value in cookie::find_all(cookies, name) {
        let opened = &auth.keys.opened_cookies;
        let Some(handle) = opened.open(session_key(auth), name, host, value, now) else {
            continue;
        };
        if found.as_ref().is_some_and(|s| s.id == handle.sid) {
            continue;
        }
        match state.store.get(&handle.sid).await {
            Ok(Some(s)) if !s.is_expired(now) => {
                if found.is_some() {
                    tracing::warn!(
                        host,
                        "request refused: two different sessions for one host (cookie tossing?)"
                    );
                    return Err(SessionError::Ambiguous);
                }
                found = Some(s);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "session store lookup failed");
                return Err(e.into());
            }
        }
    }
    if let Some(s) = &found {
        refresh::maybe_refresh(auth, state, s, now);
    }
    Ok(found)
}

/// How long ago the user authenticated at the IdP (the ID token's `auth_time`, else when the
/// session began).
pub fn auth_age(s: &UserSession, now: u64) -> u64 {
    let at = s
        .claims
        .get("auth_time")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(s.issued_at);
    now.saturating_sub(at)
}

/// A sign-in that asks the IdP to authenticate the user afresh (`max_age`, `prompt=login`).
/// `max_age` is a hint the user could strip: the route checks the age again either way.
pub fn reauthenticate_url(
    auth: &Auth<'_>,
    original: &str,
    max: std::time::Duration,
    session_idp: &str,
) -> Url {
    let max = max.as_secs().to_string();
    let mut extra = vec![("max_age", max.as_str())];
    if !session_idp.is_empty() {
        extra.push(("idp", session_idp));
    }
    signed::sign(
        &auth.shared_secret,
        &auth.authenticate_url,
        "/.pomerium/sign_in",
        original,
        &extra,
        unix_now(),
    )
}

/// Where to send a browser that needs to sign in: the signed sign-in URL, with the provider(s)
/// of the route it came from.
pub fn sign_in_url(auth: &Auth<'_>, original: &str, idps: &[&str]) -> Url {
    let params = idp_params(idps);
    let extra: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    signed::sign(
        &auth.shared_secret,
        &auth.authenticate_url,
        "/.pomerium/sign_in",
        original,
        &extra,
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
        "/.pomerium/sign_in" => sign_in::sign_in(auth, state, req).await,
        "/oauth2/callback" => sign_in::oauth_callback(auth, state, req).await,
        "/.pomerium/sign_out" => signout::authenticate_sign_out(auth, state, req).await,
        logout::BACKCHANNEL_PATH => logout::backchannel(state, req).await,
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
        "/.pomerium/callback/" | "/.pomerium/callback" => {
            handoff::route_callback(auth, state, req).await
        }
        "/.pomerium/sign_out" => signout::route_sign_out(auth, state, req).await,
        "/.pomerium/api/v1/login" => programmatic::login_url(auth, req),
        "/.pomerium/programmatic" => programmatic::hand_token(auth, state, req).await,
        "/.pomerium/user" => user::user_json(auth, state, req).await,
        webauthn::PATH => webauthn::route_page(auth, state, req).await,
        "/.pomerium/" => user::user_page(auth, state, req).await,
        "/.pomerium/jwt" if auth.jwt_endpoint => user::jwt_endpoint(auth, state, req).await,
        "/.pomerium/routes" if auth.routes_portal => portal::routes(auth, state, req, false).await,
        "/.pomerium/api/v1/routes" if auth.routes_portal => {
            portal::routes(auth, state, req, true).await
        }
        "/.well-known/pomerium/jwks.json" => user::jwks(auth),
        "/.well-known/pomerium" | "/.well-known/pomerium/" => user::well_known(auth, req),
        // Every other `/.pomerium/` path is Vallum's, never the app's.
        p if p.starts_with("/.pomerium/") => req.answer.refuse(Refusal::NotFound),
        _ => return None,
    })
}

/// `email` and `domain` rules see only an address the IdP verified (`email_verified` exactly
/// `true`), unless the route opts out: anyone can put any address in an unverified account at
/// many IdPs. Compared lower-case.
pub fn verified_email(
    s: Option<&UserSession>,
    allow_unverified: bool,
) -> Option<std::borrow::Cow<'_, str>> {
    let s = s.filter(|s| {
        allow_unverified || s.claims.get("email_verified") == Some(&serde_json::Value::Bool(true))
    })?;
    let e = s.email.as_deref()?;
    Some(match e.bytes().any(|b| b.is_ascii_uppercase()) {
        true => std::borrow::Cow::Owned(e.to_ascii_lowercase()),
        false => std::borrow::Cow::Borrowed(e),
    })
}
