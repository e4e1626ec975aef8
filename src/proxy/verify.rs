//! Step 3a, forward auth: an ingress that proxies itself (nginx `auth_request`, Caddy
//! `forward_auth`, Traefik ForwardAuth, Envoy `ext_authz`) asks whether a request it holds may
//! pass. The answer comes from the same route table, path rules, sessions and policies as a
//! proxied request: 200 with the identity headers for the ingress to copy upstream, a sign-in
//! (401 for nginx's `/verify`, else the 302 the ingress passes on to the browser), or 403.
//!
//! How the ingress names the original request:
//! - nginx: `GET {forward_auth_url}/verify?uri=<URL>` (and `X-Original-Method`); its
//!   `error_page 401` sends the browser to `{forward_auth_url}/?uri=<URL>`, which signs in and
//!   comes back.
//! - Traefik and Caddy: any path on the forward-auth host, with `X-Forwarded-Method`, `-Proto`,
//!   `-Host` and `-Uri`.
//! - Envoy (`ext_authz` with `path_prefix: /.pomerium/ext_authz`): the original method, `Host`
//!   and path after the prefix, on any host.
//!
//! Only peers in `forward_auth_ingresses` are answered: a sub-request names the request it is
//! about, so anyone else could ask about a URL it is not requesting.

use super::access::{self, Asking};
use super::target::{self, Addressed};
use super::{peer_ip, Gateway, RequestCtx};
use crate::config::settings::Settings;
use crate::policy::CertInput;
use crate::respond::refusal::Refusal;
use crate::respond::reply::Reply;
use crate::routes::path::{self, Normalized, PathRules, Target};
use crate::snapshot::Snapshot;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use pingora_proxy::Session;
use std::net::IpAddr;
use std::sync::Arc;

/// Envoy's `ext_authz` `path_prefix`.
pub const ENVOY_PREFIX: &str = "/.pomerium/ext_authz";

/// What a browser that must sign in is given.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// nginx `auth_request`: only 2xx, 401 and 403 mean something, so 401.
    Verify,
    /// Everyone else passes the answer on to the browser: the sign-in redirect itself.
    Redirect,
    /// A browser sent to `/?uri=` to sign in: once allowed, back to the URL.
    Browser,
}

/// The request the ingress holds.
struct Original {
    method: Method,
    at: Addressed,
}

