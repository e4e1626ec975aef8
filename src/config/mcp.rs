//! A route's `mcp` option (Pomerium's): `mcp.server` marks the route as an MCP server, whose
//! JSON-RPC requests are read and decided per call (`mcp_tool`, `mcp_tool_argument`);
//! `mcp.client` marks an app that calls those servers for its user.

use super::error::Errors;
use serde::Deserialize;

/// Pomerium's default for `max_request_bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024;
/// The largest body Vallum reads for a decision and keeps for the upstream (Pingora's buffer).
pub const MAX_REQUEST_BYTES_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    pub server: Option<RawMcpServer>,
    pub client: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpServer {
    pub path: Option<String>,
    pub max_request_bytes: Option<u64>,
    pub upstream_oauth2: Option<super::mcp_upstream::RawUpstreamOAuth2>,
    pub authorization_server_url: Option<String>,
    /// Vallum's: tool calls per user and tool (`rate_limits`).
    pub rate_limits: Option<Vec<RawRateLimit>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub tools: Option<Vec<String>>,
    pub calls: u32,
    pub per: super::duration::GoDuration,
}

/// At most `calls` calls of one tool by one user per `per` (fixed windows), for the listed
/// tools (`None`: every tool). The first limit that names a tool is the one that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRateLimit {
    pub tools: Option<Vec<String>>,
    pub calls: u32,
    pub per: std::time::Duration,
}

impl McpServer {
    /// The limit for `tool` and its place in the list (part of the counter's key).
    pub fn rate_limit(&self, tool: &str) -> Option<(usize, &ToolRateLimit)> {
        self.rate_limits
            .iter()
            .enumerate()
            .find(|(_, l)| l.tools.as_ref().is_none_or(|t| t.iter().any(|n| n == tool)))
    }
}

/// An MCP server route, ready for the proxy.
#[derive(Debug, PartialEq, Eq)]
pub struct McpServer {
    /// The MCP endpoint's path (Streamable HTTP); `None`: every POST on the route.
    pub path: Option<String>,
    pub max_request_bytes: usize,
    pub rate_limits: Vec<ToolRateLimit>,
    /// The upstream's own OAuth client, when the MCP server needs a token of its own.
    pub upstream_oauth2: Option<super::mcp_upstream::UpstreamOAuth2>,
    /// The MCP server's own authorization server, where Vallum registers itself as a client.
    pub authorization_server: Option<url::Url>,
}

pub fn compile(raw: Option<&RawMcp>, base: &str, errs: &mut Errors) -> Option<McpServer> {
    let raw = raw?;
    let p = |k: &str| format!("{base}.mcp.{k}");
    let Some(server) = &raw.server else {
        if raw.client.is_none() {
            errs.push(
                format!("{base}.mcp"),
                "needs server: {} (an MCP server route) or client: {} (an MCP client app)",
            );
        }
        return None;
    };
    if raw.client.is_some() {
        errs.push(
            p("client"),
            "a route is an MCP server or an MCP client, not both",
        );
    }
    let authorization_server = server.authorization_server_url.as_deref().and_then(|u| {
        let key = p("server.authorization_server_url");
        if server.upstream_oauth2.is_some() {
            errs.push(
                key,
                "goes with upstream_oauth2 left out (Vallum registers itself there)",
            );
            return None;
        }
        match url::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => {
                Some(url)
            }
            _ => {
                errs.push(
                    key,
                    "must be an absolute http(s) URL (the MCP server's authorization server)",
                );
                None
            }
        }
    });
    let path = match server.path.as_deref() {
        Some(path) if !path.starts_with('/') => {
            errs.push(p("server.path"), "must be an absolute path, e.g. /mcp");
            None
        }
        other => other.map(str::to_string),
    };
    let max = server
        .max_request_bytes
        .map_or(DEFAULT_MAX_REQUEST_BYTES, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    if max == 0 || max > MAX_REQUEST_BYTES_LIMIT {
        errs.push(
            p("server.max_request_bytes"),
            format!("must be between 1 and {MAX_REQUEST_BYTES_LIMIT}: the body is held for the decision"),
        );
    }
    Some(McpServer {
        path,
        max_request_bytes: max.clamp(1, MAX_REQUEST_BYTES_LIMIT),
        rate_limits: rate_limits(
            server.rate_limits.as_deref(),
            &p("server.rate_limits"),
            errs,
        ),
        upstream_oauth2: server
            .upstream_oauth2
            .as_ref()
            .and_then(|u| super::mcp_upstream::compile(u, &p("server.upstream_oauth2"), errs)),
        authorization_server,
    })
}

fn rate_limits(raw: Option<&[RawRateLimit]>, key: &str, errs: &mut Errors) -> Vec<ToolRateLimit> {
    let mut out = Vec::new();
    for (i, l) in raw.unwrap_or_default().iter().enumerate() {
        let k = format!("{key}[{i}]");
        if l.calls == 0 {
            errs.push(
                format!("{k}.calls"),
                "must be at least 1 (remove the tool from the policy to forbid it)",
            );
            continue;
        }
        if l.per.0 < std::time::Duration::from_secs(1)
            || l.per.0 > std::time::Duration::from_secs(86_400)
        {
            errs.push(format!("{k}.per"), "must be between 1s and 24h");
            continue;
        }
        if l.tools
            .as_ref()
            .is_some_and(|t| t.is_empty() || t.iter().any(String::is_empty))
        {
            errs.push(
                format!("{k}.tools"),
                "names tools; leave it out to limit every tool",
            );
            continue;
        }
        out.push(ToolRateLimit {
            tools: l.tools.clone(),
            calls: l.calls,
            per: l.per.0,
        });
    }
    out
}

/// `mcp.client: {}`: the route's app is an MCP client acting for the signed-in user (it gets a
/// token for the gateway's MCP servers). It takes no settings.
pub fn is_client(raw: Option<&RawMcp>, base: &str, errs: &mut Errors) -> bool {
    let Some(client) = raw.and_then(|m| m.client.as_ref()) else {
        return false;
    };
    let empty = match client {
        serde_yaml_ng::Value::Mapping(m) => m.is_empty(),
        serde_yaml_ng::Value::Null => true,
        _ => false,
    };
    if !empty {
        errs.push(
            format!("{base}.mcp.client"),
            "takes no settings: write client: {}",
        );
    }
    raw.is_some_and(|m| m.server.is_none())
}
