//! Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document, which the MCP
//! authorization spec prefers to registration): a client id that is an HTTPS URL names the
//! document describing the client. Vallum fetches it only for hosts on
//! `mcp_allowed_client_id_domains`, and the fetch cannot be turned against the network it runs
//! in: HTTPS only, every resolved address public (loopback, private, link-local, CGNAT,
//! multicast and unspecified addresses are refused) and the connection pinned to the address
//! checked, no redirects, 5 s, 5 KiB. Documents are cached for 5 minutes.

use super::clients::{redirect_uri_allowed, AuthMethod, Client};
use crate::config::mcp_auth::domain_allowed;
use dashmap::DashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;
use url::Url;

const MAX_DOCUMENT: usize = 5 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);
const CACHE_TTL: u64 = 300;
const MAX_CACHED: usize = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CimdError {
    #[error("the client id is not a valid metadata URL (https, a path, no fragment, credentials or dot segments)")]
    BadUrl,
    #[error("the client's domain {0} is not on mcp_allowed_client_id_domains")]
    DomainNotAllowed(String),
    #[error(
        "{0} resolves only to internal addresses, which client metadata is never fetched from"
    )]
    Internal(String),
    #[error("the client metadata could not be fetched: {0}")]
    Fetch(String),
    #[error("the client metadata is not valid: {0}")]
    Invalid(String),
}

/// Whether a client id names a metadata document rather than a registration.
pub fn is_metadata_url(id: &str) -> bool {
    id.starts_with("https://")
}

/// The URL, if it is one a metadata document may live at and its host is allowed.
pub fn check_url(id: &str, patterns: &[String]) -> Result<Url, CimdError> {
    let u = Url::parse(id).map_err(|_| CimdError::BadUrl)?;
    let dot_segment = id
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .split('/')
        .skip(3)
        .any(|s| s == "." || s == "..");
    if u.scheme() != "https"
        || !u.username().is_empty()
        || u.password().is_some()
        || u.fragment().is_some()
        || u.path() == "/"
        || dot_segment
    {
        return Err(CimdError::BadUrl);
    }
    let host = u.host_str().ok_or(CimdError::BadUrl)?.to_ascii_lowercase();
    if !domain_allowed(patterns, &host) {
        return Err(CimdError::DomainNotAllowed(host));
    }
    Ok(u)
}

/// A unicast address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (s[0] & 0xfe00) == 0xfc00
                    || (s[0] & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// Checks a fetched document against the URL it came from.
pub fn validate(url: &Url, body: &[u8], now: u64) -> Result<Client, CimdError> {
    #[derive(serde::Deserialize)]
    struct Doc {
        client_id: Option<String>,
        redirect_uris: Option<Vec<String>>,
        client_name: Option<String>,
        token_endpoint_auth_method: Option<String>,
    }
    let doc: Doc = serde_json::from_slice(body).map_err(|e| CimdError::Invalid(e.to_string()))?;
    if doc.client_id.as_deref() != Some(url.as_str()) {
        return Err(CimdError::Invalid(
            "client_id must be the document's own URL".into(),
        ));
    }
    let uris = doc.redirect_uris.unwrap_or_default();
    if uris.is_empty() || !uris.iter().all(|u| redirect_uri_allowed(u)) {
        return Err(CimdError::Invalid(
            "redirect_uris must be https, or http on a loopback address".into(),
        ));
    }
    match doc.token_endpoint_auth_method.as_deref() {
        None | Some("none") => {}
        Some(other) => {
            return Err(CimdError::Invalid(format!(
                "token_endpoint_auth_method {other:?}: only public clients (none) are supported"
            )))
        }
    }
    Ok(Client {
        redirect_uris: uris,
        name: doc.client_name.map(|n| n.chars().take(200).collect()),
        auth: AuthMethod::None,
        iat: now,
    })
}

fn cache() -> &'static DashMap<String, (Client, u64)> {
    static CACHE: OnceLock<DashMap<String, (Client, u64)>> = OnceLock::new();
    CACHE.get_or_init(DashMap::new)
}

