//! The Pingora `ProxyHttp` implementation. The trait is the outline of a request's life and each
//! phase here is a call into the file that holds it: `pipeline` (the steps of `request_filter`,
//! one file each), `upstream` (peer and request shaping), `streaming`, `log`, `failure`.
//!
//! The request path reads the snapshot the control plane built; its only network I/O is the
//! session store (when a route needs the user), a tunnel's connect, and the upstream itself.

pub mod access;
pub mod action;
pub mod client_cert;
mod connect;
pub mod ctx;
mod deadline;
pub mod endpoints;
pub mod failure;
pub mod forward;
mod head_deadline;
pub mod hygiene;
mod log;
mod mcp;
mod mcp_list;
mod mcp_rate;
pub mod pipeline;
mod plain_head;
mod streaming;
pub mod target;
#[cfg(test)]
mod testing;
mod tunnel;
pub mod upgrade;
mod upstream;
pub mod verify;
pub mod wire;

use crate::authn::AuthState;
use crate::config::ops::OpsSettings;
use crate::config::otel::TrustParent;
use crate::respond::refusal::{Answer, Format};
use crate::respond::reply;
use crate::snapshot::SharedSnapshot;
use crate::telemetry::logs::OpenRequest;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::RequestTrace;
use action::Step;
use async_trait::async_trait;
pub use ctx::RequestCtx;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::IpAddr;
use std::sync::Arc;
use tracing::Instrument;

pub struct Gateway {
    snapshot: SharedSnapshot,
    auth: Arc<AuthState>,
    metrics: Arc<Metrics>,
    /// Sign-in requests per client IP in the current second, so nobody can flood the IdP (or
    /// the session store) through Vallum.
    sign_in_rate: pingora_limits::rate::Rate,
    /// MCP tool calls per user and tool (`mcp.server.rate_limits`), kept across reloads.
    mcp_rates: mcp_rate::McpRates,
    /// Whether this listener terminates TLS (fixed for the listener's life).
    tls: bool,
    /// ID tokens for routes with `enable_google_cloud_serverless_authentication`.
    serverless: crate::upstream::serverless::ServerlessTokens,
}

