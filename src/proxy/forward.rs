//! Shaping the request that goes upstream and the response that comes back: path and host
//! rewrites, hop-by-hop headers, `X-Forwarded-*`, and the route's header sets.

use crate::config::ops::StripList;
use crate::routes::route::{
    HostHeader, RedirectSpec, ResponseHeaderRewrite, Route, TemplateValues,
};
use crate::upstream::UpstreamTarget;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora_core::{ErrorType, OrErr, Result};

/// The headers a client sent that never reach the upstream as sent, by kind: hop-by-hop ones
/// (RFC 9110 §7.6.1), the ones that describe the client or the original request (believed only
/// from a trusted proxy), and the ones frameworks read as "treat this request as another method"
/// (Rails, Express's method-override, Symfony, ASP.NET, Google APIs). One `match`, so a clean
/// header costs a few length comparisons.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    HopByHop,
    Forwarding,
    MethodOverride,
    Other,
}

fn kind(name: &str) -> Kind {
    match name {
        "keep-alive" | "proxy-connection" | "te" | "trailer" | "proxy-authorization" => {
            Kind::HopByHop
        }
        "forwarded" | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto"
        | "x-forwarded-port" | "x-forwarded-prefix" | "x-forwarded-uri" | "x-real-ip"
        | "x-original-url" | "x-original-uri" | "x-rewrite-url" | "x-client-ip"
        | "true-client-ip" => Kind::Forwarding,
        "x-http-method-override" | "x-http-method" | "x-method-override" => Kind::MethodOverride,
        _ => Kind::Other,
    }
}

/// The path sent upstream: route rewrite, then the `to` URL's own path prepended.
pub fn upstream_path(
    route: &Route,
    target: &UpstreamTarget,
    path: &str,
    query: Option<&str>,
) -> String {
    let rewritten = route.rewrite.apply(path);
    let mut out = String::with_capacity(
        target.path_prefix.len() + rewritten.len() + 1 + query.map_or(0, str::len),
    );
    out.push_str(&target.path_prefix);
    if !rewritten.starts_with('/') {
        out.push('/');
    }
    out.push_str(&rewritten);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Whether a request target is exactly `path[?query]`, byte for byte.
pub fn same_target(raw: &[u8], path: &str, query: Option<&str>) -> bool {
    match query {
        None => raw == path.as_bytes(),
        Some(q) => {
            raw.len() == path.len() + 1 + q.len()
                && raw.starts_with(path.as_bytes())
                && raw.get(path.len()) == Some(&b'?')
                && raw.ends_with(q.as_bytes())
        }
    }
}

/// Who the upstream is told about (a signed-in request only). Borrowed from the session: the
/// tokens are copied only where a header template uses them.
pub struct UpstreamIdentity<'a> {
    /// The (cached) assertion; cloning it is a reference count.
    pub jwt: Option<HeaderValue>,
    pub id_token: &'a str,
    pub access_token: &'a str,
    /// `X-Pomerium-Claim-*`, when `pass_identity_headers` is on.
    pub headers: Vec<(HeaderName, String)>,
}

