//! `mcp.server.upstream_oauth2` (Pomerium's): the MCP server behind the route wants its own
//! OAuth token (GitHub, Notion, an internal API). Vallum is the OAuth client: each user grants
//! access once, during the MCP client's authorization, and Vallum attaches that user's token to
//! every call it forwards. Pre-registered clients only (`client_id`, `client_secret`,
//! `endpoint`).

use super::error::Errors;
use super::secret::Secret;
use serde::Deserialize;
use url::Url;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamOAuth2 {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub scopes: Option<Vec<String>>,
    pub endpoint: Option<RawEndpoint>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub auth_url: Option<String>,
    pub token_url: Option<String>,
    /// `in_params` (`client_secret_post`), `in_header` (HTTP Basic) or `auto` (= `in_header`).
    pub auth_style: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamOAuth2 {
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub auth_url: Url,
    pub token_url: Url,
    /// Client credentials in the token request's form rather than in `Authorization: Basic`.
    pub credentials_in_params: bool,
    /// The RFC 8707 `resource` to ask tokens for (discovered servers); none when configured.
    pub resource: Option<String>,
}

fn absolute(raw: Option<&str>, key: String, errs: &mut Errors) -> Option<Url> {
    match raw.map(Url::parse) {
        Some(Ok(u)) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => Some(u),
        Some(_) => {
            errs.push(key, "must be an absolute http(s) URL");
            None
        }
        None => {
            errs.push(key, "is required");
            None
        }
    }
}

pub fn compile(raw: &RawUpstreamOAuth2, key: &str, errs: &mut Errors) -> Option<UpstreamOAuth2> {
    let k = |f: &str| format!("{key}.{f}");
    let client_id = raw.client_id.clone().filter(|c| !c.is_empty());
    if client_id.is_none() {
        errs.push(
            k("client_id"),
            "is required (Vallum uses a client registered with the upstream's authorization server)",
        );
    }
    let endpoint = raw.endpoint.as_ref();
    if endpoint.is_none() {
        errs.push(k("endpoint"), "needs auth_url and token_url");
    }
    let auth_url =
        endpoint.and_then(|e| absolute(e.auth_url.as_deref(), k("endpoint.auth_url"), errs));
    let token_url =
        endpoint.and_then(|e| absolute(e.token_url.as_deref(), k("endpoint.token_url"), errs));
    let credentials_in_params = match endpoint.and_then(|e| e.auth_style.as_deref()) {
        None | Some("auto") | Some("in_header") => false,
        Some("in_params") => true,
        Some(_) => {
            errs.push(
                k("endpoint.auth_style"),
                "must be auto, in_header or in_params",
            );
            false
        }
    };
    Some(UpstreamOAuth2 {
        client_id: client_id?,
        client_secret: raw
            .client_secret
            .as_deref()
            .map(str::to_string)
            .unwrap_or_default(),
        scopes: raw.scopes.clone().unwrap_or_default(),
        auth_url: auth_url?,
        token_url: token_url?,
        credentials_in_params,
        resource: None,
    })
}
