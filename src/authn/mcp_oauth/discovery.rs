//! Finding an MCP server's own authorization server when the route does not configure its
//! OAuth client (`upstream_oauth2`), as Pomerium does: at `authorization_server_url`, or (with
//! `mcp_allowed_as_metadata_domains`) where the server's protected-resource metadata (RFC 9728)
//! points. Vallum reads that server's metadata (RFC 8414), registers itself as a public client
//! there (RFC 7591, PKCE), and from then on treats the route like an `upstream_oauth2` route.
//! The outcome is kept in the session store per route, so every node of a fleet uses the one
//! registration; a server without protected-resource metadata is remembered for an hour as
//! needing no token.
//!
//! Trust: a configured `authorization_server_url` (and the route's own upstream) is the
//! operator's choice and may be internal; an authorization server named by the upstream's
//! metadata is fetched only on an allowed domain and a public address (`cimd::fetch_public`).

use super::cimd;
use super::upstream::UpstreamError;
use crate::config::mcp_upstream::UpstreamOAuth2;
use crate::crypto::Key;
use crate::routes::route::{Action, Route};
use crate::session::SessionStore;
use crate::snapshot::auth::Auth;
use serde::{Deserialize, Serialize};
use url::Url;

/// How long "this server needs no token" is believed.
const NO_OAUTH_TTL: u64 = 3600;
const MAX_METADATA: usize = 64 * 1024;

/// How a route's MCP server gets its users' tokens.
pub enum Source<'r> {
    /// No upstream OAuth.
    None,
    /// `upstream_oauth2`.
    Configured(&'r UpstreamOAuth2),
    /// Discovered at this authorization server.
    At(&'r Url),
    /// Discovered from the upstream's protected-resource metadata.
    FromResourceMetadata,
}

pub fn source<'r>(auth: &Auth<'_>, route: &'r Route) -> Source<'r> {
    let Some(m) = route.mcp.as_deref() else {
        return Source::None;
    };
    match (&m.upstream_oauth2, &m.authorization_server) {
        (Some(up), _) => Source::Configured(up),
        (None, Some(url)) => Source::At(url),
        (None, None) if !auth.mcp.as_metadata_domains.is_empty() => Source::FromResourceMetadata,
        (None, None) => Source::None,
    }
}

/// What discovery found, as stored (sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Found {
    /// The server publishes no protected-resource metadata: it needs no token.
    NoOAuth,
    Client(Client),
}

/// A registration at the upstream's authorization server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    auth_url: String,
    token_url: String,
    scopes: Vec<String>,
    resource: Option<String>,
    redirect_uri: String,
}

impl Client {
    /// As the OAuth client the upstream flow uses.
    pub fn oauth(&self) -> Option<UpstreamOAuth2> {
        Some(UpstreamOAuth2 {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone().unwrap_or_default(),
            scopes: self.scopes.clone(),
            auth_url: Url::parse(&self.auth_url).ok()?,
            token_url: Url::parse(&self.token_url).ok()?,
            credentials_in_params: self.client_secret.is_some(),
            resource: self.resource.clone(),
        })
    }
}

fn record_key(route: &Route) -> String {
    super::grants::claim_key("upstream-as", &route.id)
}

fn ad(route: &Route) -> Vec<u8> {
    format!("vallum-mcp-upstream-as|{}", route.id).into_bytes()
}

/// What a previous discovery for this route found, if it is still kept.
pub async fn known(
    key: &Key,
    store: &dyn SessionStore,
    route: &Route,
) -> Result<Option<Found>, UpstreamError> {
    Ok(super::get_sealed(key, store, &record_key(route), &ad(route)).await?)
}

async fn keep(
    key: &Key,
    store: &dyn SessionStore,
    route: &Route,
    found: &Found,
) -> Result<(), UpstreamError> {
    let ttl = match found {
        Found::NoOAuth => NO_OAUTH_TTL,
        Found::Client(_) => 0,
    };
    super::put_sealed(key, store, &record_key(route), &ad(route), found, ttl).await?;
    Ok(())
}

