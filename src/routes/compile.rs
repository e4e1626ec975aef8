//! `RawRoute` → `Route`: parse `from`/`to`, check that the options fit together, compile
//! regexes and headers, and build (or reuse) the upstream pool.

use super::route::*;
use crate::config::error::Errors;
use crate::config::raw::RawRoute;
use crate::config::settings::{header_pairs, Settings};
use crate::policy::{parse_policy, Legacy, Policy};
use crate::upstream::Pool;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use regex::Regex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
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
        Some(from) => match from.strip_prefix("tcp+") {
            // A tunnel route: the port names the service, so it is required.
            Some(inner) => match parse_from(inner) {
                Ok((h, Some(port))) => (Some(h), Some(port)),
                Ok(_) => {
                    e.push(
                        p("from"),
                        "a tcp+ route needs the service port, e.g. tcp+https://db.example.com:5432",
                    );
                    (None, None)
                }
                Err(m) => {
                    e.push(p("from"), m);
                    (None, None)
                }
            },
            None => match parse_from(from) {
                Ok((h, port)) => (Some(h), port),
                Err(m) => {
                    e.push(p("from"), m);
                    (None, None)
                }
            },
        },
    };
    let tunnel = raw.from.as_deref().is_some_and(|f| f.starts_with("tcp+"));

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
    } else if let (true, Some(to)) = (tunnel, &raw.to) {
        compile_tunnel(&to.0, &p("to"), &mut e).map(Action::Tunnel)
    } else if let Some(to) = &raw.to {
        crate::upstream::compile::pool(raw, &to.0, base, ctx, &mut e).map(Action::Upstream)
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

    let bearer = crate::config::auth::bearer_format(
        raw.bearer_token_format.as_deref(),
        &p("bearer_token_format"),
        &mut e,
    )
    .or_else(|| ctx.settings.auth.as_ref().map(|a| a.bearer))
    .unwrap_or_default();

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
        bearer,
        access_token_audiences: raw
            .idp_access_token_allowed_audiences
            .clone()
            .or_else(|| {
                ctx.settings
                    .auth
                    .as_ref()
                    .map(|a| a.access_token_audiences.clone())
            })
            .unwrap_or_default(),
        remove_request_headers,
        response_headers,
        rewrite_response_headers,
        upgrades,
        timeout: Some(timeout).filter(|d| !d.is_zero()),
        timeout_explicit: raw.timeout.is_some(),
        idle_timeout: raw.idle_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        max_request_bytes: raw.max_request_bytes.or(ctx.settings.ops.max_request_bytes),
        allow_unverified_email: raw.allow_unverified_email,
        websocket_origins: raw
            .websocket_allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .collect(),
        metrics: Default::default(),
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

/// `to` of a tunnel route: `tcp://host:port` (or a list), resolved at load like other upstreams.
fn compile_tunnel(to: &[String], path: &str, e: &mut Errors) -> Option<Vec<std::net::SocketAddr>> {
    use std::net::ToSocketAddrs;
    let mut addrs = Vec::new();
    for (i, t) in to.iter().enumerate() {
        let Some(authority) = t.strip_prefix("tcp://").map(|a| a.trim_end_matches('/')) else {
            e.push(
                format!("{path}[{i}]"),
                "a tcp+ route's `to` must be tcp://host:port",
            );
            continue;
        };
        match authority.to_socket_addrs() {
            Ok(found) => addrs.extend(found),
            Err(err) => e.push(
                format!("{path}[{i}]"),
                format!("cannot resolve {authority:?}: {err}"),
            ),
        }
    }
    (!addrs.is_empty()).then_some(addrs)
}

/// `https://host[:port]`, `http://…`, `https://*.example.com`, `https://*`.
fn parse_from(from: &str) -> Result<(HostPattern, Option<u16>), String> {
    let (scheme, rest) = from
        .split_once("://")
        .ok_or_else(|| format!("{from:?} is not a URL (expected https://host)"))?;
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        "udp+https" | "ssh" => {
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
}
