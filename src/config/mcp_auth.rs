//! The gateway-wide MCP settings: Pomerium's runtime flags `mcp` (on by default since v0.33) and
//! `mcp_dynamic_client_registration` (off by default), and Vallum's `mcp_access_token_lifetime`. They govern the OAuth 2.1 authorization server MCP
//! clients find on every MCP server route's host (`authn::mcp_oauth`).

use super::duration::GoDuration;
use super::error::Errors;
use std::time::Duration;

/// How long an MCP access token lives unless configured: short, because a refresh token renews
/// it and every renewal checks the session again.
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpAuth {
    /// `runtime_flags.mcp`: the authorization server and the `401` challenge on MCP routes. Off,
    /// MCP routes sign people in like any route and still decide each tool call.
    pub enabled: bool,
    /// `runtime_flags.mcp_dynamic_client_registration`: serve RFC 7591 registration.
    pub dynamic_registration: bool,
    pub access_token_lifetime: Duration,
}

impl Default for McpAuth {
    fn default() -> Self {
        McpAuth {
            enabled: true,
            dynamic_registration: false,
            access_token_lifetime: DEFAULT_ACCESS_TOKEN_LIFETIME,
        }
    }
}

/// The runtime flags this module owns (the rest of `runtime_flags` is read in `auth`).
pub const FLAGS: &[&str] = &["mcp", "mcp_dynamic_client_registration"];

pub fn compile(
    flags: &std::collections::BTreeMap<String, bool>,
    lifetime: Option<GoDuration>,
    errs: &mut Errors,
) -> McpAuth {
    let mut out = McpAuth::default();
    if let Some(on) = flags.get("mcp") {
        out.enabled = *on;
    }
    if let Some(on) = flags.get("mcp_dynamic_client_registration") {
        out.dynamic_registration = *on;
    }
    if let Some(d) = lifetime {
        if d.0 < Duration::from_secs(1) || d.0 > Duration::from_secs(24 * 3600) {
            errs.push(
                "mcp_access_token_lifetime",
                "must be between 1s and 24h (a refresh token renews it)",
            );
        } else {
            out.access_token_lifetime = d.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let mut errs = Errors::default();
        let flags = [("mcp".to_string(), false)].into_iter().collect();
        let out = compile(
            &flags,
            Some(GoDuration(Duration::from_secs(90_000))),
            &mut errs,
        );
        assert!(!out.enabled);
        let text = format!("{errs:?}");
        assert!(text.contains("mcp_access_token_lifetime"), "{text}");
    }
}