const X_POMERIUM_JWT_ASSERTION: HeaderName = HeaderName::from_static("x-pomerium-jwt-assertion");

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A header name as an upstream might read it: lower-case, `_` as `-` (some frameworks fold
/// one into the other, which would let `X_Forwarded_User` pass for `X-Forwarded-User`). Parsed
/// header names are already lower-case, so only a name with `_` costs an allocation.
fn canonical(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| fold(b) != b) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase().replace('_', "-"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// One byte of a name in its [`canonical`] form.
fn fold(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// Whether `name` is one of the identity headers Vallum owns on the way upstream: every
/// `X-Pomerium-*`, the configured strip list, and the names Vallum itself sets.
pub fn is_owned<'a>(
    name: &str,
    strip: &StripList,
    set_names: impl IntoIterator<Item = &'a HeaderName>,
) -> bool {
    let n = canonical(name);
    n.starts_with("x-pomerium-")
        || strip.matches(&n)
        || set_names
            .into_iter()
            .any(|h| same_canonical(h.as_str(), &n))
}

/// `canonical(name) == canonical`, without building the left side: the lengths differ for
/// nearly every pair, and that settles it (this runs for each header a client sends, against
/// each name Vallum sets).
fn same_canonical(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len()
        && name
            .bytes()
            .zip(canonical.bytes())
            .all(|(a, b)| fold(a) == b)
}

pub struct ForwardInfo<'a> {
    pub identity: Option<UpstreamIdentity<'a>>,
    /// Send the assertion as `X-Pomerium-Jwt-Assertion` (`pass_identity_headers`).
    pub pass_assertion: bool,
    /// Vallum's own cookies, removed from `Cookie` so the upstream never sees a session handle.
    pub strip_cookies: &'a [&'a str],
    pub original_host: &'a str,
    pub client_ip: Option<std::net::IpAddr>,
    pub scheme: &'static str,
    pub skip_xff_append: bool,
    /// The upgrade token this request carries and the route allows, if any.
    pub upgrade: bool,
    /// The peer is a trusted proxy: its `X-Forwarded-*` and friends are kept (and appended to).
    pub trusted_peer: bool,
    /// Identity header names stripped from every request.
    pub strip_identity: &'a StripList,
    /// Claim headers Vallum sets (stripped from the client's request either way).
    pub claim_headers: &'a [(HeaderName, String)],
    /// The connection's trusted client certificate, for `${pomerium.client_cert_*}`.
    pub client_cert: Option<&'a crate::tls::peer::PeerCert>,
}

/// Sets one header. The map is the request's or response's own (Pingora's case map is gone by
/// then), so a name is neither re-parsed nor title-cased on the way in.
pub(super) fn set(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) -> Result<()> {
    headers
        .try_insert(name, value)
        .map(drop)
        .or_err(ErrorType::InvalidHTTPHeader, "too many headers")
}

pub(super) fn value(v: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(v).or_err(ErrorType::InvalidHTTPHeader, "invalid header value")
}

/// Removes what the client must not pass on, in one pass over the headers it sent:
/// Connection-nominated and fixed hop-by-hop headers, identity headers Vallum owns (a client
/// never gets to choose them: every `X-Pomerium-*`, the claim headers and `set_request_headers`
/// names, and the configured list of headers other gateways use for identity), forwarding
/// headers from an untrusted peer, Vallum's own cookies and a programmatic-login token.
/// Removing only what is present keeps a clean request cheap (no lookups for absent names).
fn strip_client_headers(
    headers: &mut HeaderMap,
    route: &Route,
    info: &ForwardInfo<'_>,
) -> Result<()> {
    // Which of the headers looked up below are there at all: a glance at the names present
    // costs less than a hashed lookup each for what most requests do not carry.
    let (mut connection, mut cookie, mut authorization) = (false, false, false);
    for k in headers.keys() {
        connection |= *k == CONNECTION;
        cookie |= *k == http::header::COOKIE;
        authorization |= *k == http::header::AUTHORIZATION;
    }
    let nominated: Vec<String> = if connection {
        headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty() && t != "upgrade" && t != "close" && t != "keep-alive")
            .collect()
    } else {
        Vec::new()
    };
    let set_names = || {
        route
            .set_request_headers
            .iter()
            .map(|(k, _)| k)
            .chain(info.claim_headers.iter().map(|(h, _)| h))
    };
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let n = k.as_str();
            let doomed_kind = match kind(n) {
                Kind::HopByHop => true,
                Kind::Forwarding => !info.trusted_peer,
                Kind::MethodOverride => route.strip_method_override,
                Kind::Other => false,
            };
            doomed_kind
                || (!info.upgrade && (**k == UPGRADE || **k == CONNECTION))
                || nominated.iter().any(|t| t == n)
                || is_owned(n, info.strip_identity, set_names())
        })
        .cloned()
        .collect();
    // `te: trailers` is the one TE value that may cross (RFC 9113 §8.2.2): gRPC needs it.
    // Only a request that has a TE header (it is among the doomed) pays for the look.
    let te_trailers = doomed.contains(&http::header::TE)
        && headers.get(http::header::TE).is_some_and(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
    for k in doomed {
        headers.remove(&k);
    }
    if te_trailers {
        set(
            headers,
            http::header::TE,
            HeaderValue::from_static("trailers"),
        )?;
    }
    if cookie && !info.strip_cookies.is_empty() {
        if let Some(all) = crate::session::cookie::header(headers) {
            let kept = crate::session::cookie::strip(&all, info.strip_cookies);
            headers.remove(http::header::COOKIE);
            if let Some(k) = kept {
                // The kept cookies may hold non-ASCII bytes the client sent (see `header`).
                let k = HeaderValue::from_bytes(k.as_bytes())
                    .or_err(ErrorType::InvalidHTTPHeader, "invalid header value")?;
                set(headers, http::header::COOKIE, k)?;
            }
        }
    }
    // A programmatic-login or MCP access token is Vallum's credential, not the app's.
    if authorization
        && (crate::authn::programmatic::authorization_token(headers).is_some()
            || crate::authn::mcp_oauth::access_token(headers).is_some())
    {
        headers.remove(http::header::AUTHORIZATION);
    }
    Ok(())
}

