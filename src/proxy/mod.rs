//! The Pingora `ProxyHttp` implementation: the request's life through Vallum.
//!
//! `request_filter` reads like a table of contents — snapshot, hygiene, target, route, access,
//! action — each step yielding `Continue` or a `Reply`. Nothing here does network I/O or takes a
//! lock; it reads the snapshot the control plane built.

pub mod forward;
mod observe;
pub mod reply;

use crate::authn::{self, AuthState};
use crate::config::auth::Services;
use crate::config::settings::Underscores;
use crate::mtls::{CertState, Enforcement};
use crate::policy::{CertInput, Decision, Input, ProvenDevice, Subject};
use crate::routes::path::{self, Normalized, PathRules, Target};
use crate::routes::route::{Access, Action, PathMatch, PathRewrite, Route};
use crate::runtime::{Runtime, SharedRuntime};
use crate::upstream::Picked;
use async_trait::async_trait;
use forward::{ForwardInfo, RequestUrl};
use http::{HeaderValue, StatusCode};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use reply::Reply;
use std::sync::Arc;

pub struct Gateway {
    runtime: SharedRuntime,
    auth: Arc<AuthState>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Sign-in requests per client IP in the current second, so nobody can flood the IdP (or
    /// the session store) through Vallum.
    sign_in_rate: pingora_limits::rate::Rate,
    /// Whether this listener terminates TLS (fixed for the listener's life).
    tls: bool,
}

impl Gateway {
    pub fn new(runtime: SharedRuntime, tls: bool, auth: Arc<AuthState>) -> Self {
        let metrics = Arc::clone(&auth.metrics);
        Self {
            runtime,
            auth,
            metrics,
            sign_in_rate: pingora_limits::rate::Rate::new(std::time::Duration::from_secs(1)),
            tls,
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// Per-request state, filled in by `request_filter` and read by the later phases.
#[derive(Default)]
pub struct RequestCtx {
    snap: Option<Arc<Runtime>>,
    route: Option<Arc<Route>>,
    target: Option<Target>,
    host: String,
    upgrade: bool,
    picked: Option<Picked>,
    identity: Option<Arc<crate::session::Session>>,
    /// Correlates the access log, the authorize log, error pages and the upstream's logs.
    request_id: String,
    started: Option<std::time::Instant>,
    upstream_started: Option<std::time::Instant>,
    /// Request body bytes seen so far (for `max_request_bytes`).
    body_bytes: u64,
    /// The peer is in `trusted_proxies`: its forwarding headers are believed.
    trusted_peer: bool,
    /// The client's address: the peer, or (behind trusted proxies) the right-most untrusted
    /// `X-Forwarded-For` entry.
    client_ip: Option<std::net::IpAddr>,
    /// When an upgraded connection's session was last confirmed in the store.
    session_checked: Option<std::time::Instant>,
    /// The connection's trusted client certificate (downstream mTLS), for header templates.
    client_cert: Option<Arc<crate::mtls::PeerCert>>,
    _open: Option<observe::OpenRequest>,
}

enum Step {
    Continue,
    Reply(Reply),
    /// An authorised tunnel request: carry the connection to one of these addresses.
    Tunnel(Vec<std::net::SocketAddr>),
}

/// Host and port of the request, from `Host` (HTTP/1) or `:authority` (HTTP/2), lower-cased
/// and without a trailing dot, so `App.Example.com.` and `app.example.com` are one host.
fn request_host(req: &RequestHeader) -> Option<(String, Option<u16>)> {
    let raw = match req.uri.authority() {
        Some(a) => a.as_str().to_string(),
        None => req
            .headers
            .get(http::header::HOST)?
            .to_str()
            .ok()?
            .to_string(),
    };
    if raw.is_empty() || raw.contains('@') {
        return None;
    }
    let authority: http::uri::Authority = raw.parse().ok()?;
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some((host, authority.port_u16()))
}

/// The request target exactly as the client sent it. For HTTP/1 it is read from the request line,
/// because the parsed URI has already dropped a `#fragment` that Vallum must refuse.
fn raw_target(session: &Session) -> bytes::Bytes {
    if let Some(h1) = session.as_downstream().as_http1() {
        let raw = h1.get_headers_raw_bytes();
        let line_end = raw
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(raw.len());
        let line = raw.get(..line_end).unwrap_or(&[]);
        if let (Some(first), Some(last)) = (
            line.iter().position(|&b| b == b' '),
            line.iter().rposition(|&b| b == b' '),
        ) {
            if last > first + 1 {
                return raw.slice(first + 1..last);
            }
        }
    }
    bytes::Bytes::copy_from_slice(session.req_header().raw_path())
}

impl Gateway {
    async fn route_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snap: &Runtime,
    ) -> Step {
        let wants_json = reply::wants_json(session);
        let deny = |status: StatusCode, reason: &str| {
            Step::Reply(Reply::error(status, reason, wants_json))
        };
        let settings = &snap.settings;

        // 1. Strict framing, header hygiene and limits. A request whose length is ambiguous is
        // refused and its connection closed: anything after it on the wire could be smuggled.
        if let Some(problem) = framing_problem(session) {
            tracing::info!(request_id = %ctx.request_id, problem, "request refused: ambiguous framing");
            session.set_keepalive(None);
            return deny(StatusCode::BAD_REQUEST, problem);
        }
        let head = &session.req_header().headers;
        if head.len() > settings.ops.max_request_headers {
            tracing::info!(request_id = %ctx.request_id, count = head.len(), "request refused: too many headers");
            return deny(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many request headers",
            );
        }
        let head_bytes: usize = head.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        if head_bytes > settings.ops.max_request_header_bytes {
            tracing::info!(request_id = %ctx.request_id, bytes = head_bytes, "request refused: headers too large");
            return deny(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request headers too large",
            );
        }
        if settings.underscores != Underscores::Allow {
            let bad: Vec<_> = session
                .req_header()
                .headers
                .keys()
                .filter(|k| k.as_str().contains('_'))
                .cloned()
                .collect();
            if !bad.is_empty() {
                if settings.underscores == Underscores::RejectRequest {
                    return deny(
                        StatusCode::BAD_REQUEST,
                        "header names with underscores are not allowed",
                    );
                }
                for k in bad {
                    session.req_header_mut().remove_header(&k);
                }
            }
        }

        // 2. One path truth.
        let rules = PathRules {
            escaped_slashes: settings.escaped_slashes,
            normalize: settings.normalize_path,
            merge_slashes: settings.merge_slashes,
        };
        let target = match path::normalize(&raw_target(session), rules) {
            Ok(Normalized::Ok(t)) => t,
            Ok(Normalized::Redirect(loc)) => {
                return match HeaderValue::from_str(&loc) {
                    Ok(v) => Step::Reply(Reply::redirect(StatusCode::TEMPORARY_REDIRECT, v)),
                    Err(_) => deny(StatusCode::BAD_REQUEST, "invalid path"),
                }
            }
            Err(e) => return deny(StatusCode::BAD_REQUEST, &e.to_string()),
        };

        // 3. Probes answer on every host.
        let method = &session.req_header().method;
        if (target.path == "/ping" || target.path == "/healthz")
            && (method == http::Method::GET || method == http::Method::HEAD)
        {
            return Step::Reply(Reply::text(
                StatusCode::OK,
                bytes::Bytes::from_static(b"OK"),
            ));
        }

        // 4. Host. An absolute-form target (`GET http://a/ HTTP/1.1`) must name the same host as
        // `Host`: otherwise the router and an upstream that reads `Host` would disagree.
        let Some((host, explicit_port)) = request_host(session.req_header()) else {
            return deny(StatusCode::BAD_REQUEST, "missing or invalid Host header");
        };
        if session.req_header().uri.authority().is_some() {
            let header_host = session
                .req_header()
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::uri::Authority>().ok())
                .map(|a| {
                    (
                        a.host().trim_end_matches('.').to_ascii_lowercase(),
                        a.port_u16(),
                    )
                });
            if header_host.is_some_and(|h| h != (host.clone(), explicit_port)) {
                return deny(
                    StatusCode::BAD_REQUEST,
                    "the request target's host differs from the Host header",
                );
            }
        }
        let port = explicit_port.unwrap_or(if self.tls { 443 } else { 80 });
        // `Host` as the browser sends it: what cookies and hand-offs are bound to.
        let host_full = match explicit_port {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };

        // 5. Sign-in endpoints: the authenticate host, and `/.pomerium/` on route hosts.
        if let Some(auth) = &settings.auth {
            let on_auth_host =
                auth.services != Services::Proxy && host_full == auth.authenticate_host;
            let starts_idp_work = on_auth_host
                && (target.path == "/.pomerium/sign_in" || target.path == "/oauth2/callback");
            if starts_idp_work && settings.ops.signin_rate_limit > 0 {
                let key = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
                if self.sign_in_rate.observe(&key, 1) > settings.ops.signin_rate_limit as isize {
                    tracing::info!(request_id = %ctx.request_id, "sign-in refused: rate limit");
                    return Step::Reply(
                        Reply::error(
                            StatusCode::TOO_MANY_REQUESTS,
                            "too many sign-in attempts; try again in a moment",
                            wants_json,
                        )
                        .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")),
                    );
                }
            }
            if on_auth_host
                || target.path.starts_with("/.pomerium/")
                || target.path.starts_with("/.well-known/pomerium")
            {
                let req = match self.authn_request(session, &host_full, &target).await {
                    Ok(r) => r,
                    Err(reply) => return Step::Reply(reply),
                };
                let req = req.as_request(&host_full, &target.path, wants_json);
                if on_auth_host {
                    return Step::Reply(authn::authenticate_host(auth, &self.auth, &req).await);
                }
                if let Some(reply) = authn::route_endpoint(auth, &self.auth, &req).await {
                    return Step::Reply(reply);
                }
            }
            if auth.services == Services::Authenticate && !on_auth_host {
                return deny(
                    StatusCode::NOT_FOUND,
                    "this node serves only the authenticate service",
                );
            }
        }

        // 6. Route.
        let Some(route) = snap.routes.find(&host, port, &target.path) else {
            return deny(StatusCode::NOT_FOUND, "no route matches this host and path");
        };
        let route = Arc::clone(route);
        // Known from here on, so every answer (deny, login, limits) is counted under its route.
        ctx.route = Some(Arc::clone(&route));

        // 7. Upgrades only where the route allows them. A tunnel route takes only `Upgrade: tcp`
        // (what `vallum tcp` sends), and nothing else.
        let upgrade = session
            .req_header()
            .headers
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .map(|t| t.trim().to_ascii_lowercase());
        if let Action::Tunnel(_) = &route.action {
            if !session.is_upgrade_req() || upgrade.as_deref() != Some("tcp") {
                session.set_keepalive(None);
                return deny(
                    StatusCode::BAD_REQUEST,
                    "this is a TCP tunnel route: connect with `vallum tcp`",
                );
            }
        } else if session.is_upgrade_req() {
            let token = upgrade
                .as_deref()
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .unwrap_or_default();
            // h2c would turn the connection into HTTP/2 that Vallum never parses: never relayed.
            if token == "h2c" || !route.allows_upgrade(token) {
                session.set_keepalive(None);
                return deny(
                    StatusCode::BAD_REQUEST,
                    "this route does not allow this connection upgrade",
                );
            }
            // Cross-site websocket hijacking: a page on another origin riding the user's cookie.
            if !route.websocket_origins.is_empty() {
                let origin = session
                    .req_header()
                    .headers
                    .get(http::header::ORIGIN)
                    .and_then(|v| v.to_str().ok())
                    .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
                if !origin.is_some_and(|o| route.websocket_origins.contains(&o)) {
                    return deny(StatusCode::FORBIDDEN, "websocket origin not allowed");
                }
            }
            ctx.upgrade = true;
        }

        // Request body limit: a declared length is refused up front; chunked bodies are counted
        // in `request_body_filter`.
        if let Some(max) = route.max_request_bytes {
            let declared = session
                .req_header()
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                tracing::info!(request_id = %ctx.request_id, route_id = %route.id, limit = max, "request refused: body too large");
                return deny(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
            }
        }

        // 8. Client certificate (downstream mTLS): judged once per connection at the handshake.
        let ssl = session.digest().and_then(|d| d.ssl_digest.clone());
        let conn = ssl
            .as_ref()
            .and_then(|d| d.extension.get::<crate::mtls::ConnTls>());
        let client_cert = match conn.map(|c| &c.cert) {
            Some(CertState::Trusted(c)) => CertInput::Trusted(c),
            Some(CertState::Untrusted(_)) => CertInput::Untrusted,
            _ => CertInput::Absent,
        };
        if let Some(ca) = &settings.client_ca {
            let needs_cert = |r: &Route| {
                ca.enforcement == Enforcement::PolicyWithDefaultDeny
                    || matches!(&r.access, Access::Policy(p) if p.mentions_client_certificate())
            };
            // Domain fronting: a connection made for a host that asks nothing of client
            // certificates must not carry requests for one that does.
            if let Some(sni) = conn.and_then(|c| c.sni.as_deref()) {
                if sni != host
                    && needs_cert(&route)
                    && !snap
                        .routes
                        .find(sni, port, &target.path)
                        .is_some_and(|r| needs_cert(r))
                {
                    tracing::info!(request_id = %ctx.request_id, %sni, %host, "request refused: Host differs from SNI across a client-certificate boundary");
                    return deny(
                        StatusCode::MISDIRECTED_REQUEST,
                        "this connection was made for another host; reconnect for this one",
                    );
                }
            }
            if ca.enforcement == Enforcement::PolicyWithDefaultDeny
                && !matches!(client_cert, CertInput::Trusted(_))
            {
                let reason = match client_cert {
                    CertInput::Absent => "client-certificate-required",
                    _ => "invalid-client-certificate",
                };
                self.metrics
                    .authorize
                    .with_label_values(&[&route.id, "deny", reason])
                    .inc();
                tracing::info!(request_id = %ctx.request_id, route_id = %route.id, reason, "request refused: no trusted client certificate");
                return Step::Reply(reply::client_cert_error(
                    reason,
                    &ctx.request_id,
                    wants_json,
                ));
            }
            if let CertInput::Trusted(_) = client_cert {
                ctx.client_cert = conn.and_then(|c| match &c.cert {
                    CertState::Trusted(c) => Some(Arc::clone(c)),
                    _ => None,
                });
            }
        }

        // 9. Identity and access. Deny by default: a route is served only when its policy allows.
        // The session is read when the decision or the upstream headers need it.
        let wants_identity = route.pass_identity_headers
            || route
                .set_request_headers
                .iter()
                .any(|(_, t)| t.needs_identity())
            || matches!(&route.access, Access::Policy(p) if p.needs_identity());
        let identity = match &settings.auth {
            Some(auth) if wants_identity => {
                match self.identity(auth, session, &route, &host_full).await {
                    Ok(s) => s,
                    Err(_) => return Step::Reply(authn::store_unavailable()),
                }
            }
            _ => None,
        };
        if let Access::Policy(policy) = &route.access {
            // `email` and `domain` rules see only an address the IdP verified (`email_verified`
            // exactly `true`), unless the route opts out: anyone can put any address in an
            // unverified account at many IdPs.
            let email = identity
                .as_ref()
                .filter(|s| {
                    route.allow_unverified_email
                        || s.claims.get("email_verified") == Some(&serde_json::Value::Bool(true))
                })
                .and_then(|s| s.email.as_deref())
                .map(|e| match e.bytes().any(|b| b.is_ascii_uppercase()) {
                    true => std::borrow::Cow::Owned(e.to_ascii_lowercase()),
                    false => std::borrow::Cow::Borrowed(e),
                });
            let subject = identity.as_ref().map(|s| Subject {
                user_id: &s.user_id,
                email: email.as_deref(),
                groups: &s.groups,
                claims: &s.claims,
            });
            let proven: Vec<ProvenDevice<'_>> = identity
                .as_ref()
                .map(|s| {
                    s.devices
                        .iter()
                        .map(|d| ProvenDevice {
                            id: &d.id,
                            type_id: &d.type_id,
                            approved: d.approved,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let req = session.req_header();
            let input = Input {
                subject,
                method: req.method.as_str(),
                path: &target.path,
                client_ip: ctx.client_ip,
                now: chrono::Utc::now(),
                cors_preflight: req.method == http::Method::OPTIONS
                    && req.headers.contains_key(http::header::ORIGIN)
                    && req
                        .headers
                        .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD),
                client_cert,
                devices: &proven,
            };
            let decision = policy.evaluate(&input);
            observe::Authorize {
                fields: settings.ops.authorize_log,
                request_id: &ctx.request_id,
                method: input.method,
                path: &target.path,
                host: &host_full,
                ip: input.client_ip,
                route_id: &route.id,
                who: identity.as_deref(),
                decision: &decision,
            }
            .record(&self.metrics, &route.metrics);
            match decision {
                Decision::Allow => {}
                Decision::NeedLogin => {
                    return self.need_login(session, settings, &host_full, &target, &ctx.request_id)
                }
                Decision::Deny { reasons } if reply::is_client_cert_problem(&reasons) => {
                    return Step::Reply(reply::client_cert_error(
                        reasons[0],
                        &ctx.request_id,
                        wants_json,
                    ))
                }
                Decision::Deny { reasons } if reasons.contains(&"device-unauthenticated") => {
                    return self.need_device(
                        session,
                        settings,
                        &host_full,
                        &target,
                        &route,
                        &ctx.request_id,
                    )
                }
                Decision::Deny { reasons } => {
                    return Step::Reply(reply::forbidden(&reasons, &ctx.request_id, wants_json))
                }
            }
        }

        ctx.identity = identity;

        // 10. Action.
        let step = match &route.action {
            Action::Respond { status, body } => Step::Reply(Reply::text(*status, body.clone())),
            Action::Tunnel(addrs) => Step::Tunnel(addrs.clone()),
            Action::Redirect(spec) => {
                let matched = match &route.path {
                    PathMatch::Prefix(p) | PathMatch::Exact(p) => p.as_str(),
                    _ => "/",
                };
                let url = RequestUrl {
                    scheme: self.scheme(),
                    host: &host,
                    port: Some(port),
                    path: &target.path,
                    query: target.query.as_deref(),
                };
                match HeaderValue::from_str(&forward::redirect_location(spec, matched, &url)) {
                    Ok(v) => Step::Reply(Reply::redirect(spec.status, v)),
                    Err(_) => deny(StatusCode::BAD_REQUEST, "cannot build redirect location"),
                }
            }
            Action::Upstream(pool) => {
                // Hash key for RING_HASH/MAGLEV: the session (a user sticks to a backend across
                // networks), else the client IP.
                let key = match &ctx.identity {
                    _ if !pool.uses_key() => String::new(),
                    Some(s) => s.id.clone(),
                    None => ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                };
                match pool.pick(key.as_bytes()) {
                    Some(p) => {
                        ctx.picked = Some(p);
                        Step::Continue
                    }
                    None => deny(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
                }
            }
        };
        ctx.route = Some(route);
        ctx.target = Some(target);
        ctx.host = host;
        step
    }
}

/// The request id: the incoming `X-Request-Id` when the peer is a trusted proxy and the value is
/// sane (visible ASCII, at most 128 bytes), else a fresh one. An untrusted client cannot choose
/// the id that ties log lines together.
fn request_id(session: &Session, ops: &crate::config::ops::OpsSettings) -> String {
    if !ops.trusted_proxies.is_empty() {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if ops.trusts(peer) {
            if let Some(v) = session
                .req_header()
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| {
                    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
                })
            {
                return v.to_string();
            }
        }
    }
    crate::crypto::random_token(12)
}

/// Why a request's framing is ambiguous, if it is: duplicate or malformed `Content-Length`,
/// `Content-Length` together with `Transfer-Encoding`, a coding other than `chunked`, or
/// obsolete line folding (the classic request-smuggling spellings). For HTTP/1 the raw head is
/// read, because Pingora drops `Content-Length` from the parsed headers when
/// `Transfer-Encoding` is present (RFC 9112 §6.3) — which hides exactly the conflict to refuse.
fn framing_problem(session: &Session) -> Option<&'static str> {
    let mut cl: Vec<Vec<u8>> = Vec::new();
    let mut te: Vec<Vec<u8>> = Vec::new();
    if let Some(h1) = session.as_downstream().as_http1() {
        let raw = h1.get_headers_raw_bytes();
        let mut lines = raw.split(|&b| b == b'\n');
        lines.next(); // request line
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                return Some("obsolete header line folding");
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = line.split_at(colon);
            let value = value.get(1..).unwrap_or(&[]).trim_ascii().to_vec();
            if name.eq_ignore_ascii_case(b"content-length") {
                cl.push(value);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te.push(value);
            }
        }
    } else {
        let h = &session.req_header().headers;
        cl = h
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        te = h
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
    }
    if cl.len() > 1 {
        return Some("duplicate Content-Length");
    }
    if let Some(v) = cl.first() {
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Some("malformed Content-Length");
        }
    }
    if !te.is_empty() {
        if !cl.is_empty() {
            return Some("both Content-Length and Transfer-Encoding");
        }
        let codings: Vec<String> = te
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
            .collect();
        if codings != ["chunked"] {
            return Some("unsupported Transfer-Encoding");
        }
    }
    None
}

/// Behind trusted proxies, the client is the right-most `X-Forwarded-For` address that is not
/// itself a trusted proxy (entries to its left were written by the client and prove nothing).
fn client_behind_proxies(
    session: &Session,
    ops: &crate::config::ops::OpsSettings,
) -> Option<std::net::IpAddr> {
    let all: Vec<std::net::IpAddr> = session
        .req_header()
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    all.into_iter().rev().find(|ip| !ops.trusts(Some(*ip)))
}

/// The request's cookies as one `Cookie` value.
fn cookie_header(session: &Session) -> Option<std::borrow::Cow<'_, str>> {
    crate::session::cookie::header(&session.req_header().headers)
}

/// Browsers are sent to sign in; API clients (XHR, JSON, no HTML in `Accept`) get 401.
fn prefers_html(session: &Session) -> bool {
    let h = &session.req_header().headers;
    if h.get("x-requested-with")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest"))
    {
        return false;
    }
    match h.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(a) => a.contains("text/html"),
    }
}