/// The answer to a forward-auth sub-request; `Ok(None)` when the request is not one.
pub async fn serve(
    gw: &Gateway,
    session: &Session,
    ctx: &mut RequestCtx,
    snap: &Snapshot,
    at: &Addressed,
) -> Result<Option<Reply>, Refusal> {
    let Some(fwd) = &snap.settings.forward_auth else {
        return Ok(None);
    };
    let envoy = at
        .target
        .path
        .strip_prefix(ENVOY_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if !envoy && !fwd.serves(&at.host, at.port) {
        return Ok(None);
    }
    let peer = peer_ip(session);
    if !fwd.trusts(peer) {
        tracing::warn!(request_id = %ctx.request_id, peer = ?peer, "forward-auth request refused: the peer is not in forward_auth_ingresses");
        return Err(Refusal::NotAnIngress);
    }
    let req = session.req_header();
    let (form, original) = if envoy {
        (Form::Redirect, envoy_original(req, at, &snap.settings)?)
    } else {
        described(&req.headers, at, &snap.settings)?
    };
    ctx.client_ip = client_ip(&req.headers).or(peer);
    let route = snap
        .routes
        .find(
            &original.at.host,
            original.at.port,
            &original.at.target.path,
        )
        .map(Arc::clone)
        .ok_or(Refusal::VerifyNoRoute)?;
    ctx.trace.routed(
        original.method.as_str(),
        &route.id,
        &original.at.host,
        &ctx.request_id,
    );
    ctx.route = Some(Arc::clone(&route));
    let asking = Asking {
        mcp: None,
        method: &original.method,
        headers: &req.headers,
        // The ingress's connection is not the user's: a client certificate cannot be seen.
        client_cert: CertInput::Absent,
    };
    match access::decide(gw, &asking, ctx, snap, &route, &original.at).await {
        Ok(_) if form == Form::Browser => Ok(Some(Reply::found(&original.at.url()))),
        Ok(identity) => Ok(Some(allowed(snap, identity.as_deref(), &original, &route))),
        Err(Refusal::SignInRequired { .. } | Refusal::ReauthenticationRequired { .. })
            if form == Form::Verify =>
        {
            Err(Refusal::SignInRequired { location: None })
        }
        Err(refusal) => Err(refusal),
    }
}

/// 200, with the signed assertion and the claim headers when a user is signed in (the ingress
/// copies them to the upstream request).
fn allowed(
    snap: &Snapshot,
    user: Option<&crate::session::UserSession>,
    original: &Original,
    route: &crate::routes::route::Route,
) -> Reply {
    let mut reply = Reply::text(StatusCode::OK, bytes::Bytes::new());
    let (Some(user), Some(auth)) = (user, snap.auth()) else {
        return reply;
    };
    let jwt = crate::headers::assertion(
        &auth.keys.signer,
        &auth,
        user,
        &original.at.host,
        route.issuer_uri,
        route.groups_filter.as_deref(),
    );
    reply = reply.with_header(HeaderName::from_static("x-pomerium-jwt-assertion"), jwt);
    for (name, claim) in &auth.claim_headers {
        let value = crate::headers::claim_header_value(user, claim, route.groups_filter.as_deref());
        if let Ok(v) = HeaderValue::from_str(&value) {
            reply = reply.with_header(name.clone(), v);
        }
    }
    reply
}

/// nginx (`uri`, `X-Original-Method`) or Traefik/Caddy (`X-Forwarded-*`).
fn described(
    headers: &HeaderMap,
    at: &Addressed,
    settings: &Settings,
) -> Result<(Form, Original), Refusal> {
    let verify = at.target.path == "/verify";
    let uri = at.target.query.as_deref().and_then(uri_param);
    let method = header(headers, "x-original-method")
        .or_else(|| header(headers, "x-forwarded-method"))
        .map_or(Ok(Method::GET), |m| Method::from_bytes(m.as_bytes()))
        .map_err(|_| Refusal::VerifyRequest("the original method is not a method"))?;
    if let Some(uri) = uri {
        // Split by hand: a URL parser would resolve `..` and re-encode, and the path must be
        // judged as the ingress will send it.
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or(Refusal::VerifyRequest("uri is not an absolute URL"))?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, raw) = rest.split_at(end);
        let raw = match raw.chars().next() {
            None => "/".to_string(),
            Some('?') => format!("/{raw}"),
            Some(_) => raw.to_string(),
        };
        let form = if verify { Form::Verify } else { Form::Browser };
        let scheme = scheme_of(scheme)?;
        return Ok((form, original(method, scheme, authority, &raw, settings)?));
    }
    let scheme = scheme_of(header(headers, "x-forwarded-proto").unwrap_or("https"))?;
    let host = header(headers, "x-forwarded-host")
        .ok_or(Refusal::VerifyRequest("no uri and no X-Forwarded-Host"))?;
    let raw = header(headers, "x-forwarded-uri")
        .ok_or(Refusal::VerifyRequest("no uri and no X-Forwarded-Uri"))?;
    let form = if verify { Form::Verify } else { Form::Redirect };
    Ok((form, original(method, scheme, host, raw, settings)?))
}

/// Envoy: the original method, `Host`, and the path after the prefix.
fn envoy_original(
    req: &pingora_http::RequestHeader,
    at: &Addressed,
    settings: &Settings,
) -> Result<Original, Refusal> {
    let rest = &at.target.path[ENVOY_PREFIX.len()..];
    let path = if rest.is_empty() { "/" } else { rest };
    let scheme = scheme_of(header(&req.headers, "x-forwarded-proto").unwrap_or(at.scheme))?;
    let mut raw = path.to_string();
    if let Some(q) = &at.target.query {
        raw.push('?');
        raw.push_str(q);
    }
    original(req.method.clone(), scheme, &at.host_full, &raw, settings)
}

/// The original request addressed as the proxy would address it: the same host rules and one
/// path truth. The ingress sends the path upstream as the client wrote it (the proxy would send
/// the normal form), so a path not in normal form (`/a/../admin`, `//x`, `%41`) is refused: it
/// would be judged in one form and served in another.
fn original(
    method: Method,
    scheme: &'static str,
    authority: &str,
    raw_target: &str,
    settings: &Settings,
) -> Result<Original, Refusal> {
    let (host, explicit) = target::split_authority(authority)
        .ok_or(Refusal::VerifyRequest("the original host is not a host"))?;
    let rules = PathRules {
        escaped_slashes: settings.escaped_slashes,
        normalize: settings.normalize_path,
        merge_slashes: settings.merge_slashes,
    };
    let not_normal = Refusal::VerifyRequest("the original path is not in normal form");
    let target: Target = match path::normalize(raw_target.as_bytes(), rules) {
        Ok(Normalized::Ok(t))
            if super::forward::same_target(raw_target.as_bytes(), &t.path, t.query.as_deref()) =>
        {
            t
        }
        Ok(_) => return Err(not_normal),
        Err(e) => return Err(Refusal::BadPath(e.to_string())),
    };
    Ok(Original {
        method,
        at: Addressed::new(target, host, explicit, scheme),
    })
}

