//! The OAuth 2.1 authorization server MCP clients expect (MCP authorization spec, 2025-06-18 and
//! later), on the host of every MCP server route, with Pomerium's paths:
//!
//! - `/.well-known/oauth-protected-resource[/<path>]` (RFC 9728) names the resource and this
//!   host as its authorization server; an MCP request without a token gets a `401` whose
//!   `WWW-Authenticate: Bearer resource_metadata="…"` points there.
//! - `/.well-known/oauth-authorization-server` (RFC 8414).
//! - `/.pomerium/mcp/register` (RFC 7591, when `runtime_flags.mcp_dynamic_client_registration`).
//! - `/.pomerium/mcp/authorize`: code + PKCE (S256 only). The person signs in through the
//!   route's identity provider as for any route; the code is a handle on that session.
//! - `/.pomerium/mcp/token`: the code for an access token and a refresh token, both bound to
//!   the resource (RFC 8707) and to the session, so sign-out ends them on every node.
//! - `/.pomerium/mcp/revoke` (RFC 7009) for refresh tokens.

mod authorize;
pub mod cimd;
pub mod clients;
mod consent;
mod discovery;
pub mod grants;
mod servers;
mod token;
pub mod upstream;

use super::{AuthState, Request};
use crate::respond::reply::Reply;
use crate::routes::route::Route;
use crate::snapshot::auth::Auth;
use http::header::HeaderValue;
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;

pub use token::{access_token, delegated_token, session_for_access_token};

pub const PROTECTED_RESOURCE_PATH: &str = "/.well-known/oauth-protected-resource";
pub const AUTHORIZATION_SERVER_PATH: &str = "/.well-known/oauth-authorization-server";
const PREFIX: &str = "/.pomerium/mcp/";

/// Whether the request is for one of these endpoints on a host with an MCP server route.
pub fn is_endpoint(
    auth: &Auth<'_>,
    routes: &crate::routes::RouteTable,
    host: &str,
    path: &str,
) -> bool {
    auth.mcp.enabled
        && (path.starts_with(PREFIX)
            || path == AUTHORIZATION_SERVER_PATH
            || path == PROTECTED_RESOURCE_PATH
            || path.starts_with("/.well-known/oauth-protected-resource/"))
        && has_mcp_route(routes, host)
}

fn has_mcp_route(routes: &crate::routes::RouteTable, host: &str) -> bool {
    let host = host.split(':').next().unwrap_or(host);
    routes
        .for_host(host)
        .any(|r| r.mcp.is_some() || r.mcp_client)
}

/// Serves the endpoint `is_endpoint` recognised.
pub async fn serve(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    if req.method == http::Method::OPTIONS {
        return cors(Reply::text(StatusCode::NO_CONTENT, bytes::Bytes::new()));
    }
    let get = req.method == http::Method::GET;
    let post = req.method == http::Method::POST;
    let reply = match req.path {
        AUTHORIZATION_SERVER_PATH if get => {
            Reply::json(StatusCode::OK, &server_metadata(auth, req))
        }
        p if get && (p == PROTECTED_RESOURCE_PATH || p.starts_with(PROTECTED_RESOURCE_PATH)) => {
            let path = &p[PROTECTED_RESOURCE_PATH.len()..];
            Reply::json(StatusCode::OK, &resource_metadata(req, path))
        }
        "/.pomerium/mcp/register" if post && auth.mcp.dynamic_registration => register(auth, req),
        "/.pomerium/mcp/authorize" if get || post => {
            return authorize::authorize(auth, state, req).await
        }
        upstream::CALLBACK_PATH if get => return upstream::callback(auth, state, req).await,
        servers::ROUTES_PATH if get => servers::routes(auth, state, req).await,
        servers::CONNECT_PATH if get => return servers::connect(auth, state, req).await,
        servers::DISCONNECT_PATH if post => servers::disconnect(auth, state, req).await,
        "/.pomerium/mcp/token" if post => token::token(auth, state, req).await,
        "/.pomerium/mcp/revoke" if post => token::revoke(auth, state, req).await,
        _ => oauth_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    };
    cors(reply)
}

/// The metadata and token endpoints are read by MCP clients running in browsers too.
fn cors(reply: Reply) -> Reply {
    reply
        .with_header(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        )
        .with_header(
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        )
        .with_header(
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, mcp-protocol-version"),
        )
}

/// `https://host[:port]`, the issuer and the origin of every resource on this host.
fn origin(req: &Request<'_>) -> String {
    format!("{}://{}", req.scheme, req.host)
}