/// The route's upstream OAuth client, discovering and registering it when none is kept (or the
/// kept one was made for another authorization server or callback). `callback`: Vallum's
/// redirect URI on the route's host.
pub async fn resolve(
    auth: &Auth<'_>,
    store: &dyn SessionStore,
    route: &Route,
    callback: &str,
) -> Result<Found, UpstreamError> {
    let key = &auth.keys.mcp_key;
    let wanted_issuer = match source(auth, route) {
        Source::At(url) => Some(url.as_str().trim_end_matches('/').to_string()),
        _ => None,
    };
    match known(key, store, route).await? {
        Some(Found::Client(c))
            if c.redirect_uri == callback
                && wanted_issuer.as_ref().is_none_or(|w| *w == c.issuer) =>
        {
            return Ok(Found::Client(c));
        }
        Some(Found::NoOAuth) if wanted_issuer.is_none() => return Ok(Found::NoOAuth),
        _ => {}
    }
    let found = discover(auth, route, wanted_issuer, callback).await?;
    keep(key, store, route, &found).await?;
    Ok(found)
}

fn fail(what: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Endpoint(what.to_string())
}

/// The route's upstream as a URL (its first `to`).
fn upstream_url(route: &Route) -> Option<Url> {
    let Action::Upstream(pool) = &route.action else {
        return None;
    };
    let t = pool.targets.first()?;
    let scheme = if t.tls { "https" } else { "http" };
    Url::parse(&format!("{scheme}://{}{}", t.authority, t.path_prefix)).ok()
}

async fn discover(
    auth: &Auth<'_>,
    route: &Route,
    issuer: Option<String>,
    callback: &str,
) -> Result<Found, UpstreamError> {
    let (issuer, resource, scopes, trusted) = match issuer {
        Some(i) => (i, None, Vec::new(), true),
        None => {
            let Some(prm) = resource_metadata(route).await else {
                tracing::info!(route_id = %route.id, "MCP upstream publishes no protected-resource metadata: no token needed");
                return Ok(Found::NoOAuth);
            };
            (prm.issuer, Some(prm.resource), prm.scopes, false)
        }
    };
    let issuer_url = Url::parse(&issuer)
        .map_err(|_| fail(format!("authorization server {issuer:?} is not a URL")))?;
    if !trusted {
        let host = issuer_url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if issuer_url.scheme() != "https"
            || !crate::config::mcp_auth::domain_allowed(&auth.mcp.as_metadata_domains, &host)
        {
            return Err(fail(format!(
                "the upstream's authorization server {host} is not an https URL on mcp_allowed_as_metadata_domains"
            )));
        }
    }
    let md = server_metadata(&issuer_url, trusted).await?;
    let resource = resource.or_else(|| upstream_url(route).map(|u| resource_of(&u, route)));
    let (client_id, client_secret) = register(&md.registration_endpoint, callback, trusted).await?;
    tracing::info!(route_id = %route.id, issuer = %issuer, "MCP upstream: registered with its authorization server");
    Ok(Found::Client(Client {
        issuer: issuer.trim_end_matches('/').to_string(),
        client_id,
        client_secret,
        auth_url: md.authorization_endpoint,
        token_url: md.token_endpoint,
        scopes: if scopes.is_empty() { md.scopes } else { scopes },
        resource,
        redirect_uri: callback.to_string(),
    }))
}

/// The upstream's MCP endpoint, the resource its tokens are for.
fn resource_of(upstream: &Url, route: &Route) -> String {
    let mut u = upstream.clone();
    if let Some(p) = route.mcp.as_ref().and_then(|m| m.path.as_deref()) {
        u.set_path(&format!("{}{p}", u.path().trim_end_matches('/')));
    }
    u.to_string()
}

struct ResourceMetadata {
    issuer: String,
    resource: String,
    scopes: Vec<String>,
}

/// RFC 9728 from the route's upstream (the operator's own server: not restricted).
async fn resource_metadata(route: &Route) -> Option<ResourceMetadata> {
    #[derive(Deserialize)]
    struct Prm {
        resource: String,
        authorization_servers: Vec<String>,
        scopes_supported: Option<Vec<String>>,
    }
    let upstream = upstream_url(route)?;
    let origin = upstream.origin().ascii_serialization();
    let path = resource_of(&upstream, route);
    let path = Url::parse(&path)
        .ok()?
        .path()
        .trim_end_matches('/')
        .to_string();
    let mut candidates = vec![format!(
        "{origin}/.well-known/oauth-protected-resource{path}"
    )];
    if !path.is_empty() {
        candidates.push(format!("{origin}/.well-known/oauth-protected-resource"));
    }
    for c in candidates {
        let Ok(body) = get(&c, true).await else {
            continue;
        };
        if let Ok(p) = serde_json::from_slice::<Prm>(&body) {
            let issuer = p.authorization_servers.into_iter().next()?;
            return Some(ResourceMetadata {
                issuer,
                resource: p.resource,
                scopes: p.scopes_supported.unwrap_or_default(),
            });
        }
    }
    None
}