impl Gateway {
    pub fn new(snapshot: SharedSnapshot, tls: bool, auth: Arc<AuthState>) -> Self {
        let metrics = Arc::clone(&auth.metrics);
        Self {
            snapshot,
            auth,
            metrics,
            sign_in_rate: pingora_limits::rate::Rate::new(std::time::Duration::from_secs(1)),
            mcp_rates: Default::default(),
            tls,
            serverless: crate::upstream::serverless::ServerlessTokens::from_env(),
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

/// The HTTP/1 connection's wire tap (HTTP/2 streams have none).
fn tap(session: &Session) -> Option<&wire::WireTap> {
    wire::tap_of(session.as_downstream().as_http1()?.stream())
}

fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The request id: the incoming `X-Request-Id` when the peer is a trusted proxy and the value is
/// sane (visible ASCII, at most 128 bytes), else a fresh one. An untrusted client cannot choose
/// the id that ties log lines together.
fn request_id(session: &Session, ops: &OpsSettings, trusted_peer: bool) -> String {
    if trusted_peer && !ops.trusted_proxies.is_empty() {
        if let Some(v) = session
            .req_header()
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        {
            return v.to_string();
        }
    }
    crate::crypto::request_id()
}

/// The client's address: the peer's, unless proxies in front of Vallum are declared. Behind
/// `trusted_proxies`, it is the right-most `X-Forwarded-For` address that is not itself a
/// trusted proxy (entries to its left were written by the client and prove nothing); with
/// `xff_num_trusted_hops: N` (Envoy's meaning, as Pomerium passes it on), the N-th address from
/// the right.
fn client_ip(session: &Session, ops: &OpsSettings, peer: Option<IpAddr>) -> Option<IpAddr> {
    let listed = ops.trusts(peer);
    if !listed && ops.xff_num_trusted_hops == 0 {
        return peer;
    }
    let all: Vec<IpAddr> = session
        .req_header()
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    let found = if listed {
        all.into_iter().rev().find(|ip| !ops.trusts(Some(*ip)))
    } else {
        all.len()
            .checked_sub(ops.xff_num_trusted_hops)
            .and_then(|i| all.get(i).copied())
    };
    found.or(peer)
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Some(std::time::Instant::now()),
            open: Some(OpenRequest::new(&self.metrics)),
            ..RequestCtx::default()
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(tap) = tap(session) {
            tap.head_received();
        }
        let snap = self.snapshot.load_full();
        let s = &snap.settings;
        let peer = peer_ip(session);
        let listed = s.ops.trusts(peer);
        ctx.request_id = request_id(session, &s.ops, listed);
        // Forwarding headers are believed from a listed proxy, or from any peer when the config
        // says how many proxies stand in front (`xff_num_trusted_hops`).
        ctx.trusted_peer = listed || s.ops.xff_num_trusted_hops > 0;
        ctx.client_ip = client_ip(session, &s.ops, peer);
        ctx.trace = RequestTrace::start(
            session.req_header(),
            s.otel.as_ref().map_or(TrustParent::Never, |o| o.trust),
            listed,
        );
        session.set_keepalive(Some(s.timeout_idle.as_secs()));
        session.set_read_timeout(Some(s.timeout_read));
        session.set_write_timeout(s.timeout_write);
        let span = ctx.trace.span();
        let outcome = pipeline::route_request(self, session, ctx, &snap)
            .instrument(span)
            .await;
        ctx.snap = Some(Arc::clone(&snap));
        let reply = match outcome {
            Ok(Step::Forward) => return Ok(false),
            Ok(Step::Tunnel(addrs)) => {
                Box::pin(tunnel::run(self, session, ctx, &addrs)).await;
                return Ok(true);
            }
            Ok(Step::Reply(r)) => r,
            Err(refusal) => Answer {
                format: Format::of(&session.req_header().headers),
                request_id: &ctx.request_id,
                branding: Some(&snap.settings.branding),
            }
            .refuse(refusal),
        };
        let headers = match &ctx.route {
            Some(route) => route.response_headers.as_slice(),
            None => snap.settings.response_headers.as_slice(),
        };
        // Boxed, as the tunnel is: a reply's state (1.3 KB) would otherwise enlarge the future
        // of every request, also those that go upstream, and be copied with it.
        Box::pin(reply::send(session, reply, headers, &ctx.request_id)).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        // gRPC runs over HTTP/2 only: an HTTP/1.1 request skips the header lookup.
        ctx.deadline = if session.is_http2() {
            deadline::grpc_timeout(&session.req_header().headers)
        } else {
            None
        };
        let peer = upstream::peer(ctx)?;
        if ctx.trace.recording().is_some() {
            ctx.trace.upstream(&peer._address.to_string());
        }
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        _: &mut Session,
        _: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        upstream::connect_failed(ctx);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream::request(req, ctx, peer_ip(session), self.scheme())?;
        ctx.trace.inject(req)?;
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
        streaming::request_body(self, body.as_ref(), ctx).await
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

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        mcp_list::body(session, body, end_of_stream, ctx);
        Ok(None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let id = forward::value(&ctx.request_id)?;
        let added = 1 + ctx.route.as_ref().map_or(0, |r| r.response_headers.len());
        plain_head::response(resp, added, |headers| {
            if let Some(route) = &ctx.route {
                forward::shape_response(headers, route)?;
            }
            forward::set(headers, upstream::X_REQUEST_ID, id)
        })?;
        mcp_list::head(resp, ctx);
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        log::record(&self.metrics, session, e, ctx);
        ctx.trace
            .finish(session.response_written().map_or(0, |r| r.status.as_u16()));
        log::passive_health(session, e, ctx);
        if let (Some(tap), Some(snap)) = (tap(session), &ctx.snap) {
            tap.request_ended(snap.settings.timeout_read);
        }
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let refusal = failure::classify(e.etype(), e.esource());
        let code = refusal.as_ref().map_or(0, |r| r.status().as_u16());
        if let (Some(refusal), None) = (refusal, session.response_written()) {
            let answer = Answer {
                format: Format::of(&session.req_header().headers),
                request_id: &ctx.request_id,
                branding: ctx.snap.as_ref().map(|s| &s.settings.branding),
            };
            let r = answer.refuse(refusal);
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