fn server_metadata(auth: &Auth<'_>, req: &Request<'_>) -> serde_json::Value {
    let o = origin(req);
    let mut md = json!({
        "issuer": o,
        "authorization_endpoint": format!("{o}/.pomerium/mcp/authorize"),
        "token_endpoint": format!("{o}/.pomerium/mcp/token"),
        "revocation_endpoint": format!("{o}/.pomerium/mcp/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": !auth.mcp.client_id_domains.is_empty(),
    });
    if auth.mcp.dynamic_registration {
        md["registration_endpoint"] = json!(format!("{o}/.pomerium/mcp/register"));
    }
    md
}

fn resource_metadata(req: &Request<'_>, path: &str) -> serde_json::Value {
    let o = origin(req);
    json!({
        "resource": format!("{o}{path}"),
        "authorization_servers": [o],
        "bearer_methods_supported": ["header"],
        "resource_name": req.host,
    })
}

/// The `WWW-Authenticate` value for an MCP request without a usable token (`invalid`: it
/// carried one that was refused).
pub fn challenge(scheme: &str, host: &str, path: &str, invalid: bool) -> String {
    let path = if path == "/" { "" } else { path };
    // Inside a quoted-string: the two characters that could end or escape it, encoded.
    let path = path.replace('"', "%22").replace('\\', "%5C");
    let error = if invalid {
        "error=\"invalid_token\", "
    } else {
        ""
    };
    format!("Bearer {error}resource_metadata=\"{scheme}://{host}{PROTECTED_RESOURCE_PATH}{path}\"")
}

/// The resource a token is for must be on this route: same host (the seal binds it) and a path
/// the route serves.
pub fn resource_fits(resource: &str, route: &Route) -> bool {
    let Ok(u) = url::Url::parse(resource) else {
        return false;
    };
    route.path.matches(u.path())
}

/// The MCP route of this host that serves `resource` (an URL on this host's origin).
fn resource_route<'r>(req: &'r Request<'_>, resource: &str) -> Option<&'r Arc<Route>> {
    let rest = resource.strip_prefix(&origin(req))?;
    if !(rest.is_empty() || rest.starts_with('/')) || rest.contains(['?', '#']) {
        return None;
    }
    let path = if rest.is_empty() { "/" } else { rest };
    let host = req.host.split(':').next().unwrap_or(req.host);
    req.routes
        .for_host(host)
        .find(|r| r.mcp.is_some() && r.path.matches(path))
}

/// A client: one this gateway registered (its sealed id), or one its metadata document
/// describes (an HTTPS client id on `mcp_allowed_client_id_domains`); else why not.
async fn find_client(auth: &Auth<'_>, id: &str) -> Result<clients::Client, String> {
    if cimd::is_metadata_url(id) {
        let now = crate::clock::unix_now();
        return cimd::client(id, &auth.mcp.client_id_domains, now)
            .await
            .map_err(|e| e.to_string());
    }
    clients::find(&auth.keys.mcp_key, id)
        .ok_or_else(|| "this client is not registered with this gateway".to_string())
}

/// A problem with an agent's authorization shown to the person in the browser (never sent to
/// a redirect URI that could not be checked).
fn problem_page(req: &Request<'_>, status: StatusCode, detail: String) -> Reply {
    tracing::info!(reason = %detail, "MCP authorization refused");
    req.answer.refuse(crate::respond::refusal::Refusal::sign_in(
        status,
        "Agent authorization problem",
        detail,
    ))
}

/// The MCP endpoint's path on a route: `mcp.server.path`, else the route's own path prefix;
/// empty for the whole host.
fn mcp_path(route: &Route) -> String {
    use crate::routes::route::PathMatch;
    match (
        route.mcp.as_ref().and_then(|m| m.path.as_deref()),
        &route.path,
    ) {
        (Some(p), _) => p.to_string(),
        (None, PathMatch::Prefix(p) | PathMatch::Exact(p)) if p != "/" => p.clone(),
        _ => String::new(),
    }
}

/// A value kept in the session store sealed with the MCP key and bound to `ad` (no store, and
/// no one reading it, sees it in the clear); `None` when absent or not openable.
async fn get_sealed<T: serde::de::DeserializeOwned>(
    key: &crate::crypto::Key,
    store: &dyn crate::session::SessionStore,
    record: &str,
    ad: &[u8],
) -> Result<Option<T>, crate::session::StoreError> {
    let Some(raw) = store.get_record(record).await? else {
        return Ok(None);
    };
    let plain = std::str::from_utf8(&raw).ok().and_then(|s| key.open(s, ad));
    Ok(plain.and_then(|p| serde_json::from_slice(&p).ok()))
}

/// Keeps `value` as `get_sealed` reads it; `ttl` in seconds (0: until deleted).
async fn put_sealed<T: serde::Serialize>(
    key: &crate::crypto::Key,
    store: &dyn crate::session::SessionStore,
    record: &str,
    ad: &[u8],
    value: &T,
    ttl: u64,
) -> Result<(), crate::session::StoreError> {
    let sealed = key.seal(&serde_json::to_vec(value).unwrap_or_default(), ad);
    store.put_record(record, sealed.into_bytes(), ttl).await
}

/// The value of `Authorization: Bearer <value>`, trimmed.
fn bearer(authorization: &str) -> Option<&str> {
    authorization.trim().strip_prefix("Bearer ").map(str::trim)
}

/// An OAuth error response (RFC 6749 §5.2), never cached.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Reply {
    no_store(Reply::json(
        status,
        &json!({ "error": error, "error_description": description }),
    ))
}

fn no_store(reply: Reply) -> Reply {
    reply
        .with_header(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        )
        .with_header(http::header::PRAGMA, HeaderValue::from_static("no-cache"))
}

fn register(auth: &Auth<'_>, req: &Request<'_>) -> Reply {
    let key = &auth.keys.mcp_key;
    match clients::register(key, req.body, crate::clock::unix_now()) {
        Ok((id, client)) => {
            tracing::info!(
                client = client.name.as_deref().unwrap_or(""),
                "MCP client registered"
            );
            no_store(Reply::json(
                StatusCode::CREATED,
                &clients::registration_response(key, &id, &client),
            ))
        }
        Err(r) => {
            tracing::info!(error = r.error, reason = %r.description, "MCP client registration refused");
            oauth_error(StatusCode::BAD_REQUEST, r.error, &r.description)
        }
    }
}
