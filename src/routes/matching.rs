//! The matching half of a route: its `from` (host and port), its path match, and the path
//! rewrite that follows from them.

use super::route::*;
use crate::config::error::Errors;
use crate::config::raw::RawRoute;
use regex::Regex;
use url::Url;

/// `from`: the host pattern and the port, if any. A `tcp+` route must name its port.
pub fn from(
    raw: &RawRoute,
    p: &dyn Fn(&str) -> String,
    e: &mut Errors,
) -> (Option<HostPattern>, Option<u16>) {
    match raw.from.as_deref() {
        None => {
            e.push(
                p("from"),
                "required: the external URL this route serves, e.g. https://app.example.com",
            );
            (None, None)
        }
        Some(from) => match from.strip_prefix("tcp+") {
            // A tunnel route: the port names the service, so it is required.
            Some(inner) => match parse_from(inner, true) {
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
            None => match parse_from(from, false) {
                Ok((h, port)) => (Some(h), port),
                Err(m) => {
                    e.push(p("from"), m);
                    (None, None)
                }
            },
        },
    }
}

/// `prefix`, `path` or `regex` (at most one).
pub fn path(raw: &RawRoute, p: &dyn Fn(&str) -> String, e: &mut Errors) -> PathMatch {
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
    if let Some(pre) = &raw.prefix {
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
    }
}

/// `prefix_rewrite` or `regex_rewrite_pattern`/`_substitution`.
pub fn rewrite(
    raw: &RawRoute,
    path: &PathMatch,
    p: &dyn Fn(&str) -> String,
    e: &mut Errors,
) -> PathRewrite {
    match (
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
        (Some(rw), None, _) => match path {
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
    }
}

/// `https://host[:port]`, `http://…`, `https://*.example.com`, `https://*`.
/// `keep_default_port`: a `tcp+` route names its service by port, so `tcp+https://db:443` keeps
/// 443 where `https://app:443` drops it.
pub(super) fn parse_from(
    from: &str,
    keep_default_port: bool,
) -> Result<(HostPattern, Option<u16>), String> {
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
            (
                h,
                Some(port).filter(|p| keep_default_port || *p != default_port),
            )
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
pub(super) fn regex_error(err: &regex::Error) -> String {
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
pub(super) fn envoy_substitution(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_forms() {
        assert_eq!(
            parse_from("https://App.Example.com", false),
            Ok((HostPattern::Exact("app.example.com".into()), None))
        );
        assert_eq!(
            parse_from("https://a.example.com:443", false),
            Ok((HostPattern::Exact("a.example.com".into()), None))
        );
        assert_eq!(
            parse_from("https://a.example.com:8443", false),
            Ok((HostPattern::Exact("a.example.com".into()), Some(8443)))
        );
        assert_eq!(
            parse_from("https://*.example.com", false),
            Ok((HostPattern::Wildcard("example.com".into()), None))
        );
        assert_eq!(
            parse_from("https://db.example.com:443", true).unwrap().1,
            Some(443),
            "a tcp+ route keeps its service port even when it is the scheme's default"
        );
        assert!(parse_from("https://a.example.com/path", false).is_err());
        assert!(parse_from("ftp://a", false).is_err());
        assert!(parse_from("a.example.com", false).is_err());
    }

    #[test]
    fn envoy_capture_syntax() {
        assert_eq!(envoy_substitution(r"/v2/\1/\2"), "/v2/${1}/${2}");
        assert_eq!(envoy_substitution("$x"), "$$x");
    }
}
