//! Upstream OAuth for MCP servers (`mcp.server.upstream_oauth2`): during an MCP client's
//! authorization, once per user and route, the person is sent to the upstream's authorization
//! server (code + PKCE) and comes back to `/.pomerium/mcp/oauth/callback`; the token is kept in
//! the session store sealed with a key derived from `cookie_secret` (memory, Redis or
//! PostgreSQL alike), refreshed when it is about to expire, and attached to each call the route
//! forwards. The MCP client never sees it, and a client-sent `Authorization` never reaches the
//! upstream.

use super::discovery::{self, Found, Source};
use super::{origin, AuthState, Request};
use crate::authn::{host_session, programmatic::token_host};
use crate::clock::unix_now;
use crate::config::mcp_upstream::UpstreamOAuth2;
use crate::crypto::{random_token, Key};
use crate::respond::refusal::Refusal;
use crate::respond::reply::Reply;
use crate::routes::route::Route;
use crate::session::UserSession;
use crate::snapshot::auth::Auth;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

pub const CALLBACK_PATH: &str = "/.pomerium/mcp/oauth/callback";
/// How long the person may take at the upstream's consent page.
const STATE_TTL: u64 = 600;
/// Refresh this long before the upstream token expires.
const REFRESH_MARGIN: u64 = 30;
/// How long a token with a refresh token is kept unused (one without lives as long as it is valid).
const KEEP_WITH_REFRESH: u64 = 30 * 24 * 3600;

/// The user's upstream token, as stored (sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    access: String,
    refresh: Option<String>,
    exp: Option<u64>,
}

/// The round trip to the upstream's authorization server, sealed into its `state`.
#[derive(Serialize, Deserialize)]
struct Flow {
    route: String,
    user: String,
    verifier: String,
    /// The MCP authorization request to resume.
    back: String,
    exp: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("session store: {0}")]
    Store(#[from] crate::session::StoreError),
    #[error("upstream token endpoint: {0}")]
    Endpoint(String),
    /// The upstream refused the grant (`invalid_grant` and the like): it will not work again.
    #[error("upstream token endpoint refused: {0}")]
    Refused(String),
}

fn http() -> Result<&'static reqwest::Client, UpstreamError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let c =
        crate::identity::bounded::client().map_err(|e| UpstreamError::Endpoint(e.to_string()))?;
    Ok(CLIENT.get_or_init(|| c))
}

/// Whose token: the provider and the user, so equal subjects at two providers never share one.
fn owner(s: &UserSession) -> String {
    format!("{}|{}", s.idp, s.user_id)
}

fn record_key(route: &Route, owner: &str) -> String {
    super::grants::claim_key("upstream", &format!("{}|{owner}", route.id))
}

fn record_ad(route: &Route) -> Vec<u8> {
    format!("vallum-mcp-upstream-token|{}", route.id).into_bytes()
}

async fn load(
    key: &Key,
    state: &AuthState,
    route: &Route,
    owner: &str,
) -> Result<Option<Stored>, UpstreamError> {
    let record = record_key(route, owner);
    Ok(super::get_sealed(key, &*state.store, &record, &record_ad(route)).await?)
}

async fn save(
    key: &Key,
    state: &AuthState,
    route: &Route,
    owner: &str,
    t: &Stored,
) -> Result<(), UpstreamError> {
    let ttl = match (&t.refresh, t.exp) {
        (Some(_), _) | (None, None) => KEEP_WITH_REFRESH,
        (None, Some(exp)) => exp.saturating_sub(unix_now()).max(1),
    };
    let record = record_key(route, owner);
    super::put_sealed(key, &*state.store, &record, &record_ad(route), t, ttl).await?;
    Ok(())
}

/// One request to the upstream's token endpoint.
async fn token_request(
    up: &UpstreamOAuth2,
    mut form: Vec<(&str, String)>,
) -> Result<Stored, UpstreamError> {
    let mut req = http()?
        .post(up.token_url.clone())
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    match (up.credentials_in_params, up.client_secret.is_empty()) {
        // A public client (registered by discovery): PKCE, and its id.
        (_, true) => form.push(("client_id", up.client_id.clone())),
        (true, false) => {
            form.push(("client_id", up.client_id.clone()));
            form.push(("client_secret", up.client_secret.clone()));
        }
        (false, false) => req = req.basic_auth(&up.client_id, Some(&up.client_secret)),
    }
    if let Some(r) = &up.resource {
        form.push(("resource", r.clone()));
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| UpstreamError::Endpoint(e.to_string()))?;
    let status = resp.status();
    let bytes = crate::identity::bounded::read_body(resp)
        .await
        .map_err(|e| UpstreamError::Endpoint(e.to_string()))?;
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        refresh_token: Option<String>,
        expires_in: Option<u64>,
        error: Option<String>,
    }
    let a: Answer = serde_json::from_slice(&bytes)
        .map_err(|_| UpstreamError::Endpoint(format!("{status}: not an OAuth token response")))?;
    match (a.access_token, status.is_success()) {
        (Some(access), true) => Ok(Stored {
            access,
            refresh: a.refresh_token,
            exp: a.expires_in.map(|s| unix_now() + s),
        }),
        (_, false) if status.is_client_error() && a.error.is_some() => Err(UpstreamError::Refused(
            format!("{status}: {}", a.error.unwrap_or_default()),
        )),
        _ => Err(UpstreamError::Endpoint(format!(
            "{status}: {}",
            a.error.unwrap_or_else(|| "no access_token".into())
        ))),
    }
}