/// The client a metadata URL describes: cached, or fetched safely.
pub async fn client(id: &str, patterns: &[String], now: u64) -> Result<Client, CimdError> {
    let url = check_url(id, patterns)?;
    if let Some(hit) = cache().get(id).filter(|e| e.1 + CACHE_TTL > now) {
        return Ok(hit.0.clone());
    }
    let body = fetch_public(&url, MAX_DOCUMENT).await?;
    let client = validate(&url, &body, now)?;
    if cache().len() >= MAX_CACHED {
        cache().retain(|_, e| e.1 + CACHE_TTL > now);
    }
    if cache().len() < MAX_CACHED {
        cache().insert(id.to_string(), (client.clone(), now));
    }
    Ok(client)
}

/// A public address `url`'s host resolves to, or why not.
async fn public_addr(url: &Url) -> Result<(String, SocketAddr), CimdError> {
    let host = url.host_str().ok_or(CimdError::BadUrl)?.to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
        .await
        .map_err(|_| CimdError::Fetch("name resolution timed out".into()))?
        .map_err(|e| CimdError::Fetch(format!("cannot resolve {host}: {e}")))?;
    let addrs: Vec<SocketAddr> = lookup.collect();
    match addrs.iter().copied().find(|a| is_public(a.ip())) {
        Some(addr) => Ok((host, addr)),
        None => Err(CimdError::Internal(host)),
    }
}

/// Refuses a URL that is not HTTPS on a public address.
pub async fn check_public(url: &Url) -> Result<(), CimdError> {
    if url.scheme() != "https" {
        return Err(CimdError::BadUrl);
    }
    public_addr(url).await.map(|_| ())
}

/// A GET that cannot be turned against the gateway's own network: HTTPS only, pinned to a
/// public address of the host, no redirects, 5 s, at most `max` bytes.
pub async fn fetch_public(url: &Url, max: usize) -> Result<Vec<u8>, CimdError> {
    if url.scheme() != "https" {
        return Err(CimdError::BadUrl);
    }
    let (host, addr) = public_addr(url).await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .https_only(true)
        .resolve(&host, addr)
        .build()
        .map_err(|e| CimdError::Fetch(e.to_string()))?;
    let mut resp = http
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| CimdError::Fetch(e.to_string()))?;
    if resp.status() != http::StatusCode::OK {
        return Err(CimdError::Fetch(format!("status {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| CimdError::Fetch(e.to_string()))?
    {
        if body.len() + chunk.len() > max {
            return Err(CimdError::Fetch(format!("larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_https_urls_with_a_path_are_client_ids() {
        let p = vec!["*.agents.test".to_string()];
        assert!(check_url("https://app.agents.test/client.json", &p).is_ok());
        assert_eq!(
            check_url("https://evil.test/client.json", &p),
            Err(CimdError::DomainNotAllowed("evil.test".into()))
        );
        for bad in [
            "http://app.agents.test/client.json",
            "https://app.agents.test/",
            "https://app.agents.test",
            "https://u:p@app.agents.test/c",
            "https://app.agents.test/c#x",
            "https://app.agents.test/a/../c",
            "not a url",
        ] {
            assert_eq!(check_url(bad, &p), Err(CimdError::BadUrl), "{bad}");
        }
    }

    #[test]
    fn internal_addresses_are_never_fetched_from() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "1.1.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_document_must_describe_itself_and_a_public_client() {
        let url = Url::parse("https://app.agents.test/client.json").unwrap();
        let doc = |v: serde_json::Value| validate(&url, v.to_string().as_bytes(), 9);
        let ok = doc(serde_json::json!({
            "client_id": url.as_str(), "client_name": "Agent", "redirect_uris": ["http://127.0.0.1:3000/cb"]
        }))
        .unwrap();
        assert_eq!(
            (ok.auth, ok.name.as_deref()),
            (AuthMethod::None, Some("Agent"))
        );
        let other_id = doc(
            serde_json::json!({"client_id": "https://x.test/c", "redirect_uris": ["https://a.test/"]}),
        );
        assert!(matches!(other_id, Err(CimdError::Invalid(_))));
        let bad_redirect = doc(
            serde_json::json!({"client_id": url.as_str(), "redirect_uris": ["http://evil.test/cb"]}),
        );
        assert!(matches!(bad_redirect, Err(CimdError::Invalid(_))));
        let secret = doc(serde_json::json!({
            "client_id": url.as_str(), "redirect_uris": ["https://a.test/"], "token_endpoint_auth_method": "client_secret_basic"
        }));
        assert!(matches!(secret, Err(CimdError::Invalid(_))));
        assert!(matches!(
            validate(&url, b"[", 0),
            Err(CimdError::Invalid(_))
        ));
    }
}
