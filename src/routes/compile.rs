//! `RawRoute` → `Route`: parse `from`/`to`, check that the options fit together, compile
//! regexes and headers, and build (or reuse) the upstream pool.

use super::route::*;
use crate::config::error::Errors;
use crate::config::pem::{self, PemSource};
use crate::config::raw::{RawHealthCheck, RawRoute};
use crate::config::settings::{header_pairs, Settings};
use crate::policy::{parse_policy, Legacy, Policy};
use crate::upstream::{
    HealthKind, HealthSpec, LbPolicy, Pool, PoolSpec, UpstreamTarget, UpstreamTls,
};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use regex::Regex;
use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Inputs shared by every route of one config.
pub struct Ctx<'a> {
    pub settings: &'a Settings,
    /// Pools of the snapshot being replaced, reused when their definition is unchanged.
    pub previous_pools: &'a HashMap<String, Arc<Pool>>,
    pub pools: HashMap<String, Arc<Pool>>,
    pub files: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

pub fn compile(
    raw: &RawRoute,
    index: usize,
    base: &str,
    ctx: &mut Ctx<'_>,
    errs: &mut Errors,
) -> Option<Route> {
    let mut e = Errors::default();
    let p = |k: &str| format!("{base}.{k}");

    let (host, port) = match raw.from.as_deref() {
        None => {
            e.push(
                p("from"),
                "required: the external URL this route serves, e.g. https://app.example.com",
            );
            (None, None)
        }
        Some(from) => match parse_from(from) {
            Ok((h, port)) => (Some(h), port),
            Err(m) => {
                e.push(p("from"), m);
                (None, None)
            }
        },
    };

    // Path matching.
    let set: Vec<&str> = [
        ("prefix", raw.prefix.is_some()),
        ("path", raw.path.is_some()),
        ("regex", raw.regex.is_some()),
    ]
    .iter()
    .filter(|(_, s)| *s)
    .map(|(k, _)| *k)
    .collect();
    if set.len() > 1 {
        e.push(
            p(set.get(1).copied().unwrap_or("path")),
            format!(
                "only one of prefix, path and regex may be set (found {})",
                set.join(", ")
            ),
        );
    }
    let path = if let Some(pre) = &raw.prefix {
        if !pre.starts_with('/') {
            e.push(p("prefix"), "must start with /");
        }
        PathMatch::Prefix(pre.clone())
    } else if let Some(exact) = &raw.path {
        if !exact.starts_with('/') {
            e.push(p("path"), "must start with /");
        }
        PathMatch::Exact(exact.clone())
    } else if let Some(re) = &raw.regex {
        match Regex::new(&format!("^(?:{re})$")) {
            Ok(r) => PathMatch::Regex(r),
            Err(err) => {
                e.push(p("regex"), regex_error(&err));
                PathMatch::Any
            }
        }
    } else {
        PathMatch::Any
    };

    // Path rewrites.
    let rewrite = match (
        &raw.prefix_rewrite,
        &raw.regex_rewrite_pattern,
        &raw.regex_rewrite_substitution,
    ) {
        (Some(_), Some(_), _) => {
            e.push(
                p("prefix_rewrite"),
                "prefix_rewrite and regex_rewrite_pattern cannot both be set",
            );
            PathRewrite::None
        }
        (Some(rw), None, _) => match &path {
            PathMatch::Prefix(m) | PathMatch::Exact(m) => PathRewrite::Prefix {
                matched: m.clone(),
                replacement: rw.clone(),
            },
            PathMatch::Any => PathRewrite::Prefix {
                matched: "/".into(),
                replacement: rw.clone(),
            },
            PathMatch::Regex(_) => {
                e.push(
                    p("prefix_rewrite"),
                    "needs a prefix or path match (use regex_rewrite_pattern with regex)",
                );
                PathRewrite::None
            }
        },
        (None, Some(pat), sub) => match Regex::new(pat) {
            Ok(re) => PathRewrite::Regex {
                pattern: re,
                substitution: envoy_substitution(sub.as_deref().unwrap_or("")),
            },
            Err(err) => {
                e.push(p("regex_rewrite_pattern"), regex_error(&err));
                PathRewrite::None
            }
        },
        (None, None, Some(_)) => {
            e.push(
                p("regex_rewrite_substitution"),
                "needs regex_rewrite_pattern",
            );
            PathRewrite::None
        }
        (None, None, None) => PathRewrite::None,
    };

    // What the route does.
    let actions = [
        raw.to.is_some(),
        raw.redirect.is_some(),
        raw.response.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if actions != 1 {
        e.push(
            base.to_string(),
            if actions == 0 {
                "needs one of `to`, `redirect` or `response`"
            } else {
                "only one of `to`, `redirect` and `response` may be set"
            },
        );
    }
    let action = if let Some(resp) = &raw.response {
        match StatusCode::from_u16(resp.status) {
            Ok(s) if resp.status >= 200 => Some(Action::Respond {
                status: s,
                body: Bytes::from(resp.body.clone()),
            }),
            _ => {
                e.push(
                    p("response.status"),
                    format!("{} is not a valid HTTP status (200-599)", resp.status),
                );
                None
            }
        }
    } else if let Some(r) = &raw.redirect {
        compile_redirect(r, base, &mut e).map(Action::Redirect)
    } else if let Some(to) = &raw.to {
        compile_pool(raw, &to.0, base, ctx, &mut e).map(Action::Upstream)
    } else {
        None
    };

    let access = compile_access(raw, base, ctx, &mut e);
    let pass_identity_headers = raw.pass_identity_headers.unwrap_or_else(|| {
        ctx.settings
            .auth
            .as_ref()
            .is_some_and(|a| a.pass_identity_headers)
    });
    let issuer_uri = match &raw.jwt_issuer_format {
        Some(f) => {
            let mut local = Errors::default();
            let v =
                crate::config::auth::issuer_format(Some(f), &p("jwt_issuer_format"), &mut local);
            e.extend(local);
            v
        }
        None => ctx.settings.auth.as_ref().is_some_and(|a| a.issuer_uri),
    };

    let host_header = match (
        &raw.host_rewrite,
        &raw.host_rewrite_header,
        raw.preserve_host_header,
    ) {
        (Some(h), None, false) => match HeaderValue::from_str(h) {
            Ok(v) => HostHeader::Fixed(v),
            Err(_) => {
                e.push(p("host_rewrite"), "not a valid host");
                HostHeader::Auto
            }
        },
        (None, Some(h), false) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => HostHeader::FromHeader(n),
            Err(_) => {
                e.push(p("host_rewrite_header"), "not a valid header name");
                HostHeader::Auto
            }
        },
        (None, None, true) => HostHeader::Preserve,
        (None, None, false) => HostHeader::Auto,
        _ => {
            e.push(
                p("preserve_host_header"),
                "preserve_host_header, host_rewrite and host_rewrite_header are mutually exclusive",
            );
            HostHeader::Auto
        }
    };

    let mut set_request_headers = Vec::new();
    for (k, v) in &raw.set_request_headers {
        let path = format!("{}.{k}", p("set_request_headers"));
        let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
            e.push(path, "not a valid HTTP header name");
            continue;
        };
        match HeaderTemplate::parse(&v.0) {
            Ok(t) => set_request_headers.push((name, t)),
            Err(m) => e.push(path, m),
        }
    }
    let mut remove_request_headers = Vec::new();
    for (i, h) in raw.remove_request_headers.iter().enumerate() {
        match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => remove_request_headers.push(n),
            Err(_) => e.push(
                format!("{}[{i}]", p("remove_request_headers")),
                "not a valid header name",
            ),
        }
    }
    let mut response_headers = ctx.settings.response_headers.clone();
    for (name, value) in header_pairs(
        &p("set_response_headers"),
        raw.set_response_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.0.as_str())),
        &mut e,
    ) {
        response_headers.retain(|(n, _)| n != name);
        response_headers.push((name, value));
    }
    let mut rewrite_response_headers = Vec::new();
    for (i, rw) in raw.rewrite_response_headers.iter().enumerate() {
        match HeaderName::from_bytes(rw.header.as_bytes()) {
            Ok(n) => rewrite_response_headers.push(ResponseHeaderRewrite {
                header: n,
                prefix: rw.prefix.clone(),
                value: rw.value.clone(),
            }),
            Err(_) => e.push(
                format!("{}[{i}].header", p("rewrite_response_headers")),
                "not a valid header name",
            ),
        }
    }

    let mut upgrades: Vec<String> = ctx.settings.allow_upgrades.clone();
    upgrades.extend(raw.allow_upgrades.iter().map(|u| u.to_ascii_lowercase()));
    if raw.allow_websockets {
        upgrades.push("websocket".into());
    }
    if raw.allow_spdy {
        upgrades.push("spdy/3.1".into());
    }

    let timeout = raw
        .timeout
        .map(|d| d.0)
        .unwrap_or(ctx.settings.default_upstream_timeout);
    let id: Arc<str> = raw
        .name
        .clone()
        .or_else(|| raw.id.clone())
        .unwrap_or_else(|| format!("route-{index}"))
        .into();

    let ok = e.is_empty();
    errs.extend(e);
    if !ok {
        return None;
    }
    Some(Route {
        id,
        host: host?,
        port,
        path,
        rewrite,
        action: action?,
        access,
        host_header,
        set_request_headers,
        pass_identity_headers,
        issuer_uri,
        remove_request_headers,
        response_headers,
        rewrite_response_headers,
        upgrades,
        timeout: Some(timeout).filter(|d| !d.is_zero()),
        timeout_explicit: raw.timeout.is_some(),
        idle_timeout: raw.idle_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
    })
}