struct ServerMetadata {
    authorization_endpoint: String,
    token_endpoint: String,
    registration_endpoint: String,
    scopes: Vec<String>,
}

/// RFC 8414 (or OpenID discovery) at the places the MCP spec lists, in its order.
async fn server_metadata(issuer: &Url, trusted: bool) -> Result<ServerMetadata, UpstreamError> {
    #[derive(Deserialize)]
    struct Md {
        authorization_endpoint: String,
        token_endpoint: String,
        registration_endpoint: Option<String>,
        code_challenge_methods_supported: Option<Vec<String>>,
        scopes_supported: Option<Vec<String>>,
    }
    let origin = issuer.origin().ascii_serialization();
    let path = issuer.path().trim_end_matches('/');
    let candidates = match path.is_empty() {
        true => vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ],
        false => vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ],
    };
    let mut last = String::from("no metadata");
    for c in candidates {
        let md = match get(&c, trusted)
            .await
            .map(|b| serde_json::from_slice::<Md>(&b))
        {
            Ok(Ok(md)) => md,
            Ok(Err(e)) => {
                last = format!("{c}: {e}");
                continue;
            }
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        if !md
            .code_challenge_methods_supported
            .unwrap_or_default()
            .iter()
            .any(|m| m == "S256")
        {
            return Err(fail(format!(
                "{c}: the authorization server does not support PKCE S256"
            )));
        }
        let Some(registration_endpoint) = md.registration_endpoint else {
            return Err(fail(format!(
                "{c}: the authorization server offers no dynamic registration; configure upstream_oauth2 with a client registered there"
            )));
        };
        return Ok(ServerMetadata {
            authorization_endpoint: md.authorization_endpoint,
            token_endpoint: md.token_endpoint,
            registration_endpoint,
            scopes: md.scopes_supported.unwrap_or_default(),
        });
    }
    Err(fail(format!(
        "authorization server metadata not found ({last})"
    )))
}

/// RFC 7591: Vallum as a public client with its callback on the route's host.
async fn register(
    endpoint: &str,
    callback: &str,
    trusted: bool,
) -> Result<(String, Option<String>), UpstreamError> {
    #[derive(Deserialize)]
    struct Registered {
        client_id: String,
        client_secret: Option<String>,
    }
    let url = Url::parse(endpoint).map_err(|_| fail("registration_endpoint is not a URL"))?;
    if !trusted {
        // The same rule as the metadata it came from.
        cimd::check_public(&url).await.map_err(fail)?;
    }
    let body = serde_json::json!({
        "client_name": "Vallum",
        "redirect_uris": [callback],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let http = crate::identity::bounded::client().map_err(fail)?;
    let resp = http
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(fail)?;
    let status = resp.status();
    let bytes = crate::identity::bounded::read_body(resp)
        .await
        .map_err(fail)?;
    if !status.is_success() {
        return Err(fail(format!(
            "registration refused ({status}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )));
    }
    let r: Registered = serde_json::from_slice(&bytes).map_err(fail)?;
    Ok((r.client_id, r.client_secret))
}

/// One metadata GET: through the SSRF-safe fetch unless the place is trusted.
async fn get(url: &str, trusted: bool) -> Result<Vec<u8>, UpstreamError> {
    let u = Url::parse(url).map_err(fail)?;
    if !trusted {
        return cimd::fetch_public(&u, MAX_METADATA).await.map_err(fail);
    }
    let http = crate::identity::bounded::client().map_err(fail)?;
    let resp = http
        .get(u)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(fail)?;
    if resp.status() != http::StatusCode::OK {
        return Err(fail(format!("{url}: status {}", resp.status())));
    }
    crate::identity::bounded::read_body(resp)
        .await
        .map_err(fail)
}
