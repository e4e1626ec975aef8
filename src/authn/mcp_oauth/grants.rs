//! What the authorization server hands out, all sealed with a key derived from `cookie_secret`
//! and bound to the host that issued it: authorization codes, access tokens and refresh tokens.
//! Each is a handle on the user's server-side session, like the session cookie, so nothing about
//! the user travels in it and ending the session (sign-out, revocation, on any node of a fleet
//! sharing a store) ends every token minted from it. Single use (codes, refresh tokens) is
//! recorded with the store's `claim_once`, fleet-wide.

use crate::crypto::Key;
use serde::{Deserialize, Serialize};

/// Prefixes that tell Vallum's MCP tokens from any other bearer token at a glance.
pub const ACCESS_PREFIX: &str = "vmcp_at.";
pub const REFRESH_PREFIX: &str = "vmcp_rt.";
const CODE_PREFIX: &str = "vmcp_ac.";

/// The "host" a delegated token (`mcp.client` routes) is sealed for: it opens on every MCP
/// server route of the gateway, never as a host-bound token.
pub const ANY_HOST: &str = "*";

/// How long an authorization code may wait for its exchange.
pub const CODE_TTL: u64 = 60;

/// An authorization code: the approved request, waiting for the client's PKCE verifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Code {
    pub sid: String,
    pub client: String,
    pub redirect_uri: String,
    /// The S256 challenge.
    pub challenge: String,
    pub resource: String,
    pub scope: Option<String>,
    pub exp: u64,
    /// Makes every code unique, so its single use can be recorded.
    pub n: String,
}

/// An access or refresh token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Token {
    pub sid: String,
    pub client: String,
    pub resource: String,
    pub scope: Option<String>,
    pub exp: u64,
    /// A refresh token's id, claimed when it is used (rotation: each is good once).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
}

fn ad(kind: &str, host: &str) -> Vec<u8> {
    format!("vallum-mcp-{kind}|{host}").into_bytes()
}

fn seal<T: Serialize>(key: &Key, prefix: &str, kind: &str, host: &str, v: &T) -> String {
    let plain = serde_json::to_vec(v).unwrap_or_default();
    format!("{prefix}{}", key.seal(&plain, &ad(kind, host)))
}

fn open<T: serde::de::DeserializeOwned>(
    key: &Key,
    prefix: &str,
    kind: &str,
    host: &str,
    value: &str,
) -> Option<T> {
    let sealed = value.strip_prefix(prefix)?;
    serde_json::from_slice(&key.open(sealed, &ad(kind, host))?).ok()
}

pub fn seal_code(key: &Key, host: &str, code: &Code) -> String {
    seal(key, CODE_PREFIX, "code", host, code)
}

/// A code this host issued that has not expired.
pub fn open_code(key: &Key, host: &str, value: &str, now: u64) -> Option<Code> {
    open::<Code>(key, CODE_PREFIX, "code", host, value).filter(|c| c.exp > now)
}

pub fn seal_access(key: &Key, host: &str, t: &Token) -> String {
    seal(key, ACCESS_PREFIX, "access", host, t)
}

pub fn open_access(key: &Key, host: &str, value: &str, now: u64) -> Option<Token> {
    open::<Token>(key, ACCESS_PREFIX, "access", host, value).filter(|t| t.exp > now)
}

pub fn seal_refresh(key: &Key, host: &str, t: &Token) -> String {
    seal(key, REFRESH_PREFIX, "refresh", host, t)
}

pub fn open_refresh(key: &Key, host: &str, value: &str, now: u64) -> Option<Token> {
    open::<Token>(key, REFRESH_PREFIX, "refresh", host, value)
        .filter(|t| t.exp > now && !t.id.is_empty())
}

/// `BASE64URL(SHA256(verifier)) == challenge` (RFC 7636 S256), in constant time. The verifier
/// must be 43–128 unreserved characters.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use base64::Engine;
    use sha2::Digest;
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let digest = sha2::Sha256::digest(verifier.as_bytes());
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    crate::crypto::ct_eq(&computed, challenge)
}

/// The key a single-use value is claimed under: a digest, so the store never holds a credential.
pub fn claim_key(kind: &str, value: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(value.as_bytes());
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("mcp-{kind}:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(exp: u64, id: &str) -> Token {
        Token {
            sid: "s1".into(),
            client: "c".into(),
            resource: "https://mcp.test/mcp".into(),
            scope: None,
            exp,
            id: id.into(),
        }
    }

    #[test]
    fn tokens_open_only_as_what_they_are_where_they_were_issued() {
        let key = Key::random();
        let access = seal_access(&key, "mcp.test", &token(100, ""));
        assert_eq!(
            open_access(&key, "mcp.test", &access, 50),
            Some(token(100, ""))
        );
        assert_eq!(open_access(&key, "mcp.test", &access, 100), None, "expired");
        assert_eq!(
            open_access(&key, "other.test", &access, 50),
            None,
            "another host"
        );
        assert_eq!(open_access(&Key::random(), "mcp.test", &access, 50), None);
        assert!(open_refresh(&key, "mcp.test", &access, 50).is_none());
        let forged = access.replace(ACCESS_PREFIX, REFRESH_PREFIX);
        assert!(
            open_refresh(&key, "mcp.test", &forged, 50).is_none(),
            "kind is bound"
        );
        let mut tampered = access.clone();
        tampered.pop();
        tampered.push('A');
        assert!(open_access(&key, "mcp.test", &tampered, 50).is_none() || tampered == access);
        let refresh = seal_refresh(&key, "mcp.test", &token(100, "r1"));
        assert!(open_refresh(&key, "mcp.test", &refresh, 50).is_some());
        let no_id = seal_refresh(&key, "mcp.test", &token(100, ""));
        assert!(open_refresh(&key, "mcp.test", &no_id, 50).is_none());
    }

    #[test]
    fn pkce_s256_as_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cX"
        ));
        assert!(!pkce_matches("short", challenge));
        assert!(!pkce_matches(&format!("{verifier}!"), challenge));
    }
}