/// Whether the route's MCP server takes its users' own tokens (configured or discovered).
pub fn applies(auth: &Auth<'_>, route: &Route) -> bool {
    !matches!(discovery::source(auth, route), Source::None)
}

/// The route's upstream OAuth client: configured, or as discovery found it (`discover`: find
/// and register it now if it is not known yet, with Vallum's callback on `origin`). `None`: the
/// server needs no token (or, without `discover`, nothing is known yet: `Ok(Err(()))`).
async fn oauth_of<'r>(
    auth: &Auth<'_>,
    state: &AuthState,
    route: &'r Route,
    discover: Option<&str>,
) -> Result<Result<Option<Cow<'r, UpstreamOAuth2>>, ()>, UpstreamError> {
    let found = match (discovery::source(auth, route), discover) {
        (Source::None, _) => return Ok(Ok(None)),
        (Source::Configured(up), _) => return Ok(Ok(Some(Cow::Borrowed(up)))),
        (_, Some(origin)) => {
            let callback = format!("{origin}{CALLBACK_PATH}");
            Some(discovery::resolve(auth, &*state.store, route, &callback).await?)
        }
        (_, None) => discovery::known(&auth.keys.mcp_key, &*state.store, route).await?,
    };
    Ok(match found {
        None => Err(()),
        Some(Found::NoOAuth) => Ok(None),
        Some(Found::Client(c)) => Ok(c.oauth().map(Cow::Owned)),
    })
}

/// Whether `s` has what the route's MCP server needs from them: nothing, or their upstream
/// token (checked before tokens are issued, so a client whose grant is gone is sent back to
/// authorization rather than refreshed).
pub(super) async fn granted(
    auth: &Auth<'_>,
    state: &AuthState,
    route: &Route,
    s: &UserSession,
) -> Result<bool, UpstreamError> {
    match oauth_of(auth, state, route, None).await? {
        Ok(None) => Ok(true),
        Err(()) => Ok(false),
        Ok(Some(_)) => Ok(load(&auth.keys.mcp_key, state, route, &owner(s))
            .await?
            .is_some()),
    }
}

/// Drops the user's upstream token for `route` (the client app's "disconnect").
pub(super) async fn forget(
    state: &AuthState,
    route: &Route,
    s: &UserSession,
) -> Result<(), UpstreamError> {
    state
        .store
        .delete_record(&record_key(route, &owner(s)))
        .await?;
    Ok(())
}

/// During `/authorize`: the redirect to the upstream's consent, when the route needs a token
/// from this user that Vallum does not hold yet.
pub(super) async fn consent(
    auth: &Auth<'_>,
    state: &AuthState,
    req: &Request<'_>,
    route: &Route,
    s: &UserSession,
    back: String,
) -> Result<Option<Reply>, UpstreamError> {
    let Ok(Some(up)) = oauth_of(auth, state, route, Some(&origin(req))).await? else {
        return Ok(None);
    };
    if load(&auth.keys.mcp_key, state, route, &owner(s))
        .await?
        .is_some()
    {
        return Ok(None);
    }
    let verifier = random_token(32);
    let flow = Flow {
        route: route.id.to_string(),
        user: owner(s),
        verifier: verifier.clone(),
        back,
        exp: unix_now() + STATE_TTL,
    };
    let sealed = auth.keys.mcp_key.seal(
        &serde_json::to_vec(&flow).unwrap_or_default(),
        &flow_ad(req),
    );
    let mut to = up.auth_url.clone();
    to.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &up.client_id)
        .append_pair("redirect_uri", &format!("{}{CALLBACK_PATH}", origin(req)))
        .append_pair("state", &sealed)
        .append_pair("code_challenge", &challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    if !up.scopes.is_empty() {
        to.query_pairs_mut()
            .append_pair("scope", &up.scopes.join(" "));
    }
    if let Some(r) = &up.resource {
        to.query_pairs_mut().append_pair("resource", r);
    }
    tracing::info!(route_id = %route.id, "MCP authorization: asking the upstream for the user's token");
    Ok(Some(Reply::found(to.as_str())))
}

fn flow_ad(req: &Request<'_>) -> Vec<u8> {
    format!("vallum-mcp-upstream-flow|{}", token_host(req.host)).into_bytes()
}