/// Pomerium's access keys → `Public`, or a compiled policy (legacy keys OR-ed into one allow
/// rule, then the PPL rules). A route that says nothing is denied.
fn compile_access(raw: &RawRoute, base: &str, ctx: &Ctx<'_>, e: &mut Errors) -> Access {
    let p = |k: &str| format!("{base}.{k}");
    let has_rules = raw.policy.is_some()
        || raw.allowed_users.is_some()
        || raw.allowed_domains.is_some()
        || raw.allowed_idp_claims.is_some()
        || raw.allow_any_authenticated_user;
    if raw.allow_public_unauthenticated_access && has_rules {
        e.push(
            p("allow_public_unauthenticated_access"),
            "cannot be combined with policy, allowed_users, allowed_domains, allowed_idp_claims or allow_any_authenticated_user",
        );
    }
    if raw.allow_public_unauthenticated_access && !raw.cors_allow_preflight {
        return Access::Public;
    }
    let mut claims = Vec::new();
    match &raw.allowed_idp_claims {
        None => {}
        Some(serde_yaml_ng::Value::Mapping(m)) => {
            for (k, v) in m {
                let name = crate::policy::matchers::scalar(k).unwrap_or_default();
                let values: Vec<String> = match v {
                    serde_yaml_ng::Value::Sequence(s) => s
                        .iter()
                        .filter_map(crate::policy::matchers::scalar)
                        .collect(),
                    other => crate::policy::matchers::scalar(other).into_iter().collect(),
                };
                claims.push((name, values));
            }
        }
        Some(_) => e.push(
            p("allowed_idp_claims"),
            "expected a map of claim name to a list of values",
        ),
    }
    let legacy = Legacy {
        allowed_users: raw.allowed_users.as_deref().unwrap_or(&[]),
        allowed_domains: raw.allowed_domains.as_deref().unwrap_or(&[]),
        allowed_idp_claims: &claims,
        allow_public: raw.allow_public_unauthenticated_access,
        allow_any_authenticated_user: raw.allow_any_authenticated_user,
        cors_allow_preflight: raw.cors_allow_preflight,
    };
    let mut policy = Policy::default();
    policy.rules.extend(legacy.rule());
    if let Some(v) = &raw.policy {
        match parse_policy(v, &p("policy")) {
            Ok(ppl) => policy.rules.extend(ppl.rules),
            Err(err) => e.push(err.path, err.message),
        }
    }
    if policy.needs_identity() && ctx.settings.auth.is_none() {
        e.push(
            base.to_string(),
            "this route's access rules need a signed-in user: set authenticate_service_url and the idp_* keys",
        );
    }
    Access::Policy(Arc::new(policy))
}