/// `X-Forwarded-Host`, `-Proto` and `-For` (appended to a trusted proxy's list unless
/// `skip_xff_append`).
fn forwarding_headers(headers: &mut HeaderMap, info: &ForwardInfo<'_>) -> Result<()> {
    set(headers, X_FORWARDED_HOST, value(info.original_host)?)?;
    // A trusted proxy's `X-Forwarded-Proto` says how the client reached it (TLS may end there).
    let believed = info.trusted_peer
        && headers
            .get(&X_FORWARDED_PROTO)
            .is_some_and(|v| v == "https" || v == "http");
    if !believed {
        let proto = if info.scheme == "https" {
            "https"
        } else {
            "http"
        };
        set(headers, X_FORWARDED_PROTO, HeaderValue::from_static(proto))?;
    }
    if let Some(ip) = info.client_ip {
        let prev = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
        let mut xff = String::with_capacity(prev.map_or(0, |p| p.len() + 2) + 15);
        match prev {
            // `skip_xff_append`: a trusted proxy's list goes on as it came.
            Some(_) if info.skip_xff_append => return Ok(()),
            Some(prev) if !prev.is_empty() => {
                xff.push_str(prev);
                xff.push_str(", ");
            }
            _ => {}
        }
        crate::text::push_ip(&mut xff, ip);
        set(headers, X_FORWARDED_FOR, value(&xff)?)?;
    }
    Ok(())
}

/// Shapes the headers of the request that goes upstream.
pub fn shape_request(
    headers: &mut HeaderMap,
    route: &Route,
    target: &UpstreamTarget,
    info: &ForwardInfo<'_>,
) -> Result<()> {
    strip_client_headers(headers, route, info)?;

    let host = match &route.host_header {
        HostHeader::Auto => target.host_value.clone(),
        HostHeader::Preserve => None,
        HostHeader::Fixed(v) => Some(v.clone()),
        HostHeader::FromHeader(h) => headers
            .get(h)
            .cloned()
            .or_else(|| target.host_value.clone()),
    };
    if let Some(h) = host {
        set(headers, HOST, h)?;
    }

    forwarding_headers(headers, info)?;

    for h in &route.remove_request_headers {
        headers.remove(h);
    }
    if let Some(id) = &info.identity {
        if let (true, Some(jwt)) = (info.pass_assertion, &id.jwt) {
            set(headers, X_POMERIUM_JWT_ASSERTION, jwt.clone())?;
        }
        for (k, v) in &id.headers {
            set(headers, k.clone(), value(v)?)?;
        }
    }
    let mut values = TemplateValues {
        cert: info.client_cert,
        ..TemplateValues::default()
    };
    if let Some(id) = &info.identity {
        values.jwt = id.jwt.as_ref().and_then(|j| j.to_str().ok()).unwrap_or("");
        values.id_token = id.id_token;
        values.access_token = id.access_token;
    }
    for (k, t) in &route.set_request_headers {
        if let Some(v) = t.render(&values) {
            set(headers, k.clone(), v)?;
        }
    }
    Ok(())
}

