//! The upstream side of a forwarded request: the peer to connect to (TLS, SNI, timeouts) and the
//! request it receives (path rewrites, Host, identity headers, forwarding headers).

use super::forward::{self, ForwardInfo, UpstreamIdentity};
use super::{plain_head, RequestCtx};
use crate::config::ops::StripList;
use crate::routes::route::{Action, PathRewrite, Route};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use std::net::IpAddr;

fn internal(why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, why)
}

/// The picked backend's peer, with the route's timeouts. Upgraded streams (websockets) have no
/// timeout unless one was set on purpose.
pub fn peer(ctx: &RequestCtx) -> Result<Box<HttpPeer>> {
    let (Some(route), Some(picked)) = (&ctx.route, &ctx.picked) else {
        return Err(internal("no upstream chosen"));
    };
    let Action::Upstream(pool) = &route.action else {
        return Err(internal("route has no upstream"));
    };
    let mut peer = pool
        .peer(picked)
        .ok_or_else(|| internal("picked backend is not in the pool"))?;
    let timeout = if ctx.upgrade && !route.timeout_explicit {
        None
    } else {
        route.timeout
    };
    let timeout = match (timeout, ctx.deadline) {
        (Some(t), Some(d)) => Some(t.min(d)),
        (t, d) => t.or(d),
    };
    peer.options.connection_timeout = timeout.map(|t| t.min(std::time::Duration::from_secs(10)));
    peer.options.total_connection_timeout = timeout;
    peer.options.read_timeout = timeout;
    peer.options.write_timeout = timeout;
    peer.options.idle_timeout = route.idle_timeout;
    // An upgrade (websocket) is an HTTP/1.1 mechanism, whatever the upstream otherwise speaks.
    if ctx.upgrade {
        peer.options.alpn = pingora_core::protocols::ALPN::H1;
    }
    Ok(Box::new(peer))
}

/// A backend refused the connection or never answered it: if the route's upstream is a name,
/// look it up again soon, in case it has moved.
pub fn connect_failed(ctx: &RequestCtx) {
    if let Some(Action::Upstream(pool)) = ctx.route.as_ref().map(|r| &r.action) {
        if let Some(names) = pool.names() {
            names.connect_failed();
        }
    }
}

/// Shapes the request the upstream receives.
pub fn request(
    req: &mut RequestHeader,
    ctx: &RequestCtx,
    peer_ip: Option<IpAddr>,
    scheme: &'static str,
) -> Result<()> {
    let (Some(route), Some(target), Some(picked)) = (&ctx.route, &ctx.target, &ctx.picked) else {
        return Err(internal("request was not routed"));
    };
    let Action::Upstream(pool) = &route.action else {
        return Ok(());
    };
    let t = pool
        .targets
        .get(picked.target)
        .ok_or_else(|| internal("picked backend is not in the pool"))?;
    // The common case, no rewrite and a target the client already sent in normal form (and in
    // origin form), keeps the request line as it is: no string to build, no URI to parse.
    let unchanged = matches!(route.rewrite, PathRewrite::None)
        && t.path_prefix.is_empty()
        && forward::same_target(req.raw_path(), &target.path, target.query.as_deref())
        && req
            .uri
            .path_and_query()
            .is_some_and(|p| p.as_str().as_bytes() == req.raw_path());
    if !unchanged {
        let path = forward::upstream_path(route, t, &target.path, target.query.as_deref());
        let uri: http::Uri = path.parse().map_err(|_| {
            Error::explain(
                ErrorType::HTTPStatus(400),
                "rewritten path is not a valid URI",
            )
        })?;
        req.set_uri(uri);
    }
    let settings = ctx.snap.as_ref().map(|s| &s.settings);
    let auth = settings.and_then(|s| s.auth.as_ref());
    let own_cookies = auth.map(|a| [a.cookie.name.as_str(), &a.cookie.authenticate_name]);
    let no_strip = StripList::default();
    let info = ForwardInfo {
        identity: identity(ctx, route),
        pass_assertion: route.pass_identity_headers,
        strip_cookies: own_cookies.as_ref().map_or(&[][..], |c| c.as_slice()),
        original_host: &ctx.host,
        client_ip: peer_ip,
        scheme,
        skip_xff_append: settings.is_some_and(|s| s.skip_xff_append),
        upgrade: ctx.upgrade,
        trusted_peer: ctx.trusted_peer,
        strip_identity: settings.map_or(&no_strip, |s| &s.ops.strip_identity_headers),
        claim_headers: auth.map(|a| a.claim_headers.as_slice()).unwrap_or(&[]),
        client_cert: ctx.client_cert.as_deref(),
    };
    // X-Forwarded-Host, -Proto, -For and X-Request-Id, the assertion, claim headers,
    // `set_request_headers` and a bearer token, at most.
    let added =
        6 + route.set_request_headers.len() + info.identity.as_ref().map_or(0, |i| i.headers.len());
    plain_head::request(req, added, |headers| {
        forward::shape_request(headers, route, t, &info)?;
        if let Some(token) = &ctx.upstream_bearer {
            let bearer = forward::value(&format!("Bearer {token}"))?;
            forward::set(headers, http::header::AUTHORIZATION, bearer)?;
        }
        forward::set(headers, X_REQUEST_ID, forward::value(&ctx.request_id)?)
    })
}

/// Correlates the upstream's logs with Vallum's (also on the response the client gets).
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The identity values for the upstream request: the (cached) assertion and claim headers when
/// the route passes identity headers, and the tokens `set_request_headers` may use.
fn identity<'a>(ctx: &'a RequestCtx, route: &Route) -> Option<UpstreamIdentity<'a>> {
    let session = ctx.identity.as_ref()?;
    let auth = ctx.snap.as_ref()?.auth()?;
    let wants_jwt =
        route.pass_identity_headers || route.set_request_headers.iter().any(|(_, t)| t.needs_jwt());
    let jwt = wants_jwt.then(|| {
        crate::headers::assertion(
            &auth.keys.signer,
            &auth,
            session,
            &ctx.host,
            route.issuer_uri,
            route.groups_filter.as_deref(),
        )
    });
    let headers = if route.pass_identity_headers {
        auth.claim_headers
            .iter()
            .map(|(h, claim)| {
                (
                    h.clone(),
                    crate::headers::claim_header_value(
                        session,
                        claim,
                        route.groups_filter.as_deref(),
                    ),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    Some(UpstreamIdentity {
        jwt,
        id_token: &session.id_token,
        access_token: &session.access_token,
        headers,
    })
}
