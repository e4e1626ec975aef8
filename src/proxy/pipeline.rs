//! The request's life through Vallum, as a table of contents: each step is a function in its own
//! file, returns what the next step needs or a `Refusal`, and none writes a response itself.
//! `request_filter` turns the outcome into one (`respond::refusal::Answer::refuse`).

use super::action::{self, Step};
use super::{access, client_cert, endpoints, hygiene, target, upgrade, verify};
use super::{Gateway, RequestCtx};
use crate::respond::refusal::Refusal;
use crate::snapshot::Snapshot;
use pingora_proxy::Session;
use std::sync::Arc;
use tracing::Instrument;

pub async fn route_request(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    snap: &Snapshot,
) -> Result<Step, Refusal> {
    let settings = &snap.settings;
    // 1. A well-formed request: request line, framing, header limits, underscores.
    hygiene::check(session, settings, &ctx.request_id)?;
    // 2. One path truth (or a redirect to its normal form); probes answer on every host.
    let target = match target::path(session, settings)? {
        Ok(t) => t,
        Err(to_normal_form) => return Ok(Step::Reply(to_normal_form)),
    };
    if let Some(ok) = endpoints::probe(&session.req_header().method, &target) {
        return Ok(Step::Reply(ok));
    }
    let at = target::host(session.req_header(), target, gw.tls)?;
    // 3a. Forward auth: an ingress asks about a request it holds.
    if let Some(reply) = verify::serve(gw, session, ctx, snap, &at).await? {
        return Ok(Step::Reply(reply));
    }
    // 3b. Vallum's own endpoints: the authenticate host, `/.pomerium/` on route hosts.
    if let Some(reply) = endpoints::serve(gw, session, ctx, snap, &at).await? {
        return Ok(Step::Reply(reply));
    }
    // 4. The route: first match in config order. Known from here on, so every answer (deny,
    // login, limits) is counted under it.
    let route = snap
        .routes
        .find(&at.host, at.port, &at.target.path)
        .map(Arc::clone)
        .ok_or(Refusal::NoRoute)?;
    ctx.route = Some(Arc::clone(&route));
    ctx.trace.routed(
        session.req_header().method.as_str(),
        &route.id,
        &at.host,
        &ctx.request_id,
    );
    // 5. Upgrades the route allows, and a declared body within its limit.
    let headers = &session.req_header().headers;
    ctx.upgrade = upgrade::admit(headers, session.is_upgrade_req(), &route)?;
    upgrade::declared_body(headers, route.max_request_bytes).inspect_err(|_| {
        tracing::info!(request_id = %ctx.request_id, route_id = %route.id, "request refused: body too large");
    })?;
    // 6. The client certificate the connection presented.
    let conn = client_cert::conn(session);
    ctx.client_cert = client_cert::check(conn, snap, &route, &at, &gw.metrics, &ctx.request_id)?;
    // 6b. On an MCP route, the JSON-RPC messages the decision is about.
    // Boxed: its state (a body being read) would otherwise enlarge every request's future, and
    // moving that costs every request (measured: ~600 instructions).
    let mcp = match route.mcp {
        Some(_) => Box::pin(super::mcp::read(session, &route, &at.target.path)).await?,
        None => None,
    };
    // 7. Identity and access: deny unless the policy allows.
    let decided = authorize(gw, session, ctx, snap, &route, &at, mcp.as_ref()).await;
    ctx.identity = decided?;
    ctx.mcp_list = super::mcp::tools_list(&route, mcp.as_ref());
    // 8. The action: respond, redirect, forward to a picked backend, or tunnel.
    let step = action::take(&route, &at, gw.scheme(), ctx)
        .await
        .inspect_err(|r| {
            if matches!(r, Refusal::UpstreamUnresolved) {
                gw.metrics
                    .upstream_unresolved
                    .with_label_values(&[&route.id])
                    .inc();
            }
        })?;
    // 9. A place under the route's circuit breaker, or a 503 at once.
    if let (Step::Forward, Some(breaker)) = (&step, &route.breaker) {
        let admitted = breaker.admit().await.map_err(|limit| {
            gw.metrics
                .upstream_overflow
                .with_label_values(&[&route.id, limit.as_str()])
                .inc();
            tracing::info!(request_id = %ctx.request_id, route_id = %route.id, limit = limit.as_str(), "request refused: upstream at its circuit breaker limit");
            Refusal::UpstreamOverloaded
        })?;
        ctx.admitted = Some(admitted);
    }
    // 10. The upstream's own credential, where the route asks for one.
    if matches!(step, Step::Forward) {
        ctx.upstream_bearer = upstream_credential(gw, ctx, snap, &route, &at).await?;
    }
    ctx.target = Some(at.target);
    ctx.host = at.host;
    Ok(step)
}

/// The upstream's own `Authorization`: a Google serverless identity token, the user's token for
/// an MCP server that takes one (`upstream_oauth2`, or discovered), or an MCP client app's token
/// for its user.
async fn upstream_credential(
    gw: &Gateway,
    ctx: &RequestCtx,
    snap: &Snapshot,
    route: &crate::routes::route::Route,
    at: &target::Addressed,
) -> Result<Option<Arc<str>>, Refusal> {
    if let Some(audience) = &route.serverless_audience {
        // Boxed, like the other credentials: its state (a call to the metadata server) would
        // otherwise enlarge every request's future.
        let token = Box::pin(gw.serverless.token(audience)).await.map_err(|why| {
            tracing::warn!(request_id = %ctx.request_id, route_id = %route.id, error = %why, "request refused: no Google serverless identity token");
            Refusal::UpstreamCredentials
        })?;
        return Ok(Some(token));
    }
    if route.mcp_client {
        return match (snap.auth(), ctx.identity.as_deref()) {
            (Some(auth), Some(s)) if auth.mcp.enabled => Ok(Some(
                crate::authn::mcp_oauth::delegated_token(&auth, s, &route.id),
            )),
            _ => Ok(None),
        };
    }
    // Only MCP routes can take one: other routes never build the sign-in view for it.
    let takes_user_token = route.mcp.is_some()
        && snap
            .auth()
            .is_some_and(|a| crate::authn::mcp_oauth::upstream::applies(&a, route));
    if takes_user_token {
        let who = ctx.identity.as_deref();
        return Box::pin(super::mcp::upstream_token(gw, snap, route, at, who)).await;
    }
    Ok(None)
}

/// Step 7 under its own trace span: who is asking, and the route's policy on it (on each
/// JSON-RPC message of an MCP request).
async fn authorize(
    gw: &Gateway,
    session: &Session,
    ctx: &RequestCtx,
    snap: &Snapshot,
    route: &crate::routes::route::Route,
    at: &target::Addressed,
    mcp: Option<&crate::policy::mcp::McpRequest>,
) -> Result<Option<Arc<crate::session::UserSession>>, Refusal> {
    let span = match ctx.trace.recording() {
        Some(request) => crate::trace_span!(
            parent: request,
            "authorize",
            vallum.route_id = %route.id,
            vallum.outcome = tracing::field::Empty,
            vallum.reasons = tracing::field::Empty,
        ),
        None => tracing::Span::none(),
    };
    let asking = access::Asking {
        mcp,
        ..access::Asking::of(session)
    };
    let decided = access::decide(gw, &asking, ctx, snap, route, at)
        .instrument(span.clone())
        .await;
    access::trace_outcome(&span, &decided);
    decided
}