/// `https://host[:port]`, `http://…`, `https://*.example.com`, `https://*`.
fn parse_from(from: &str) -> Result<(HostPattern, Option<u16>), String> {
    let (scheme, rest) = from
        .split_once("://")
        .ok_or_else(|| format!("{from:?} is not a URL (expected https://host)"))?;
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        "tcp+https" | "udp+https" | "ssh" => {
            return Err(format!(
                "{scheme}:// routes are not supported by this build yet"
            ))
        }
        _ => {
            return Err(format!(
                "unsupported scheme {scheme:?}; use https:// (or http://)"
            ))
        }
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err("must not have a path; use prefix, path or regex to match paths".into());
    }
    if authority.contains('@') {
        return Err("must not contain user info".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            let port: u16 = p.parse().map_err(|_| format!("invalid port {p:?}"))?;
            (h, Some(port).filter(|p| *p != default_port))
        }
        _ => (authority, None),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Err("has no host".into());
    }
    if host == "*" {
        return Ok((HostPattern::Wildcard(String::new()), port));
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err("only a leading `*.` wildcard is supported".into());
        }
        return Ok((HostPattern::Wildcard(suffix.to_string()), port));
    }
    if host.contains('*') {
        return Err("only a leading `*.` wildcard is supported".into());
    }
    Url::parse(&format!("{scheme}://{host}/"))
        .map_err(|err| format!("invalid host {host:?}: {err}"))?;
    Ok((HostPattern::Exact(host), port))
}

