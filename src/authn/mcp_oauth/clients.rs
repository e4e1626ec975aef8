//! MCP clients: dynamic registration (RFC 7591, behind `runtime_flags.mcp_dynamic_client_registration`)
//! and finding a registered client again. A registration is not stored: the client id *is* the
//! registration, sealed, so any node of a fleet recognises it and an unauthenticated endpoint
//! cannot fill the store. A confidential client's secret is an HMAC of its id.

use crate::crypto::Key;
use serde::{Deserialize, Serialize};
use serde_json::json;

const CLIENT_PREFIX: &str = "vmcp_ci.";
/// Limits on what one registration may hold (it travels in every authorize URL).
const MAX_REDIRECT_URIS: usize = 8;
const MAX_REDIRECT_URI_LEN: usize = 512;
const MAX_NAME_LEN: usize = 200;

/// How a client proves itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A public client (PKCE alone).
    None,
    ClientSecretBasic,
    ClientSecretPost,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }
}

/// A registered client, as its id carries it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Client {
    pub redirect_uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub auth: AuthMethod,
    pub iat: u64,
}

/// The fields of a registration request Vallum reads; the rest of the metadata is ignored.
#[derive(Debug, Deserialize)]
struct RegistrationRequest {
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    client_name: Option<String>,
}

/// A refused registration: the RFC 7591 error code and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub error: &'static str,
    pub description: String,
}

fn refused(error: &'static str, description: impl Into<String>) -> Refused {
    Refused {
        error,
        description: description.into(),
    }
}

fn secret_key(key: &Key) -> Key {
    key.derive("vallum mcp client secret")
}

/// Where a client may be sent back with a code: `https` anywhere, or `http` on a loopback host
/// (the MCP authorization spec's rule); no credentials, no fragment.
pub fn redirect_uri_allowed(uri: &str) -> bool {
    let Ok(u) = url::Url::parse(uri) else {
        return false;
    };
    if uri.len() > MAX_REDIRECT_URI_LEN
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
    {
        return false;
    }
    match (u.scheme(), u.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(d))) => d.eq_ignore_ascii_case("localhost"),
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

/// Reads and checks a registration request body; the new client and its id.
pub fn register(key: &Key, body: &[u8], now: u64) -> Result<(String, Client), Refused> {
    let req: RegistrationRequest = serde_json::from_slice(body).map_err(|e| {
        refused(
            "invalid_client_metadata",
            format!("the body is not a registration request: {e}"),
        )
    })?;
    let uris = req.redirect_uris.unwrap_or_default();
    if uris.is_empty() || uris.len() > MAX_REDIRECT_URIS {
        return Err(refused(
            "invalid_redirect_uri",
            format!("redirect_uris needs 1 to {MAX_REDIRECT_URIS} URIs"),
        ));
    }
    if let Some(bad) = uris.iter().find(|u| !redirect_uri_allowed(u)) {
        return Err(refused(
            "invalid_redirect_uri",
            format!(
                "{bad:?}: a redirect URI must be https, or http on localhost or a loopback address"
            ),
        ));
    }
    let auth = match req.token_endpoint_auth_method.as_deref() {
        None | Some("client_secret_basic") => AuthMethod::ClientSecretBasic,
        Some("client_secret_post") => AuthMethod::ClientSecretPost,
        Some("none") => AuthMethod::None,
        Some(other) => {
            return Err(refused(
                "invalid_client_metadata",
                format!("token_endpoint_auth_method {other:?} is not supported (none, client_secret_basic, client_secret_post are)"),
            ))
        }
    };
    let grants_ok = req
        .grant_types
        .iter()
        .flatten()
        .all(|g| g == "authorization_code" || g == "refresh_token");
    let responses_ok = req.response_types.iter().flatten().all(|r| r == "code");
    if !grants_ok || !responses_ok {
        return Err(refused(
            "invalid_client_metadata",
            "only the authorization_code and refresh_token grants and the code response type are supported",
        ));
    }
    let name = req
        .client_name
        .map(|n| n.chars().take(MAX_NAME_LEN).collect::<String>());
    let client = Client {
        redirect_uris: uris,
        name,
        auth,
        iat: now,
    };
    let plain = serde_json::to_vec(&client).unwrap_or_default();
    let id = format!("{CLIENT_PREFIX}{}", key.seal(&plain, b"vallum-mcp-client"));
    Ok((id, client))
}

/// The RFC 7591 response for a new client.
pub fn registration_response(key: &Key, id: &str, c: &Client) -> serde_json::Value {
    let mut out = json!({
        "client_id": id,
        "client_id_issued_at": c.iat,
        "redirect_uris": c.redirect_uris,
        "token_endpoint_auth_method": c.auth.as_str(),
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    });
    if let Some(n) = &c.name {
        out["client_name"] = json!(n);
    }
    if c.auth != AuthMethod::None {
        out["client_secret"] = json!(secret_key(key).sign(id.as_bytes()));
        out["client_secret_expires_at"] = json!(0);
    }
    out
}

/// A client this gateway registered; `None` for anything else.
pub fn find(key: &Key, id: &str) -> Option<Client> {
    let sealed = id.strip_prefix(CLIENT_PREFIX)?;
    serde_json::from_slice(&key.open(sealed, b"vallum-mcp-client")?).ok()
}

/// Whether `secret` is this client's (constant time).
pub fn secret_matches(key: &Key, id: &str, secret: &str) -> bool {
    secret_key(key).verify(id.as_bytes(), secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_or_loopback_http() {
        for ok in [
            "https://app.example.com/cb",
            "http://localhost:3000/cb",
            "http://127.0.0.1:9/x",
            "http://[::1]:8080/",
        ] {
            assert!(redirect_uri_allowed(ok), "{ok}");
        }
        for bad in [
            "http://app.example.com/cb",
            "http://localhost.evil.example/",
            "https://user:pw@app.example.com/",
            "https://app.example.com/#frag",
            "javascript:alert(1)",
            "custom-scheme://cb",
            "/relative",
            "http://10.0.0.1/",
        ] {
            assert!(!redirect_uri_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn a_registration_round_trips_through_its_id() {
        let key = Key::random();
        let body = br#"{"redirect_uris":["http://localhost:1/cb"],"client_name":"agent","token_endpoint_auth_method":"client_secret_post","scope":"x"}"#;
        let (id, client) = register(&key, body, 7).unwrap();
        assert_eq!(find(&key, &id), Some(client.clone()));
        assert_eq!(find(&Key::random(), &id), None);
        let resp = registration_response(&key, &id, &client);
        let secret = resp["client_secret"].as_str().unwrap();
        assert!(secret_matches(&key, &id, secret));
        assert!(!secret_matches(&key, &id, "nope"));
        assert!(!secret_matches(&key, "vmcp_ci.other", secret));
    }

    #[test]
    fn bad_registrations_say_why() {
        let key = Key::random();
        let r = |b: &str| register(&key, b.as_bytes(), 0).unwrap_err().error;
        assert_eq!(r("not json"), "invalid_client_metadata");
        assert_eq!(r("{}"), "invalid_redirect_uri");
        assert_eq!(
            r(r#"{"redirect_uris":["http://evil.example/cb"]}"#),
            "invalid_redirect_uri"
        );
        assert_eq!(
            r(r#"{"redirect_uris":["https://a.test/"],"grant_types":["implicit"]}"#),
            "invalid_client_metadata"
        );
        assert_eq!(
            r(
                r#"{"redirect_uris":["https://a.test/"],"token_endpoint_auth_method":"private_key_jwt"}"#
            ),
            "invalid_client_metadata"
        );
    }
}
