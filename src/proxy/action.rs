//! Step 8: what an admitted request becomes: the route's direct response, a redirect, a backend
//! picked from its pool, or a TCP tunnel.

use super::forward::{self, RequestUrl};
use super::target::Addressed;
use super::RequestCtx;
use crate::respond::refusal::Refusal;
use crate::respond::reply::Reply;
use crate::routes::route::{Action, PathMatch, Route};
use http::HeaderValue;
use std::net::SocketAddr;

/// What `request_filter` does next.
pub enum Step {
    /// Proxy to the backend picked into the context.
    Forward,
    Reply(Reply),
    /// An authorised tunnel request: carry the connection to one of these addresses.
    Tunnel(Vec<SocketAddr>),
}

pub fn take(
    route: &Route,
    at: &Addressed,
    scheme: &'static str,
    ctx: &mut RequestCtx,
) -> Result<Step, Refusal> {
    match &route.action {
        Action::Respond { status, body } => Ok(Step::Reply(Reply::text(*status, body.clone()))),
        Action::Tunnel(addrs) => Ok(Step::Tunnel(addrs.clone())),
        Action::Redirect(spec) => {
            let matched = match &route.path {
                PathMatch::Prefix(p) | PathMatch::Exact(p) => p.as_str(),
                _ => "/",
            };
            let url = RequestUrl {
                scheme,
                host: &at.host,
                port: Some(at.port),
                path: &at.target.path,
                query: at.target.query.as_deref(),
            };
            HeaderValue::from_str(&forward::redirect_location(spec, matched, &url))
                .map(|v| Step::Reply(Reply::redirect(spec.status, v)))
                .map_err(|_| Refusal::BadRedirect)
        }
        Action::Upstream(pool) => {
            // Hash key for RING_HASH/MAGLEV: the session (a user sticks to a backend across
            // networks), else the client IP.
            let key = match &ctx.identity {
                _ if !pool.uses_key() => String::new(),
                Some(s) => s.id.clone(),
                None => ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            };
            let picked = pool
                .pick(key.as_bytes())
                .ok_or(Refusal::NoHealthyUpstream)?;
            ctx.picked = Some(picked);
            Ok(Step::Forward)
        }
    }
}
