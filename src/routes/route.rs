//! A compiled route: what it matches, what it does, and how it rewrites — all validated and
//! pre-built at load so the request path only reads.

use crate::upstream::Pool;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use regex::Regex;
use std::sync::Arc;
use std::time::Duration;

/// Which hosts a route's `from` covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` → suffix `example.com`; `*` → empty suffix.
    Wildcard(String),
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Any,
    Prefix(String),
    Exact(String),
    /// Anchored at both ends.
    Regex(Regex),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

#[derive(Debug, Clone)]
pub enum PathRewrite {
    None,
    /// Envoy's literal prefix replacement of the matched prefix (or whole path for `path`).
    Prefix {
        matched: String,
        replacement: String,
    },
    Regex {
        pattern: Regex,
        substitution: String,
    },
}

impl PathRewrite {
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathRewrite::None => path.to_string(),
            PathRewrite::Prefix {
                matched,
                replacement,
            } => match path.strip_prefix(matched.as_str()) {
                Some(rest) => format!("{replacement}{rest}"),
                None => path.to_string(),
            },
            PathRewrite::Regex {
                pattern,
                substitution,
            } => pattern
                .replace_all(path, substitution.as_str())
                .into_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum HostHeader {
    /// The `to` host (Pomerium's default auto host rewrite).
    Auto,
    Preserve,
    Fixed(HeaderValue),
    FromHeader(HeaderName),
}

#[derive(Debug, Clone)]
pub struct RedirectSpec {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub status: StatusCode,
    pub strip_query: bool,
}

#[derive(Debug, Clone)]
pub enum Action {
    Upstream(Arc<Pool>),
    /// A TCP tunnel (`from: tcp+https://host:port`, `to: tcp://addr:port`): each authorised
    /// `Upgrade: tcp` request becomes one TCP connection to these addresses (first that answers).
    Tunnel(Arc<crate::upstream::dns::Names>),
    Redirect(RedirectSpec),
    Respond {
        status: StatusCode,
        body: Bytes,
    },
}

/// Who may pass: everyone, or whoever the route's policy allows (deny by default).
#[derive(Debug, Clone)]
pub enum Access {
    Public,
    Policy(Arc<crate::policy::Policy>),
}

/// A `set_request_headers` value: fixed, or with `${pomerium.jwt}`, `${pomerium.id_token}`,
/// `${pomerium.access_token}` substituted once per request (`$$` is a literal `$`; substituted
/// values are never expanded again).
#[derive(Debug, Clone)]
pub enum HeaderTemplate {
    Static(HeaderValue),
    Dynamic(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    Jwt,
    IdToken,
    AccessToken,
    /// The trusted client certificate's SHA-256 fingerprint (hex).
    CertFingerprint,
    /// Its DNS / email SANs, comma-joined.
    CertSanDns,
    CertSanEmail,
}

/// What a dynamic header value can draw on; empty strings for anonymous requests and for
/// connections without a trusted client certificate.
#[derive(Default)]
pub struct TemplateValues<'a> {
    pub jwt: &'a str,
    pub id_token: &'a str,
    pub access_token: &'a str,
    pub cert: Option<&'a crate::tls::peer::PeerCert>,
}

impl HeaderTemplate {
    pub fn parse(s: &str) -> Result<HeaderTemplate, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                lit.push('$');
                rest = r;
            } else if let Some(r) = after.strip_prefix('{') {
                let end = r
                    .find('}')
                    .ok_or("unclosed ${ (write $$ for a literal $)")?;
                let part = match &r[..end] {
                    "pomerium.jwt" => Part::Jwt,
                    "pomerium.id_token" => Part::IdToken,
                    "pomerium.access_token" => Part::AccessToken,
                    "pomerium.client_cert_fingerprint" => Part::CertFingerprint,
                    "pomerium.client_cert_san_dns" => Part::CertSanDns,
                    "pomerium.client_cert_san_email" => Part::CertSanEmail,
                    other => {
                        return Err(format!(
                            "unknown variable ${{{other}}} (pomerium.jwt, pomerium.id_token, pomerium.access_token, pomerium.client_cert_fingerprint, pomerium.client_cert_san_dns, pomerium.client_cert_san_email)"
                        ))
                    }
                };
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(part);
                rest = &r[end + 1..];
            } else {
                lit.push('$');
                rest = after;
            }
        }
        lit.push_str(rest);
        if parts.is_empty() {
            return HeaderValue::from_str(&lit)
                .map(HeaderTemplate::Static)
                .map_err(|_| "not a valid HTTP header value".to_string());
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(HeaderTemplate::Dynamic(parts))
    }

    /// The value for one request; identity values are empty for anonymous requests.
    pub fn render(&self, v: &TemplateValues<'_>) -> Option<HeaderValue> {
        match self {
            HeaderTemplate::Static(v) => Some(v.clone()),
            HeaderTemplate::Dynamic(parts) => {
                let mut s = String::new();
                for p in parts {
                    match p {
                        Part::Lit(l) => s.push_str(l),
                        Part::Jwt => s.push_str(v.jwt),
                        Part::IdToken => s.push_str(v.id_token),
                        Part::AccessToken => s.push_str(v.access_token),
                        Part::CertFingerprint => {
                            if let Some(c) = v.cert {
                                s.push_str(&c.fingerprint_hex());
                            }
                        }
                        Part::CertSanDns => {
                            if let Some(c) = v.cert {
                                s.push_str(&c.san_dns.join(","));
                            }
                        }
                        Part::CertSanEmail => {
                            if let Some(c) = v.cert {
                                s.push_str(&c.san_email.join(","));
                            }
                        }
                    }
                }
                HeaderValue::from_str(&s).ok()
            }
        }
    }

    /// Whether the value depends on who the user is (else the session lookup can be skipped).
    pub fn needs_identity(&self) -> bool {
        matches!(self, HeaderTemplate::Dynamic(p) if p.iter().any(|p| matches!(p, Part::Jwt | Part::IdToken | Part::AccessToken)))
    }

    pub fn needs_jwt(&self) -> bool {
        matches!(self, HeaderTemplate::Dynamic(p) if p.contains(&Part::Jwt))
    }
}

