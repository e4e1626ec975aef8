//! Operations settings: the metrics and probe listeners, which fields the access and authorize
//! logs carry, whose `X-Request-Id` is believed, and the request size limits.

use super::error::Errors;
use super::raw::RawSettings;
use super::secret::Secret;
use super::settings::parse_listen;
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// Fields of the access log line (Pomerium's names).
pub const ACCESS_FIELDS: &[&str] = &[
    "upstream-cluster",
    "method",
    "authority",
    "path",
    "query",
    "user-agent",
    "referer",
    "forwarded-for",
    "ip",
    "request-id",
    "duration",
    "size",
    "response-code",
    "response-code-details",
];

/// Pomerium's default access log fields.
const ACCESS_DEFAULT: &[&str] = &[
    "upstream-cluster",
    "method",
    "authority",
    "path",
    "user-agent",
    "referer",
    "forwarded-for",
    "request-id",
    "duration",
    "size",
    "response-code",
    "response-code-details",
];

/// Fields of the authorize log line (Pomerium's names; `reasons` is Vallum's: why, in words).
pub const AUTHORIZE_FIELDS: &[&str] = &[
    "request-id",
    "method",
    "path",
    "host",
    "ip",
    "session-id",
    "user",
    "email",
    "route-id",
    "allow",
    "deny",
    "reasons",
    "mcp-method",
    "mcp-tool",
    "mcp-tool-parameters",
];

/// Every field but the last, the tool call's arguments, which may carry what the agent was told
/// (file contents, queries, secrets): those are logged only when the list names them.
const AUTHORIZE_DEFAULT: &[&str] = AUTHORIZE_FIELDS.split_at(AUTHORIZE_FIELDS.len() - 1).0;

/// Pomerium fields Vallum accepts in the lists but does not emit (with why), so a migrated
/// config loads. Token fields are never logged, whatever the config says.
const POMERIUM_ONLY_FIELDS: &[(&str, &str)] = &[
    ("check-request-id", "Vallum has one request id"),
    ("cluster-stat-name", "use upstream-cluster"),
    ("client-certificate", "not logged yet"),
    ("impersonate-session-id", "Vallum has no impersonation"),
    ("impersonate-user-id", "Vallum has no impersonation"),
    ("impersonate-email", "Vallum has no impersonation"),
    ("removed-groups-count", "Vallum does not filter groups"),
    ("service-account-id", "Vallum has no service accounts"),
    ("envoy-route-checksum", "Vallum has no Envoy"),
    ("envoy-route-id", "use route-id"),
    ("route-checksum", "use route-id"),
    ("allow-why-true", "use reasons"),
    ("allow-why-false", "use reasons"),
    ("deny-why-true", "use reasons"),
    ("deny-why-false", "use reasons"),
    ("body", "request bodies are never logged"),
    (
        "headers",
        "request headers are never logged (they carry cookies and tokens)",
    ),
    ("id-token", "tokens are never logged"),
    ("id-token-claims", "tokens are never logged"),
];