fn challenge(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// The answer when the MCP server's own authorization cannot go ahead: the store did not
/// answer (503), or its authorization server could not be found or used (502, saying why).
pub(super) fn problem(req: &Request<'_>, e: &UpstreamError) -> Reply {
    match e {
        UpstreamError::Store(_) => {
            tracing::error!(error = %e, "MCP upstream authorization: the session store did not answer");
            req.answer.refuse(Refusal::StoreUnavailable)
        }
        _ => super::problem_page(
            req,
            StatusCode::BAD_GATEWAY,
            format!("the MCP server's own authorization could not be used: {e}"),
        ),
    }
}

fn callback_problem(req: &Request<'_>, detail: &str) -> Reply {
    super::problem_page(req, StatusCode::BAD_REQUEST, detail.to_string())
}

/// `GET /.pomerium/mcp/oauth/callback`: the upstream's answer. Only the person who started the
/// flow (the same user's session on this host) can complete it.
pub(super) async fn callback(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let key = &auth.keys.mcp_key;
    let flow: Option<Flow> = req
        .param("state")
        .and_then(|s| key.open(s, &flow_ad(req)))
        .and_then(|p| serde_json::from_slice(&p).ok());
    let Some(flow) = flow.filter(|f| f.exp > unix_now()) else {
        return callback_problem(
            req,
            "this authorization has expired or is not valid here; start again",
        );
    };
    if let Some(e) = req.param("error") {
        return callback_problem(req, &format!("the upstream refused: {e}"));
    }
    let session = match host_session(auth, state, req).await {
        Ok(Some(s)) if owner(&s) == flow.user => s,
        Ok(_) => {
            return callback_problem(req, "signed in as someone else, or not at all; start again")
        }
        Err(e) => return req.answer.refuse(e.into()),
    };
    let host = req.host.split(':').next().unwrap_or(req.host);
    let Some(route) = req.routes.for_host(host).find(|r| *r.id == *flow.route) else {
        return callback_problem(req, "the route changed meanwhile; start again");
    };
    let up = match oauth_of(auth, state, route, None).await {
        Ok(Ok(Some(up))) => up,
        Ok(_) => return callback_problem(req, "the route no longer uses upstream OAuth"),
        Err(e) => {
            tracing::error!(error = %e, "MCP upstream callback: client unknown");
            return req.answer.refuse(Refusal::StoreUnavailable);
        }
    };
    let form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", req.param("code").unwrap_or_default().to_string()),
        ("redirect_uri", format!("{}{CALLBACK_PATH}", origin(req))),
        ("code_verifier", flow.verifier.clone()),
    ];
    let stored = match token_request(&up, form).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(route_id = %route.id, error = %e, "MCP upstream token exchange failed");
            return callback_problem(req, "the upstream did not issue a token");
        }
    };
    if let Err(e) = save(key, state, route, &owner(&session), &stored).await {
        tracing::error!(error = %e, "MCP upstream token not kept");
        return req.answer.refuse(Refusal::StoreUnavailable);
    }
    tracing::info!(route_id = %route.id, session_id = %session.id, "MCP upstream token granted");
    Reply::found(&flow.back)
}

/// What a call on an MCP route carries upstream.
pub enum Upstream {
    /// The server takes no token of the user's (or none is known to be needed).
    NotNeeded,
    /// The user's token, refreshed when it was due.
    Token(Arc<str>),
    /// The user has not granted one (or it was refused at refresh): the client must authorize
    /// again, and the person grant access again.
    Missing,
}

/// The user's upstream token for a call on `route`.
pub async fn token_for(
    auth: &Auth<'_>,
    state: &AuthState,
    route: &Route,
    s: &UserSession,
) -> Result<Upstream, UpstreamError> {
    let up = match oauth_of(auth, state, route, None).await? {
        Ok(Some(up)) => up,
        Ok(None) => return Ok(Upstream::NotNeeded),
        Err(()) => return Ok(Upstream::Missing),
    };
    let (key, who) = (&auth.keys.mcp_key, owner(s));
    let Some(t) = load(key, state, route, &who).await? else {
        return Ok(Upstream::Missing);
    };
    let now = unix_now();
    let due = t.exp.is_some_and(|e| e <= now + REFRESH_MARGIN);
    let current = || match t.exp.is_none_or(|e| e > now) {
        true => Upstream::Token(Arc::from(t.access.as_str())),
        false => Upstream::Missing,
    };
    if !due {
        return Ok(current());
    }
    let Some(refresh) = t.refresh.clone() else {
        return Ok(current());
    };
    // Each refresh token is used once across the fleet (providers that rotate them accept each
    // once); a request that loses the race uses the current token while it lasts. The claim
    // lapses after 10 s, so a provider that keeps its refresh token can be asked again.
    let lease = super::grants::claim_key("upstream-refresh", &refresh);
    if !state.store.claim_once(&lease, 10).await? {
        return Ok(current());
    }
    let form = vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", refresh.clone()),
    ];
    match token_request(&up, form).await {
        Ok(mut fresh) => {
            fresh.refresh = fresh.refresh.or(Some(refresh));
            save(key, state, route, &who, &fresh).await?;
            tracing::info!(route_id = %route.id, "MCP upstream token refreshed");
            Ok(Upstream::Token(Arc::from(fresh.access.as_str())))
        }
        Err(UpstreamError::Refused(e)) => {
            tracing::warn!(route_id = %route.id, error = %e, "MCP upstream token refresh refused; the user must grant access again");
            state.store.delete_record(&record_key(route, &who)).await?;
            Ok(Upstream::Missing)
        }
        Err(e) => Err(e),
    }
}