/// The regex crate's message spans lines with a caret diagram; keep the reason.
fn regex_error(err: &regex::Error) -> String {
    let text = err.to_string();
    let reason = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    format!(
        "invalid regular expression: {}",
        reason.trim_start_matches("error: ")
    )
}

/// Envoy (RE2) writes capture references as `\1`; Rust's regex wants `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(|d| d.is_ascii_digit()) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn compile_redirect(
    r: &crate::config::raw::RawRedirect,
    base: &str,
    e: &mut Errors,
) -> Option<RedirectSpec> {
    let p = |k: &str| format!("{base}.redirect.{k}");
    let status = match r.response_code.as_ref().map(|t| t.0.to_ascii_uppercase()) {
        None => StatusCode::MOVED_PERMANENTLY,
        Some(code) => match code.as_str() {
            "301" | "MOVED_PERMANENTLY" => StatusCode::MOVED_PERMANENTLY,
            "302" | "FOUND" => StatusCode::FOUND,
            "303" | "SEE_OTHER" => StatusCode::SEE_OTHER,
            "307" | "TEMPORARY_REDIRECT" => StatusCode::TEMPORARY_REDIRECT,
            "308" | "PERMANENT_REDIRECT" => StatusCode::PERMANENT_REDIRECT,
            other => {
                e.push(
                    p("response_code"),
                    format!("{other} is not a redirect code (301, 302, 303, 307, 308)"),
                );
                return None;
            }
        },
    };
    if r.path_redirect.is_some() && r.prefix_rewrite.is_some() {
        e.push(
            p("path_redirect"),
            "path_redirect and prefix_rewrite cannot both be set",
        );
    }
    let scheme = if r.https_redirect == Some(true) {
        Some("https".to_string())
    } else {
        r.scheme_redirect.clone()
    };
    Some(RedirectSpec {
        scheme,
        host: r.host_redirect.clone(),
        port: r.port_redirect,
        path: r.path_redirect.clone(),
        prefix_rewrite: r.prefix_rewrite.clone(),
        status,
        strip_query: r.strip_query.unwrap_or(false),
    })
}