#[derive(Debug, Clone)]
pub struct ResponseHeaderRewrite {
    pub header: HeaderName,
    pub prefix: Option<String>,
    pub value: String,
}

/// What the routes portal shows of a route (`name`, `description`, `logo_url`, and `from` as
/// written).
#[derive(Debug, Default)]
pub struct Listing {
    pub from: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub logo_url: Option<String>,
}

#[derive(Debug)]
pub struct Route {
    /// Stable id for logs and metrics: the route's `name`/`id`, else its position.
    pub id: Arc<str>,
    pub listing: Listing,
    pub host: HostPattern,
    pub port: Option<u16>,
    pub path: PathMatch,
    pub rewrite: PathRewrite,
    pub action: Action,
    pub access: Access,
    /// Pomerium's per-route `tls_downstream_client_ca(_file)`: a request must present a client
    /// certificate this CA issued (495 otherwise), whatever `downstream_mtls` says.
    pub client_ca: Option<Arc<crate::tls::client_ca::ClientCa>>,
    /// `enable_google_cloud_serverless_authentication`: the audience of the ID token the
    /// upstream gets as `Authorization: Bearer`.
    pub serverless_audience: Option<Arc<str>>,
    pub host_header: HostHeader,
    pub set_request_headers: Vec<(HeaderName, HeaderTemplate)>,
    /// Send `X-Pomerium-Jwt-Assertion` and the claim headers (route, else global).
    pub pass_identity_headers: bool,
    /// The groups those may carry (`jwt_groups_filter`, global and route, and the policy's own
    /// groups with `jwt_groups_filter_infer_from_ppl`); `None`: all of the user's.
    pub groups_filter: Option<Arc<crate::headers::GroupsFilter>>,
    /// `jwt_issuer_format: uri`.
    pub issuer_uri: bool,
    /// What an `Authorization: Bearer` token is on this route (`bearer_token_format`).
    pub bearer: crate::config::auth::BearerFormat,
    /// Audiences accepted in IdP access tokens (`idp_access_token_allowed_audiences`).
    pub access_token_audiences: Vec<String>,
    /// `mcp.server`: the route's POSTs are JSON-RPC, decided per call.
    pub mcp: Option<Arc<crate::config::mcp::McpServer>>,
    /// `mcp.client`: the app gets a token for the gateway's MCP servers, acting for its user.
    pub mcp_client: bool,
    /// The sign-in providers this route accepts, in the order the sign-in page lists them;
    /// empty: the global one only.
    pub idps: Arc<[Arc<crate::config::route_idp::RouteIdp>]>,
    /// With `bearer_token_format: jwt`: the workload issuers whose tokens this route accepts
    /// (its `identity_providers` allowlist, else every one).
    pub workload_issuers: Arc<[Arc<crate::config::workload::WorkloadIssuer>]>,
    /// A session unused this long ends when it comes here (`session_idle_timeout`, route else
    /// global).
    pub session_idle: Option<Duration>,
    /// `max_auth_age`: how recently the user must have authenticated at the IdP.
    pub max_auth_age: Option<Duration>,
    /// `circuit_breaker_thresholds` (route, else global): the upstream's limits.
    pub breaker: Option<Arc<crate::upstream::breaker::Breaker>>,
    pub remove_request_headers: Vec<HeaderName>,
    /// Global headers merged with the route's own.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    pub rewrite_response_headers: Vec<ResponseHeaderRewrite>,
    /// Upgrade tokens (lower-case) this route lets through, e.g. `websocket`.
    pub upgrades: Vec<String>,
    pub timeout: Option<Duration>,
    /// Set only when the config gave `timeout` explicitly (upgraded streams have none otherwise).
    pub timeout_explicit: bool,
    pub idle_timeout: Option<Duration>,
    /// Largest request body accepted (413 beyond it); `None`: no limit.
    pub max_request_bytes: Option<u64>,
    /// `email`/`domain` rules may match an unverified email (the IdP vouches for none of its
    /// users' addresses, e.g. some Azure AD tenants); off by default.
    pub allow_unverified_email: bool,
    /// Allowed websocket `Origin`s, lower-case `scheme://host[:port]`; empty: any.
    pub websocket_origins: Vec<String>,
    /// The policy reads the method: `X-HTTP-Method-Override` and its kin are removed, so an
    /// upstream that honours them cannot be told `DELETE` on a GET-only route.
    pub strip_method_override: bool,
    /// This route's metric series, resolved on first use.
    pub metrics: crate::telemetry::metrics::RouteMetrics,
}

