//! What one request carries from `request_filter` to `logging`: filled in by the steps, read by
//! the later Pingora phases.

use crate::routes::path::Target;
use crate::routes::route::Route;
use crate::session::UserSession;
use crate::snapshot::Snapshot;
use crate::telemetry::logs::OpenRequest;
use crate::tls::peer::PeerCert;
use crate::upstream::Picked;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

#[derive(Default)]
pub struct RequestCtx {
    /// The snapshot this request is served from, start to end (a reload never changes it midway).
    pub snap: Option<Arc<Snapshot>>,
    pub route: Option<Arc<Route>>,
    pub target: Option<Target>,
    /// The request's host, lower-case, without port.
    pub host: String,
    pub upgrade: bool,
    /// A gRPC call's `grpc-timeout`: the upstream is waited for no longer.
    pub deadline: Option<std::time::Duration>,
    pub picked: Option<Picked>,
    pub identity: Option<Arc<UserSession>>,
    /// Correlates the access log, the authorize log, error pages and the upstream's logs.
    pub request_id: String,
    pub started: Option<Instant>,
    pub upstream_started: Option<Instant>,
    /// Request body bytes seen so far (for `max_request_bytes`).
    pub body_bytes: u64,
    /// The peer is in `trusted_proxies`: its forwarding headers are believed.
    pub trusted_peer: bool,
    /// The client's address: the peer, or (behind trusted proxies) the right-most untrusted
    /// `X-Forwarded-For` entry.
    pub client_ip: Option<IpAddr>,
    /// When an upgraded connection's session was last confirmed in the store.
    pub session_checked: Option<Instant>,
    /// The connection's trusted client certificate (downstream mTLS), for header templates.
    pub client_cert: Option<Arc<PeerCert>>,
    /// The ID token the upstream gets as `Authorization: Bearer` (Google serverless routes).
    pub upstream_bearer: Option<Arc<str>>,
    pub open: Option<OpenRequest>,
    /// The request's place under the route's circuit breaker, given back when it ends.
    pub admitted: Option<crate::upstream::breaker::Admitted>,
    /// A `tools/list` on an MCP route whose answer is filtered by the policy (boxed: every
    /// request's context carries the field, few use it).
    pub mcp_list: Option<Box<super::mcp_list::ToolsList>>,
    /// Its OpenTelemetry spans (empty when tracing is off).
    pub trace: crate::telemetry::traces::RequestTrace,
}

#[cfg(test)]
mod tests {
    /// The context is moved with every request's future, so its size is copied on every request:
    /// a field that makes it grow should be boxed unless most requests use it (the picked
    /// backend's address is inline for an IP and boxed for a Unix socket for this reason).
    #[test]
    fn the_context_stays_small() {
        let size = std::mem::size_of::<super::RequestCtx>();
        eprintln!("RequestCtx: {size} bytes");
        assert!(size <= 352, "RequestCtx grew to {size} bytes");
    }
}