fn compile_pool(
    raw: &RawRoute,
    to: &[String],
    base: &str,
    ctx: &mut Ctx<'_>,
    e: &mut Errors,
) -> Option<Arc<Pool>> {
    let p = |k: &str| format!("{base}.{k}");
    if to.is_empty() {
        e.push(p("to"), "needs at least one URL");
        return None;
    }
    let mut targets = Vec::new();
    for (i, spec) in to.iter().enumerate() {
        let path = if to.len() > 1 {
            format!("{}[{i}]", p("to"))
        } else {
            p("to")
        };
        match parse_to(spec) {
            Ok(t) => targets.push(t),
            Err(m) => e.push(path, m),
        }
    }
    let policy = match raw
        .load_balancing_policy
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
        Some("RANDOM") => LbPolicy::Random,
        Some("LEAST_REQUEST") => LbPolicy::LeastRequest,
        Some("RING_HASH") | Some("MAGLEV") => LbPolicy::Hash,
        Some(other) => {
            e.push(p("load_balancing_policy"), format!("unknown policy {other:?}; expected ROUND_ROBIN, RANDOM, LEAST_REQUEST, RING_HASH or MAGLEV"));
            LbPolicy::RoundRobin
        }
    };
    let mut health = Vec::new();
    for (i, hc) in raw.health_checks.iter().enumerate() {
        if let Some(h) = compile_health(hc, &format!("{}[{i}]", p("health_checks")), e) {
            health.push(h);
        }
    }
    let tls = compile_upstream_tls(raw, base, &mut ctx.files, e);
    if targets.len() != to.len() {
        return None;
    }
    let tls = tls?;
    // The pool's identity across reloads: everything that shapes it.
    let key = format!(
        "{to:?}|{policy:?}|{:?}|{:?}|{:?}",
        raw.health_checks,
        (
            raw.tls_skip_verify,
            &raw.tls_upstream_server_name,
            &raw.tls_server_name
        ),
        tls_fingerprint(raw, &ctx.files)
    );
    if let Some(pool) = ctx.pools.get(&key).or_else(|| ctx.previous_pools.get(&key)) {
        let pool = Arc::clone(pool);
        ctx.pools.insert(key, Arc::clone(&pool));
        return Some(pool);
    }
    let pool = Arc::new(Pool::new(PoolSpec {
        key: key.clone(),
        targets,
        tls,
        policy,
        health,
    }));
    ctx.pools.insert(key, Arc::clone(&pool));
    Some(pool)
}