impl Route {
    pub fn allows_upgrade(&self, token: &str) -> bool {
        self.upgrades.iter().any(|u| u.eq_ignore_ascii_case(token))
    }
}

impl Route {
    /// `id: host[:port] path → action (access)`, for `check-config` and logs.
    pub fn describe(&self) -> String {
        let host = match &self.host {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Wildcard(s) if s.is_empty() => "*".to_string(),
            HostPattern::Wildcard(s) => format!("*.{s}"),
        };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let path = match &self.path {
            PathMatch::Any => "/*".to_string(),
            PathMatch::Prefix(p) => format!("{p}*"),
            PathMatch::Exact(p) => p.clone(),
            PathMatch::Regex(r) => format!("~{}", r.as_str()),
        };
        let action = match &self.action {
            Action::Tunnel(names) => {
                let to: Vec<String> = names
                    .hosts()
                    .iter()
                    .map(|(h, p)| match h.contains(':') {
                        true => format!("tcp://[{h}]:{p}"),
                        false => format!("tcp://{h}:{p}"),
                    })
                    .collect();
                format!("tunnel to {}", to.join(", "))
            }
            Action::Upstream(pool) => {
                let to: Vec<String> = pool
                    .targets
                    .iter()
                    .map(|t| {
                        format!(
                            "{}://{}{}",
                            if t.tls { "https" } else { "http" },
                            t.authority,
                            t.path_prefix
                        )
                    })
                    .collect();
                format!("-> {}", to.join(", "))
            }
            Action::Redirect(r) => format!("redirect {}", r.status.as_u16()),
            Action::Respond { status, .. } => format!("respond {}", status.as_u16()),
        };
        let access = match &self.access {
            Access::Public => "public".to_string(),
            Access::Policy(p) if p.rules.is_empty() => "denied: no access rule".to_string(),
            Access::Policy(p) => format!("policy: {} rule(s)", p.rules.len()),
        };
        format!("{}: {host}{port} {path} {action} [{access}]", self.id)
    }
}