/// What the sign-in endpoints need from a request, owned so the body can be read first.
struct AuthnInput {
    method: http::Method,
    query: Vec<(String, String)>,
    cookies: Option<String>,
    bearer: Option<String>,
    form: Vec<(String, String)>,
    scheme: &'static str,
}

impl AuthnInput {
    fn as_request<'a>(
        &'a self,
        host: &'a str,
        path: &'a str,
        wants_json: bool,
    ) -> authn::Request<'a> {
        authn::Request {
            method: &self.method,
            scheme: self.scheme,
            host,
            path,
            query: self.query.clone(),
            cookies: self.cookies.as_deref(),
            bearer: self.bearer.as_deref(),
            wants_json,
            form: self.form.clone(),
        }
    }
}

impl Gateway {
    /// Who a request is: its session cookie, else a Vallum bearer token, else (where the route's
    /// `bearer_token_format` says so) an IdP token. An error means the session store could not
    /// answer.
    async fn identity(
        &self,
        auth: &crate::config::auth::AuthSettings,
        session: &Session,
        route: &Route,
        host: &str,
    ) -> std::result::Result<Option<Arc<crate::session::Session>>, crate::session::StoreError> {
        let cookies = cookie_header(session);
        let from_cookie = authn::session_for(
            auth,
            &self.auth,
            cookies.as_deref(),
            &auth.cookie.name,
            host,
        )
        .await?;
        if from_cookie.is_some() {
            return Ok(from_cookie);
        }
        let headers = &session.req_header().headers;
        if let Some(token) = authn::programmatic::bearer_token(headers) {
            return authn::programmatic::session_for_token(auth, &self.auth, token, host).await;
        }
        Ok(match authn::idp_bearer::idp_token(headers) {
            Some(t) => {
                authn::idp_bearer::session_for_idp_token(
                    &self.auth,
                    t,
                    route.bearer,
                    &route.access_token_audiences,
                )
                .await
            }
            None => None,
        })
    }

