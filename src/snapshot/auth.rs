//! Sign-in settings as the request path uses them: the config's `AuthSettings` beside the keys
//! and caches built from it for one snapshot.

use crate::config::auth::AuthSettings;
use crate::headers::jwt::Signer;
use crate::session::cookie::OpenedCookies;

/// Built once per snapshot from its `AuthSettings`; dropped with it, so a new key never meets
/// a cache filled under the old one.
#[derive(Debug)]
pub struct AuthKeys {
    /// Signs `X-Pomerium-Jwt-Assertion`, remembering what it signed per session and audience.
    pub signer: Signer,
    /// Session cookies already opened with `session_cookie_key`.
    pub opened_cookies: OpenedCookies,
    /// Seals the MCP authorization server's client ids, codes and tokens (`authn::mcp_oauth`).
    pub mcp_key: crate::crypto::Key,
}

impl AuthKeys {
    pub fn new(settings: &AuthSettings) -> AuthKeys {
        AuthKeys {
            signer: Signer::new(settings.signing_key.clone()),
            opened_cookies: OpenedCookies::default(),
            mcp_key: settings
                .cookie_secret
                .derive("vallum mcp authorization server"),
        }
    }
}

/// A snapshot's sign-in settings and keys, borrowed together for one request. Reads as the
/// settings (`Deref`), so the endpoints name `auth.cookie` and `auth.keys.signer` alike.
#[derive(Clone, Copy)]
pub struct Auth<'a> {
    pub settings: &'a AuthSettings,
    pub keys: &'a AuthKeys,
}

impl std::ops::Deref for Auth<'_> {
    type Target = AuthSettings;

    fn deref(&self) -> &AuthSettings {
        self.settings
    }
}
