//! The gateway-wide MCP settings: Pomerium's runtime flags `mcp` (on by default since v0.33) and
//! `mcp_dynamic_client_registration` (off by default), `mcp_allowed_client_id_domains`,
//! `mcp_allowed_as_metadata_domains`, and
//! Vallum's `mcp_access_token_lifetime`. They govern the OAuth 2.1 authorization server MCP
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
    /// Host patterns (`example.com`, `*.example.com`) whose HTTPS URLs may be client ids
    /// (client ID metadata documents); empty: none.
    pub client_id_domains: Vec<String>,
    /// Host patterns whose authorization-server metadata may be fetched when an MCP server's
    /// protected-resource metadata names them (upstream discovery); empty: no discovery.
    pub as_metadata_domains: Vec<String>,
    pub access_token_lifetime: Duration,
}

impl Default for McpAuth {
    fn default() -> Self {
        McpAuth {
            enabled: true,
            dynamic_registration: false,
            client_id_domains: Vec::new(),
            as_metadata_domains: Vec::new(),
            access_token_lifetime: DEFAULT_ACCESS_TOKEN_LIFETIME,
        }
    }
}

/// The runtime flags this module owns (the rest of `runtime_flags` is read in `auth`).
pub const FLAGS: &[&str] = &["mcp", "mcp_dynamic_client_registration"];

pub fn compile(
    flags: &std::collections::BTreeMap<String, bool>,
    client_id_domains: Option<&[String]>,
    as_metadata_domains: Option<&[String]>,
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
    out.client_id_domains = patterns(client_id_domains, "mcp_allowed_client_id_domains", errs);
    out.as_metadata_domains =
        patterns(as_metadata_domains, "mcp_allowed_as_metadata_domains", errs);
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

/// Host patterns: `example.com` or `*.example.com`, lower-case.
fn patterns(list: Option<&[String]>, key: &str, errs: &mut Errors) -> Vec<String> {
    let mut out = Vec::new();
    for (i, d) in list.unwrap_or_default().iter().enumerate() {
        let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        let bare = d.strip_prefix("*.").unwrap_or(&d);
        if bare.is_empty() || bare.contains(['*', '/', ':', ' ', '@']) {
            errs.push(
                format!("{key}[{i}]"),
                "must be a host name, optionally starting with *. (e.g. *.example.com)",
            );
            continue;
        }
        out.push(d);
    }
    out
}

/// Whether `host` (lower-case) is on one of the patterns: `example.com` matches itself,
/// `*.example.com` its subdomains (not itself).
pub fn domain_allowed(patterns: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.');
    patterns.iter().any(|p| match p.strip_prefix("*.") {
        Some(base) => host
            .strip_suffix(base)
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        None => host == p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exactly_or_by_subdomain() {
        let p = vec!["*.example.com".to_string(), "clients.test".to_string()];
        assert!(domain_allowed(&p, "app.example.com"));
        assert!(domain_allowed(&p, "a.b.example.com"));
        assert!(!domain_allowed(&p, "example.com"));
        assert!(!domain_allowed(&p, "evilexample.com"));
        assert!(!domain_allowed(&p, ".example.com"));
        assert!(domain_allowed(&p, "clients.test"));
        assert!(!domain_allowed(&p, "x.clients.test"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut errs = Errors::default();
        let flags = [("mcp".to_string(), false)].into_iter().collect();
        let out = compile(
            &flags,
            Some(&["*.ok.test".into(), "bad/path".into()]),
            Some(&["*".into()]),
            Some(GoDuration(Duration::from_secs(90_000))),
            &mut errs,
        );
        assert!(!out.enabled);
        assert_eq!(out.client_id_domains, vec!["*.ok.test".to_string()]);
        let text = format!("{errs:?}");
        assert!(text.contains("mcp_access_token_lifetime"), "{text}");
        assert!(text.contains("mcp_allowed_client_id_domains[1]"), "{text}");
        assert!(
            text.contains("mcp_allowed_as_metadata_domains[0]"),
            "{text}"
        );
    }
}