/// The `uri` parameter. nginx has no URL encoder, so its `?uri=$scheme://$http_host$request_uri`
/// arrives unescaped, the URL's own query included: a `uri` that starts the query with an
/// unescaped `http(s)://` is everything after `uri=`. An escaped one is a normal parameter.
fn uri_param(query: &str) -> Option<String> {
    if let Some(rest) = query.strip_prefix("uri=") {
        if rest.starts_with("http://") || rest.starts_with("https://") {
            return Some(rest.to_string());
        }
    }
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "uri")
        .map(|(_, v)| v.into_owned())
}

fn scheme_of(s: &str) -> Result<&'static str, Refusal> {
    match s.to_ascii_lowercase().as_str() {
        "https" => Ok("https"),
        "http" => Ok("http"),
        _ => Err(Refusal::VerifyRequest(
            "the original scheme is not http or https",
        )),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The browser's address as the ingress reports it: `X-Real-IP`, else the right-most
/// `X-Forwarded-For` entry (the one the ingress added).
fn client_ip(headers: &HeaderMap) -> Option<IpAddr> {
    header(headers, "x-real-ip")
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            header(headers, "x-forwarded-for")?
                .rsplit(',')
                .next()?
                .trim()
                .parse()
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{at, snapshot};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn each_ingress_names_the_original_request_its_way() {
        let snap = snapshot("- from: https://app.test\n  to: http://127.0.0.1:9\n");
        let s = &snap.settings;
        let nginx = at(
            "fwd.test",
            "/verify",
            Some("uri=https%3A%2F%2Fapp.test%3A8443%2Fa%3Fb%3D1"),
        );
        let (form, o) = described(&headers(&[("x-original-method", "POST")]), &nginx, s)
            .ok()
            .unwrap();
        assert!(form == Form::Verify);
        assert_eq!((o.method.as_str(), o.at.scheme), ("POST", "https"));
        assert_eq!(
            (o.at.host_full.as_str(), o.at.port),
            ("app.test:8443", 8443)
        );
        assert_eq!(
            (o.at.target.path.as_str(), o.at.target.query.as_deref()),
            ("/a", Some("b=1"))
        );

        let traefik = headers(&[
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "App.Test"),
            ("x-forwarded-uri", "/x/y?z"),
        ]);
        let (form, o) = described(&traefik, &at("fwd.test", "/", None), s)
            .ok()
            .unwrap();
        assert!(form == Form::Redirect);
        assert_eq!(
            (o.method.as_str(), o.at.host.as_str(), o.at.port),
            ("DELETE", "app.test", 443)
        );
        assert_eq!(o.at.target.path, "/x/y");

        let unescaped = at(
            "fwd.test",
            "/verify",
            Some("uri=https://app.test/p?a=1&b=2"),
        );
        let (_, o) = described(&HeaderMap::new(), &unescaped, s).ok().unwrap();
        assert_eq!(
            o.at.target.query.as_deref(),
            Some("a=1&b=2"),
            "nginx's unescaped uri, whole"
        );
        let dotted = at(
            "fwd.test",
            "/verify",
            Some("uri=https%3A%2F%2Fapp.test%2Fa%2F..%2Fadmin"),
        );
        assert!(
            described(&HeaderMap::new(), &dotted, s).is_err(),
            "judged as sent"
        );
        for (h, why) in [
            (headers(&[("x-forwarded-uri", "/")]), "no host"),
            (headers(&[("x-forwarded-host", "app.test")]), "no uri"),
            (
                headers(&[
                    ("x-forwarded-host", "app.test"),
                    ("x-forwarded-uri", "/a/../b"),
                ]),
                "not normal",
            ),
            (
                headers(&[
                    ("x-forwarded-host", "app.test"),
                    ("x-forwarded-uri", "/"),
                    ("x-forwarded-proto", "ftp"),
                ]),
                "scheme",
            ),
        ] {
            assert!(
                described(&h, &at("fwd.test", "/", None), s).is_err(),
                "{why}"
            );
        }
    }

    #[test]
    fn the_client_is_the_ingress_report_of_it() {
        assert_eq!(
            client_ip(&headers(&[("x-forwarded-for", "198.51.100.1, 10.0.0.9")])),
            "10.0.0.9".parse().ok()
        );
        assert_eq!(
            client_ip(&headers(&[
                ("x-real-ip", "192.0.2.4"),
                ("x-forwarded-for", "10.0.0.9")
            ])),
            "192.0.2.4".parse().ok()
        );
        assert_eq!(client_ip(&HeaderMap::new()), None);
    }
}