/// The route's `set_response_headers` and `rewrite_response_headers` on the upstream's answer.
pub fn shape_response(headers: &mut HeaderMap, route: &Route) -> Result<()> {
    for (k, v) in &route.response_headers {
        set(headers, k.clone(), v.clone())?;
    }
    for rw in &route.rewrite_response_headers {
        rewrite_one(headers, rw)?;
    }
    Ok(())
}

fn rewrite_one(headers: &mut HeaderMap, rw: &ResponseHeaderRewrite) -> Result<()> {
    let Some(current) = headers.get(&rw.header).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let new = match &rw.prefix {
        Some(p) => match current.strip_prefix(p.as_str()) {
            Some(rest) => format!("{}{rest}", rw.value),
            None => return Ok(()),
        },
        None => rw.value.clone(),
    };
    set(headers, rw.header.clone(), value(&new)?)
}

/// The `Location` of a `redirect` route for this request.
pub struct RequestUrl<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// `matched` is the route's matched prefix, which `prefix_rewrite` replaces (as in Envoy).
pub fn redirect_location(spec: &RedirectSpec, matched: &str, req: &RequestUrl<'_>) -> String {
    let RequestUrl {
        scheme,
        host,
        port,
        path,
        query,
    } = *req;
    let scheme = spec.scheme.as_deref().unwrap_or(scheme);
    let host = spec.host.as_deref().unwrap_or(host);
    let port = match spec.port {
        Some(p) => Some(p),
        // A scheme change drops the old port (Envoy's behaviour), unless one was asked for.
        None if spec.scheme.is_some() => None,
        None => port,
    };
    let path = match (&spec.path, &spec.prefix_rewrite) {
        (Some(p), _) => p.clone(),
        (None, Some(pre)) => match path.strip_prefix(matched) {
            Some(rest) => format!("{pre}{rest}"),
            None => path.to_string(),
        },
        (None, None) => path.to_string(),
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let mut loc = format!("{scheme}://{host}");
    if let Some(p) = port.filter(|p| *p != default_port) {
        loc.push_str(&format!(":{p}"));
    }
    loc.push_str(&path);
    if let (false, Some(q)) = (spec.strip_query, query) {
        loc.push('?');
        loc.push_str(q);
    }
    loc
}

#[cfg(test)]
mod tests {
    use super::{canonical, same_canonical, same_target};

    #[test]
    fn same_canonical_agrees_with_comparing_canonical_forms() {
        let names = [
            "x-email", "X-Email", "x_email", "X_EMAIL", "x-emails", "x-emaik", "", "a", "A_", "a-",
        ];
        for a in names {
            for b in names {
                assert_eq!(
                    same_canonical(a, &canonical(b)),
                    canonical(a) == canonical(b),
                    "{a} against {b}"
                );
            }
        }
    }

    #[test]
    fn same_target_is_byte_exact() {
        assert!(same_target(b"/a/b", "/a/b", None));
        assert!(same_target(b"/a?x=1", "/a", Some("x=1")));
        assert!(same_target(b"/a?", "/a", Some("")));
        assert!(
            !same_target(b"/a?", "/a", None),
            "an empty query is still sent"
        );
        assert!(!same_target(b"/a", "/a", Some("")));
        assert!(!same_target(b"/a/../b", "/b", None), "normalised: rewrite");
        assert!(
            !same_target(b"http://h/a", "/a", None),
            "absolute form: rewrite"
        );
        assert!(!same_target(b"/a?x=2", "/a", Some("x=1")));
        assert!(
            !same_target(b"/ab=1", "/a", Some("=1")),
            "the `?` must be there"
        );
    }
}