/// The bytes of the TLS material, so a rotated CA or client certificate builds a new pool.
fn tls_fingerprint(raw: &RawRoute, _files: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for v in [
        &raw.tls_custom_ca,
        &raw.tls_client_cert,
        &raw.tls_client_key,
    ]
    .into_iter()
    .flatten()
    {
        v.hash(&mut h);
    }
    for f in [
        &raw.tls_custom_ca_file,
        &raw.tls_client_cert_file,
        &raw.tls_client_key_file,
    ]
    .into_iter()
    .flatten()
    {
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

fn parse_to(spec: &str) -> Result<UpstreamTarget, String> {
    let (url_s, weight) = match spec.rsplit_once(',') {
        Some((u, w)) => (
            u.trim(),
            w.trim()
                .parse::<usize>()
                .map_err(|_| format!("invalid weight {w:?} (expected URL,WEIGHT)"))?,
        ),
        None => (spec.trim(), 1),
    };
    if weight == 0 {
        return Err("weight must be at least 1".into());
    }
    let url = Url::parse(url_s).map_err(|err| format!("{url_s:?} is not a URL: {err}"))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        s => {
            return Err(format!(
                "scheme {s}:// is not supported by this build (use http:// or https://)"
            ))
        }
    };
    let host = url
        .host_str()
        .ok_or("URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().ok_or("URL has no port")?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {host}: {err}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or(&host)),
        None => url.host_str().unwrap_or(&host).to_string(),
    };
    Ok(UpstreamTarget {
        addr,
        tls,
        authority,
        host,
        path_prefix: url.path().trim_end_matches('/').to_string(),
        weight,
    })
}

fn compile_health(hc: &RawHealthCheck, base: &str, e: &mut Errors) -> Option<HealthSpec> {
    let p = |k: &str| format!("{base}.{k}");
    if hc.grpc_health_check.is_some() {
        e.push(p("grpc_health_check"), "gRPC health checks are not supported by this build yet; use http_health_check or tcp_health_check");
        return None;
    }
    let kind = match (&hc.http_health_check, &hc.tcp_health_check) {
        (Some(h), None) => {
            let mut expected = Vec::new();
            for (i, r) in h.expected_statuses.iter().enumerate() {
                if r.start < 100 || r.end > 600 || r.start >= r.end {
                    e.push(
                        format!("{}[{i}]", p("http_health_check.expected_statuses")),
                        "needs 100 <= start < end <= 600 (end is exclusive)",
                    );
                }
                expected.push((r.start, r.end));
            }
            if expected.is_empty() {
                expected.push((200, 201));
            }
            if let Some(c) = &h.codec_client_type {
                if !c.eq_ignore_ascii_case("http1") {
                    e.push(
                        p("http_health_check.codec_client_type"),
                        "only HTTP1 is supported by this build",
                    );
                }
            }
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.parse::<http::Uri>().is_err() {
                e.push(
                    p("http_health_check.path"),
                    "must be a path starting with /",
                );
            }
            HealthKind::Http {
                host: h.host.clone(),
                path,
                expected,
            }
        }
        (None, Some(t)) => {
            let send = match &t.send {
                Some(pl) => e
                    .check(p("tcp_health_check.send"), payload(pl))
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let mut receive = Vec::new();
            for (i, pl) in t.receive.iter().enumerate() {
                if let Some(b) = e.check(
                    format!("{}[{i}]", p("tcp_health_check.receive")),
                    payload(pl),
                ) {
                    receive.push(b);
                }
            }
            HealthKind::Tcp { send, receive }
        }
        (None, None) => {
            e.push(
                base.to_string(),
                "needs http_health_check or tcp_health_check",
            );
            return None;
        }
        (Some(_), Some(_)) => {
            e.push(
                base.to_string(),
                "only one of http_health_check and tcp_health_check per entry",
            );
            return None;
        }
    };
    Some(HealthSpec {
        kind,
        timeout: hc.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(1)),
        interval: hc
            .interval
            .map(|d| d.0)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(5)),
        healthy_threshold: hc.healthy_threshold.unwrap_or(1) as usize,
        unhealthy_threshold: hc.unhealthy_threshold.unwrap_or(1) as usize,
    })
}

fn payload(p: &crate::config::raw::RawPayload) -> Result<Vec<u8>, String> {
    match (&p.text, &p.binary) {
        (Some(hex), None) => decode_hex(hex),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("binary: not base64: {e}")),
        _ => Err("needs exactly one of text (hex) or binary (base64)".into()),
    }
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return Err("text: hex payload must have an even number of digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16)
                .map_err(|_| format!("text: {s:?} is not hex (Envoy payloads are hex-encoded)"))
        })
        .collect()
}