    /// Whether a long-lived connection's session has ended: expired, or gone from the store
    /// (signed out, revoked). A store outage does not end it (bounded staleness, as for requests).
    async fn session_ended(&self, s: &crate::session::Session) -> bool {
        s.is_expired(crate::session::unix_now())
            || matches!(self.auth.store.get(&s.id).await, Ok(None))
    }

    /// Carries an authorised `Upgrade: tcp` request as a raw TCP connection: connects to the
    /// route's address, answers 101, then copies bytes both ways until either side closes or
    /// the session ends (re-checked like websockets). Pingora switches the downstream to
    /// pass-through once it has sent the 101.
    async fn tunnel(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        addrs: &[std::net::SocketAddr],
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut upstream = None;
        for a in addrs {
            match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tokio::net::TcpStream::connect(a),
            )
            .await
            {
                Ok(Ok(s)) => {
                    upstream = Some(s);
                    break;
                }
                _ => {
                    tracing::warn!(request_id = %ctx.request_id, backend = %a, "tunnel backend unreachable")
                }
            }
        }
        let headers = ctx
            .route
            .as_ref()
            .map(|r| r.response_headers.clone())
            .unwrap_or_default();
        let Some(mut upstream) = upstream else {
            let r = Reply::error(
                StatusCode::BAD_GATEWAY,
                "the tunnel's backend could not be reached",
                false,
            );
            let _ = reply::send(session, r, &headers, &ctx.request_id).await;
            return;
        };
        let Ok(mut resp) = ResponseHeader::build(StatusCode::SWITCHING_PROTOCOLS, Some(3)) else {
            return;
        };
        let _ = resp.insert_header(http::header::UPGRADE, "tcp");
        let _ = resp.insert_header(http::header::CONNECTION, "Upgrade");
        let _ = resp.insert_header("x-request-id", ctx.request_id.as_str());
        if session
            .write_response_header(Box::new(resp), false)
            .await
            .is_err()
        {
            return;
        }
        ctx.upstream_started = Some(std::time::Instant::now());
        tracing::info!(request_id = %ctx.request_id, "tunnel open");
        let mut buf = vec![0u8; 16 * 1024];
        let mut recheck = tokio::time::interval(UPGRADE_RECHECK);
        loop {
            tokio::select! {
                from_client = session.read_request_body() => match from_client {
                    Ok(Some(bytes)) => {
                        if upstream.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                },
                n = upstream.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = bytes::Bytes::copy_from_slice(buf.get(..n).unwrap_or(&[]));
                        if session.write_response_body(Some(chunk), false).await.is_err() {
                            break;
                        }
                    }
                },
                _ = recheck.tick() => {
                    let Some(s) = ctx.identity.clone() else { continue };
                    if self.session_ended(&s).await {
                        tracing::info!(request_id = %ctx.request_id, session_id = %s.id, "tunnel closed: session ended");
                        break;
                    }
                }
            }
        }
        let _ = upstream.shutdown().await;
        let _ = session.write_response_body(None, true).await;
    }
}