const fn const_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A set of log fields, by index into `ACCESS_FIELDS` / `AUTHORIZE_FIELDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSet(u32);

impl FieldSet {
    fn of(all: &[&str], names: &[&str]) -> FieldSet {
        FieldSet(names.iter().fold(0, |acc, n| acc | Self::bit(all, n)))
    }

    /// The bit of `name` in `all` (0 when it is not there), for `const` use: a log line asks
    /// about each of its fields with one `and`, not a search by name on every request.
    pub const fn bit(all: &[&str], name: &str) -> u32 {
        let mut i = 0;
        while i < all.len() {
            if const_eq(all[i].as_bytes(), name.as_bytes()) {
                return 1 << i;
            }
            i += 1;
        }
        0
    }

    pub fn has_bit(&self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    /// Whether field `name` (one of the known names) is selected.
    pub fn has(&self, all: &[&str], name: &str) -> bool {
        self.has_bit(Self::bit(all, name))
    }
}

#[derive(Debug, Clone)]
pub struct OpsSettings {
    /// `/metrics` listener (`metrics_address`); off when absent.
    pub metrics_address: Option<SocketAddr>,
    /// The `Authorization` value a scrape must send (`Basic …` from `metrics_basic_auth`).
    pub metrics_authorization: Option<Secret>,
    /// Probe listener (`health_check_addr`, default 127.0.0.1:28080); `None` when set to "".
    pub health_check_addr: Option<SocketAddr>,
    pub access_log: FieldSet,
    pub authorize_log: FieldSet,
    /// Peers whose `X-Request-Id` is kept (`trusted_proxies`; default none).
    pub trusted_proxies: Vec<IpNet>,
    /// `xff_num_trusted_hops`: proxies in front of every connection, so the client is the N-th
    /// `X-Forwarded-For` address from the right and `X-Forwarded-Proto` is believed.
    pub xff_num_trusted_hops: usize,
    /// Largest request head (all header names and values) accepted.
    pub max_request_header_bytes: usize,
    pub max_request_headers: usize,
    /// Default request body limit for routes without `max_request_bytes`.
    pub max_request_bytes: Option<u64>,
    /// Identity header names stripped from every request.
    pub strip_identity_headers: StripList,
    /// Requests per second one client IP may make to the sign-in endpoints (0: unlimited).
    pub signin_rate_limit: u32,
    /// Worker threads for the proxy (`None`: one per core, or the Pingora conf's `threads`).
    /// Read at start-up only: a change takes a restart or a binary upgrade.
    pub threads: Option<usize>,
}

/// Headers other identity-aware proxies use to tell upstreams who the user is. An upstream
/// migrated from oauth2-proxy, Authelia or Apache may still trust them, so a client must not be
/// able to send them through Vallum.
pub const DEFAULT_STRIP_IDENTITY: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-auth-request-*",
    "remote-user",
    "remote-email",
    "remote-groups",
    "remote-name",
    "x-remote-user",
    "x-webauth-user",
    "x-user",
    "x-email",
    "x-authenticated-user",
    "x-goog-authenticated-user-*",
    "x-ms-client-principal*",
    "cf-access-*",
];

impl OpsSettings {
    pub fn trusts(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.trusted_proxies.iter().any(|n| n.contains(&ip)))
    }
}

fn fields(
    key: &str,
    given: Option<&Vec<String>>,
    all: &[&str],
    default: &[&str],
    errs: &mut Errors,
    warnings: &mut Vec<String>,
) -> FieldSet {
    let Some(given) = given else {
        return FieldSet::of(all, default);
    };
    let mut names = Vec::new();
    for (i, name) in given.iter().enumerate() {
        let n = name.trim().to_ascii_lowercase();
        if all.contains(&n.as_str()) {
            names.push(n);
        } else if let Some((_, why)) = POMERIUM_ONLY_FIELDS
            .iter()
            .find(|(p, _)| *p == n || n.starts_with(&format!("{p}.")))
        {
            warnings.push(format!(
                "{key}[{i}]: {n:?} is not emitted by Vallum ({why})"
            ));
        } else {
            errs.push(
                format!("{key}[{i}]"),
                format!("unknown field {n:?}; expected one of: {}", all.join(", ")),
            );
        }
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    FieldSet::of(all, &refs)
}

/// `metrics_basic_auth` (base64 of `user:password`) as the `Authorization` value to expect.
fn metrics_authorization(raw: &RawSettings, errs: &mut Errors) -> Option<Secret> {
    raw.metrics_basic_auth.as_deref().and_then(|b| {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok());
        match decoded {
            Some(up) if up.contains(':') => Some(Secret::new(format!("Basic {}", b.trim()))),
            _ => {
                errs.push(
                    "metrics_basic_auth",
                    "expected base64 of user:password (`echo -n user:pass | base64`)",
                );
                None
            }
        }
    })
}

/// Canonical (lower-case, `-`) header names, exact or (a trailing `*`) prefixes. Every request
/// asks about each header it carries, so the exact names are one hash lookup, not a walk down
/// the list.
#[derive(Debug, Clone, Default)]
pub struct StripList {
    exact: HashSet<Box<str>, foldhash::fast::RandomState>,
    prefixes: Vec<Box<str>>,
}

impl StripList {
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut list = StripList::default();
        for n in names {
            match n.as_ref().strip_suffix('*') {
                Some(prefix) => list.prefixes.push(prefix.into()),
                None => {
                    list.exact.insert(n.as_ref().into());
                }
            }
        }
        list
    }

    /// Whether a canonical name is on the list.
    pub fn matches(&self, canonical: &str) -> bool {
        self.exact.contains(canonical) || self.prefixes.iter().any(|p| canonical.starts_with(&**p))
    }
}

/// `strip_identity_headers`: lower-case names, `_` read as `-`, a trailing `*` a prefix.
fn strip_identity_headers(raw: &RawSettings, errs: &mut Errors) -> StripList {
    let names: Vec<String> = match &raw.strip_identity_headers {
        None => DEFAULT_STRIP_IDENTITY
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let c = h.trim().to_ascii_lowercase().replace('_', "-");
                let name = c.strip_suffix('*').unwrap_or(&c);
                let ok = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                errs.check(
                    format!("strip_identity_headers[{i}]"),
                    if ok {
                        Ok(c.clone())
                    } else {
                        Err(format!(
                            "{h:?} is not a header name (a trailing * matches a prefix)"
                        ))
                    },
                )
            })
            .collect(),
    };
    StripList::new(names)
}

pub fn compile(raw: &RawSettings, errs: &mut Errors, warnings: &mut Vec<String>) -> OpsSettings {
    let metrics_address = raw
        .metrics_address
        .as_deref()
        .filter(|a| !a.trim().is_empty())
        .and_then(|a| errs.check("metrics_address", parse_listen(a)));
    let metrics_authorization = metrics_authorization(raw, errs);
    if metrics_authorization.is_some() && metrics_address.is_none() {
        errs.push("metrics_basic_auth", "set metrics_address too");
    }
    let health_check_addr = match raw.health_check_addr.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 28080))),
        Some(a) if a.trim().is_empty() => None,
        Some(a) => errs.check("health_check_addr", parse_listen(a)),
    };
    let trusted_proxies = nets("trusted_proxies", &raw.trusted_proxies, errs);
    OpsSettings {
        metrics_address,
        metrics_authorization,
        health_check_addr,
        access_log: fields(
            "access_log_fields",
            raw.access_log_fields.as_ref(),
            ACCESS_FIELDS,
            ACCESS_DEFAULT,
            errs,
            warnings,
        ),
        authorize_log: fields(
            "authorize_log_fields",
            raw.authorize_log_fields.as_ref(),
            AUTHORIZE_FIELDS,
            AUTHORIZE_DEFAULT,
            errs,
            warnings,
        ),
        trusted_proxies,
        xff_num_trusted_hops: raw.xff_num_trusted_hops.unwrap_or(0) as usize,
        max_request_header_bytes: raw.max_request_header_bytes.unwrap_or(64 * 1024),
        max_request_headers: raw.max_request_headers.unwrap_or(100),
        max_request_bytes: raw.max_request_bytes,
        strip_identity_headers: strip_identity_headers(raw, errs),
        signin_rate_limit: raw.signin_rate_limit.unwrap_or(20),
        threads: match raw.threads {
            Some(0) => {
                errs.push(
                    "threads",
                    "must be at least 1 (leave it unset for one per core)",
                );
                None
            }
            Some(n) if n > 1024 => {
                errs.push("threads", "at most 1024");
                None
            }
            other => other,
        },
    }
}

/// A list of addresses or CIDR ranges (`10.0.0.0/8`, `192.0.2.7`, `::1`), each checked.
pub fn nets(key: &str, list: &[String], errs: &mut Errors) -> Vec<IpNet> {
    list.iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let t = t.trim();
            let net = t
                .parse::<IpNet>()
                .or_else(|_| t.parse::<IpAddr>().map(IpNet::from));
            errs.check(
                format!("{key}[{i}]"),
                net.map_err(|_| format!("{t:?} is not an IP address or CIDR range")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_yaml(y: &str) -> (Result<OpsSettings, String>, Vec<String>) {
        let raw: RawSettings = serde_yaml_ng::from_str(y).unwrap();
        let mut errs = Errors::default();
        let mut warnings = Vec::new();
        let ops = compile(&raw, &mut errs, &mut warnings);
        let r = if errs.is_empty() {
            Ok(ops)
        } else {
            Err(errs.into_errors().to_string())
        };
        (r, warnings)
    }

    #[test]
    fn field_lists_select_warn_and_refuse() {
        let (ops, warnings) = compile_yaml(
            "access_log_fields: [method, Path, request-id]\nauthorize_log_fields: [user, id-token, allow-why-true]\n",
        );
        let ops = ops.unwrap();
        assert!(ops.access_log.has(ACCESS_FIELDS, "path"));
        assert!(!ops.access_log.has(ACCESS_FIELDS, "user-agent"));
        assert!(ops.authorize_log.has(AUTHORIZE_FIELDS, "user"));
        assert!(!ops.authorize_log.has(AUTHORIZE_FIELDS, "email"));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let (bad, _) = compile_yaml("access_log_fields: [methd]\n");
        let e = bad.unwrap_err();
        assert!(
            e.contains("access_log_fields[0]") && e.contains("methd"),
            "{e}"
        );
    }

    #[test]
    fn listeners_auth_and_trust() {
        let (ops, _) = compile_yaml(
            "metrics_address: ':9090'\nmetrics_basic_auth: dXNlcjpwYXNz\ntrusted_proxies: [10.0.0.0/8, 192.168.1.1]\nhealth_check_addr: ''\n",
        );
        let ops = ops.unwrap();
        assert_eq!(ops.metrics_address, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(
            ops.metrics_authorization.as_deref(),
            Some("Basic dXNlcjpwYXNz")
        );
        assert_eq!(ops.health_check_addr, None);
        assert!(ops.trusts(Some("10.1.2.3".parse().unwrap())));
        assert!(ops.trusts(Some("192.168.1.1".parse().unwrap())));
        assert!(!ops.trusts(Some("192.168.1.2".parse().unwrap())));
        assert!(!ops.trusts(None));
        let (bad, _) = compile_yaml("metrics_basic_auth: notbase64!\ntrusted_proxies: [nope]\n");
        let e = bad.unwrap_err();
        assert!(
            e.contains("metrics_basic_auth") && e.contains("trusted_proxies[0]"),
            "{e}"
        );
        let (default, _) = compile_yaml("{}");
        assert_eq!(
            default.unwrap().health_check_addr,
            Some("127.0.0.1:28080".parse().unwrap())
        );
    }
}