fn compile_upstream_tls(
    raw: &RawRoute,
    base: &str,
    files: &mut Vec<PathBuf>,
    e: &mut Errors,
) -> Option<UpstreamTls> {
    let p = |k: &str| format!("{base}.{k}");
    let mut ok = true;
    let mut pick = |inline: &Option<String>,
                    file: &Option<String>,
                    key: &str,
                    files: &mut Vec<PathBuf>,
                    e: &mut Errors|
     -> Option<PemSource> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                e.push(p(key), format!("{key} and {key}_file cannot both be set"));
                ok = false;
                None
            }
            (Some(v), None) => Some(PemSource::Inline(v.clone())),
            (None, Some(f)) => {
                files.push(PathBuf::from(f));
                Some(PemSource::File(PathBuf::from(f)))
            }
            (None, None) => None,
        }
    };
    let ca_src = pick(
        &raw.tls_custom_ca,
        &raw.tls_custom_ca_file,
        "tls_custom_ca",
        files,
        e,
    );
    let cert_src = pick(
        &raw.tls_client_cert,
        &raw.tls_client_cert_file,
        "tls_client_cert",
        files,
        e,
    );
    let key_src = pick(
        &raw.tls_client_key,
        &raw.tls_client_key_file,
        "tls_client_key",
        files,
        e,
    );
    if !ok {
        return None;
    }
    let ca = match ca_src {
        Some(src) => match pem::read(&src).and_then(|b| pem::certs(&b)) {
            Ok(certs) => {
                let wrapped: Vec<WrappedX509> = certs
                    .into_iter()
                    .map(|c| WrappedX509::new(c.as_ref().to_vec(), parse_x509))
                    .collect();
                Some(Arc::from(wrapped))
            }
            Err(m) => {
                e.push(p("tls_custom_ca"), m);
                return None;
            }
        },
        None => None,
    };
    let client_cert = match (cert_src, key_src) {
        (Some(c), Some(k)) => {
            let loaded = pem::read(&c)
                .and_then(|b| pem::certs(&b))
                .and_then(|chain| {
                    let key = pem::private_key(&pem::read(&k)?)?;
                    rustls::crypto::ring::sign::any_supported_type(&key)
                        .map_err(|err| format!("unsupported private key: {err}"))?;
                    Ok(CertKey::new(
                        chain.iter().map(|c| c.as_ref().to_vec()).collect(),
                        key.secret_der().to_vec(),
                    ))
                });
            match loaded {
                Ok(ck) => Some(Arc::new(ck)),
                Err(m) => {
                    e.push(p("tls_client_cert"), m);
                    return None;
                }
            }
        }
        (None, None) => None,
        _ => {
            e.push(
                p("tls_client_cert"),
                "tls_client_cert and tls_client_key go together",
            );
            return None;
        }
    };
    let server_name = raw
        .tls_upstream_server_name
        .clone()
        .or_else(|| raw.tls_server_name.clone());
    Some(UpstreamTls {
        skip_verify: raw.tls_skip_verify,
        server_name,
        ca,
        client_cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_forms() {
        assert_eq!(
            parse_from("https://App.Example.com"),
            Ok((HostPattern::Exact("app.example.com".into()), None))
        );
        assert_eq!(
            parse_from("https://a.example.com:443"),
            Ok((HostPattern::Exact("a.example.com".into()), None))
        );
        assert_eq!(
            parse_from("https://a.example.com:8443"),
            Ok((HostPattern::Exact("a.example.com".into()), Some(8443)))
        );
        assert_eq!(
            parse_from("https://*.example.com"),
            Ok((HostPattern::Wildcard("example.com".into()), None))
        );
        assert!(parse_from("https://a.example.com/path").is_err());
        assert!(parse_from("ftp://a").is_err());
        assert!(parse_from("a.example.com").is_err());
    }

    #[test]
    fn envoy_capture_syntax() {
        assert_eq!(envoy_substitution(r"/v2/\1/\2"), "/v2/${1}/${2}");
        assert_eq!(envoy_substitution("$x"), "$$x");
    }

    #[test]
    fn to_weights() {
        let t = parse_to("http://127.0.0.1:8080/api/,3").unwrap();
        assert_eq!(
            (t.weight, t.path_prefix.as_str(), t.authority.as_str()),
            (3, "/api", "127.0.0.1:8080")
        );
        assert!(parse_to("http://127.0.0.1:1,0").is_err());
        assert!(parse_to("tcp://127.0.0.1:1").is_err());
    }
}