/// How often an upgraded connection's session is re-confirmed while the client sends.
const UPGRADE_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Largest form body the sign-in endpoints read.
const MAX_FORM_BYTES: usize = 16 * 1024;

impl Gateway {
    async fn authn_request(
        &self,
        session: &mut Session,
        _host: &str,
        target: &Target,
    ) -> std::result::Result<AuthnInput, Reply> {
        let method = session.req_header().method.clone();
        let query = target
            .query
            .as_deref()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let mut form = Vec::new();
        if method == http::Method::POST {
            let mut body = Vec::new();
            loop {
                match session.read_request_body().await {
                    Ok(Some(chunk)) => {
                        body.extend_from_slice(&chunk);
                        if body.len() > MAX_FORM_BYTES {
                            return Err(Reply::error(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "form too large",
                                false,
                            ));
                        }
                    }
                    Ok(None) => break,
                    Err(e) if matches!(e.etype(), ErrorType::ReadTimedout) => {
                        tracing::info!(
                            "request refused: the body did not arrive within timeout_read"
                        );
                        return Err(Reply::error(
                            StatusCode::REQUEST_TIMEOUT,
                            "the request body did not arrive in time",
                            false,
                        ));
                    }
                    Err(_) => {
                        return Err(Reply::error(
                            StatusCode::BAD_REQUEST,
                            "cannot read the request body",
                            false,
                        ))
                    }
                }
            }
            form = url::form_urlencoded::parse(&body).into_owned().collect();
        }
        Ok(AuthnInput {
            method,
            query,
            cookies: cookie_header(session).map(std::borrow::Cow::into_owned),
            bearer: authn::programmatic::bearer_token(&session.req_header().headers)
                .map(str::to_string),
            form,
            scheme: self.scheme(),
        })
    }

    /// The identity values for the upstream request: the (cached) assertion and claim headers
    /// when the route passes identity headers, and the tokens `set_request_headers` may use.
    fn upstream_identity<'a>(
        ctx: &'a RequestCtx,
        route: &Route,
    ) -> Option<forward::UpstreamIdentity<'a>> {
        let session = ctx.identity.as_ref()?;
        let auth = ctx.snap.as_ref()?.settings.auth.as_ref()?;
        let wants_jwt = route.pass_identity_headers
            || route.set_request_headers.iter().any(|(_, t)| t.needs_jwt());
        let jwt = wants_jwt
            .then(|| crate::headers::assertion(auth, session, &ctx.host, route.issuer_uri));
        let headers = if route.pass_identity_headers {
            auth.claim_headers
                .iter()
                .map(|(h, claim)| {
                    (
                        h.clone(),
                        crate::headers::claim_header_value(session, claim),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        Some(forward::UpstreamIdentity {
            jwt,
            id_token: &session.id_token,
            access_token: &session.access_token,
            headers,
        })
    }

    /// The answer to a signed-in request on a route that needs a WebAuthn device this session
    /// has not proven: browsers go to the device page, API clients get Pomerium's 450.
    fn need_device(
        &self,
        session: &Session,
        settings: &crate::config::Settings,
        host_full: &str,
        target: &Target,
        route: &Route,
        request_id: &str,
    ) -> Step {
        let auth = match &settings.auth {
            Some(a) if prefers_html(session) => a,
            _ => {
                let body = serde_json::json!({ "error": "device-unauthenticated", "request_id": request_id });
                let status = StatusCode::from_u16(450).unwrap_or(StatusCode::FORBIDDEN);
                return Step::Reply(Reply::json(status, &body));
            }
        };
        let original = match self.return_url(session, host_full, target) {
            Ok(u) => u,
            Err(reply) => return Step::Reply(*reply),
        };
        let wanted = match &route.access {
            Access::Policy(p) => p.device_type_wanted(),
            Access::Public => None,
        };
        Step::Reply(Reply::found(
            authn::webauthn::device_url(auth, &original, wanted.as_deref()).as_str(),
        ))
    }

    /// The answer to an anonymous request on a route that needs a signed-in user.
    fn need_login(
        &self,
        session: &Session,
        settings: &crate::config::Settings,
        host_full: &str,
        target: &Target,
        request_id: &str,
    ) -> Step {
        let Some(auth) = &settings.auth else {
            return Step::Reply(Reply::error(
                StatusCode::FORBIDDEN,
                "sign-in is not configured",
                reply::wants_json(session),
            ));
        };
        if !prefers_html(session) {
            let body =
                serde_json::json!({ "error": "user-unauthenticated", "request_id": request_id });
            return Step::Reply(Reply::json(StatusCode::UNAUTHORIZED, &body));
        }
        match self.return_url(session, host_full, target) {
            Ok(original) => Step::Reply(Reply::found(authn::sign_in_url(auth, &original).as_str())),
            Err(reply) => Step::Reply(*reply),
        }
    }

    /// The URL a detour (sign-in, the device page) comes back to: the request as the browser
    /// sent it. Too long to carry through signed links → 414.
    fn return_url(
        &self,
        session: &Session,
        host_full: &str,
        target: &Target,
    ) -> std::result::Result<String, Box<Reply>> {
        let mut original = format!("{}://{host_full}{}", self.scheme(), target.path);
        if let Some(q) = &target.query {
            original.push('?');
            original.push_str(q);
        }
        if original.len() > authn::MAX_REDIRECT_LEN {
            return Err(Box::new(Reply::error(
                StatusCode::URI_TOO_LONG,
                "this URL is too long to leave and come back to",
                reply::wants_json(session),
            )));
        }
        Ok(original)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Some(std::time::Instant::now()),
            _open: Some(observe::OpenRequest::new(&self.metrics)),
            ..RequestCtx::default()
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snap = self.runtime.load_full();
        let s = &snap.settings;
        ctx.request_id = request_id(session, &s.ops);
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.trusted_peer = s.ops.trusts(peer);
        ctx.client_ip = if ctx.trusted_peer {
            client_behind_proxies(session, &s.ops).or(peer)
        } else {
            peer
        };
        session.set_keepalive(Some(s.timeout_idle.as_secs()));
        session.set_read_timeout(Some(s.timeout_read));
        session.set_write_timeout(s.timeout_write);
        let step = self.route_request(session, ctx, &snap).await;
        ctx.snap = Some(Arc::clone(&snap));
        match step {
            Step::Continue => Ok(false),
            Step::Tunnel(addrs) => {
                self.tunnel(session, ctx, &addrs).await;
                Ok(true)
            }
            Step::Reply(r) => {
                let headers = match &ctx.route {
                    Some(route) => route.response_headers.as_slice(),
                    None => snap.settings.response_headers.as_slice(),
                };
                reply::send(session, r, headers, &ctx.request_id).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(route), Some(picked)) = (&ctx.route, &ctx.picked) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no upstream chosen",
            ));
        };
        let Action::Upstream(pool) = &route.action else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "route has no upstream",
            ));
        };
        let mut peer = pool.peer(picked).ok_or_else(|| {
            Error::explain(
                ErrorType::InternalError,
                "picked backend is not in the pool",
            )
        })?;
        // Upgraded streams (websockets) have no timeout unless one was set on purpose.
        let timeout = if ctx.upgrade && !route.timeout_explicit {
            None
        } else {
            route.timeout
        };
        peer.options.connection_timeout =
            timeout.map(|t| t.min(std::time::Duration::from_secs(10)));
        peer.options.total_connection_timeout = timeout;
        peer.options.read_timeout = timeout;
        peer.options.write_timeout = timeout;
        peer.options.idle_timeout = route.idle_timeout;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(route), Some(target), Some(picked)) = (&ctx.route, &ctx.target, &ctx.picked)
        else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "request was not routed",
            ));
        };
        let Action::Upstream(pool) = &route.action else {
            return Ok(());
        };
        let Some(t) = pool.targets.get(picked.target) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "picked backend is not in the pool",
            ));
        };
        // The common case, no rewrite and a target the client already sent in normal form,
        // keeps the request line as it is: no string to build, no URI to parse.
        let unchanged = matches!(route.rewrite, PathRewrite::None)
            && t.path_prefix.is_empty()
            && forward::same_target(req.raw_path(), &target.path, target.query.as_deref());
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
        let info = ForwardInfo {
            identity: Self::upstream_identity(ctx, route),
            pass_assertion: route.pass_identity_headers,
            strip_cookies: own_cookies.as_ref().map_or(&[][..], |c| c.as_slice()),
            original_host: &ctx.host,
            client_ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            scheme: self.scheme(),
            skip_xff_append: settings.is_some_and(|s| s.skip_xff_append),
            upgrade: ctx.upgrade,
            trusted_peer: ctx.trusted_peer,
            strip_identity: settings
                .map(|s| s.ops.strip_identity_headers.as_slice())
                .unwrap_or(&[]),
            claim_headers: auth.map(|a| a.claim_headers.as_slice()).unwrap_or(&[]),
            client_cert: ctx.client_cert.as_deref(),
        };
        forward::shape_request(req, route, t, &info)?;
        req.insert_header("x-request-id", ctx.request_id.as_str())?;
        ctx.upstream_started = Some(std::time::Instant::now());
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // An upgraded (websocket) connection lives as long as its session: re-confirmed in the
        // store at most every UPGRADE_RECHECK while the client sends, and cut when it ended.
        if ctx.upgrade {
            if let Some(s) = ctx.identity.clone() {
                let now = std::time::Instant::now();
                if s.is_expired(crate::session::unix_now()) {
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(401),
                        "session expired",
                    ));
                }
                let due = ctx
                    .session_checked
                    .is_none_or(|t| now.duration_since(t) >= UPGRADE_RECHECK);
                if due {
                    ctx.session_checked = Some(now);
                    if self.session_ended(&s).await {
                        tracing::info!(request_id = %ctx.request_id, session_id = %s.id, "upgraded connection closed: session ended");
                        return Err(Error::explain(ErrorType::HTTPStatus(401), "session ended"));
                    }
                }
            }
        }
        if let (Some(b), Some(max)) = (
            body.as_ref(),
            ctx.route.as_ref().and_then(|r| r.max_request_bytes),
        ) {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > max {
                tracing::info!(request_id = %ctx.request_id, limit = max, "request refused: body too large");
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body too large",
                ));
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        // LEAST_REQUEST counts what a backend is working on: its response has ended, so this
        // request stops counting before the client has read it, not when it is logged.
        if end_of_stream {
            if let Some(p) = ctx.picked.as_mut() {
                p.done();
            }
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = &ctx.route {
            forward::shape_response(resp, route)?;
        }
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let req = session.req_header();
        let m = &self.metrics;
        let (method, status_class) = (
            observe::method_class(&req.method),
            observe::status_class(status),
        );
        let elapsed = ctx.started.map(|s| s.elapsed()).unwrap_or_default();
        let upstream = ctx.upstream_started.map(|u| u.elapsed().as_secs_f64());
        let route = match &ctx.route {
            Some(r) => {
                m.route_request(
                    &r.metrics,
                    &r.id,
                    method,
                    status_class,
                    elapsed.as_secs_f64(),
                    upstream,
                );
                &*r.id
            }
            None => {
                m.unrouted_request(method, status_class, elapsed.as_secs_f64());
                "-"
            }
        };
        // The access line is built only when it will be written (`log_level` may drop it).
        if !tracing::enabled!(target: "vallum::access", tracing::Level::INFO) {
            return;
        }
        let Some(snap) = ctx.snap.as_ref() else {
            return;
        };
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        let path = ctx
            .target
            .as_ref()
            .map(|t| t.path.as_str())
            .unwrap_or_else(|| req.uri.path());
        let query = ctx
            .target
            .as_ref()
            .and_then(|t| t.query.as_deref())
            .or_else(|| req.uri.query());
        let details = match e {
            Some(e) => e.etype().as_str(),
            None if ctx.upstream_started.is_some() => "via_upstream",
            None => "local_reply",
        };
        observe::Access {
            fields: snap.settings.ops.access_log,
            route,
            method: req.method.as_str(),
            authority: header("host")
                .or_else(|| req.uri.authority().map(|a| a.as_str()))
                .unwrap_or(""),
            path,
            query,
            user_agent: header("user-agent"),
            referer: header("referer"),
            forwarded_for: header("x-forwarded-for"),
            ip: ctx.client_ip,
            request_id: &ctx.request_id,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            size: session.body_bytes_sent(),
            status,
            details,
        }
        .log();
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        use pingora_core::ErrorSource;
        let code = match e.etype() {
            ErrorType::HTTPStatus(c) => *c,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    ErrorType::ReadTimedout => 408,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            let reason = match code {
                502 => "the upstream could not be reached or answered badly",
                504 => "the upstream did not answer in time",
                _ => status.canonical_reason().unwrap_or("error"),
            };
            let r = Reply::error(status, reason, reply::wants_json(session));
            let headers = ctx
                .route
                .as_ref()
                .map(|r| r.response_headers.clone())
                .unwrap_or_default();
            if let Err(err) = reply::send(session, r, &headers, &ctx.request_id).await {
                tracing::debug!(error = %err, "could not send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
