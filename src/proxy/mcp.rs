//! Step 6b on MCP routes (`mcp.server`): the JSON-RPC body of a POST is read (up to the route's
//! `max_request_bytes`, kept for the upstream by Pingora's retry buffer) and each message is
//! decided on its own, so `mcp_tool` and `mcp_tool_argument` see the call they are about. A
//! refused call is answered with a JSON-RPC error carrying its id (`respond::mcp`); the upstream
//! sees nothing of a request any of whose calls is refused.

use super::access::{log_decision, Asking};
use super::target::Addressed;
use super::{Gateway, RequestCtx};
use crate::policy::mcp::{McpMessage, McpParseError, McpRequest};
use crate::policy::{Decision, Input, Policy};
use crate::respond::mcp::{self as jsonrpc, McpError, McpRefusal};
use crate::respond::refusal::Refusal;
use crate::routes::route::Route;
use crate::session::UserSession;
use crate::snapshot::Snapshot;
use http::StatusCode;
use pingora_core::ErrorType;
use pingora_proxy::Session;

/// Distinct tool names given their own metric series, across routes; later ones count as `other`.
const MAX_TOOL_LABELS: usize = 1000;

/// The JSON-RPC messages of this request, when it is a POST to the route's MCP server.
pub async fn read(
    session: &mut Session,
    route: &Route,
    path: &str,
) -> Result<Option<McpRequest>, Refusal> {
    let Some(server) = route.mcp.as_deref() else {
        return Ok(None);
    };
    if session.req_header().method != http::Method::POST
        || server.path.as_deref().is_some_and(|p| p != path)
    {
        return Ok(None);
    }
    let max = server.max_request_bytes;
    let too_large = || {
        Refusal::Mcp(Box::new(McpRefusal::whole(
            StatusCode::PAYLOAD_TOO_LARGE,
            jsonrpc::TOO_LARGE,
            format!("the request body is larger than this route's max_request_bytes ({max})"),
        )))
    };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    // Kept for the upstream: Pingora sends the buffer before the rest of the body.
    session.as_mut().enable_retry_buffering();
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > max {
                    return Err(too_large());
                }
            }
            Ok(None) => break,
            Err(e) if matches!(e.etype(), ErrorType::ReadTimedout) => {
                return Err(Refusal::BodyTimeout)
            }
            Err(_) => return Err(Refusal::BodyUnreadable),
        }
    }
    crate::policy::mcp::parse(&body).map(Some).map_err(|e| {
        let code = match e {
            McpParseError::Parse(_) => jsonrpc::PARSE_ERROR,
            McpParseError::Invalid(_) => jsonrpc::INVALID_REQUEST,
        };
        Refusal::Mcp(Box::new(McpRefusal::whole(
            StatusCode::BAD_REQUEST,
            code,
            e.to_string(),
        )))
    })
}

/// A `tools/list` whose answer the route's policy filters (only when the policy speaks of
/// tools: otherwise every tool it lists may be called).
pub fn tools_list(
    route: &Route,
    request: Option<&McpRequest>,
) -> Option<Box<super::mcp_list::ToolsList>> {
    let request = request.filter(|r| !r.batch)?;
    let m = request
        .messages
        .first()
        .filter(|m| m.method == "tools/list")?;
    match &route.access {
        crate::routes::route::Access::Policy(p) if p.mentions_mcp() => {
            Some(Box::new(super::mcp_list::ToolsList::new(m.id.clone()?)))
        }
        _ => None,
    }
}

/// Decides each message of an MCP request: allowed only if every one is. Refused calls get a
/// JSON-RPC error with their reasons; in a refused batch, the others are left unanswered with
/// an error that says why.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    gw: &Gateway,
    asking: &Asking<'_>,
    ctx: &RequestCtx,
    snap: &Snapshot,
    route: &Route,
    at: &Addressed,
    who: Option<&UserSession>,
    policy: &Policy,
    base: &Input<'_>,
    request: &McpRequest,
) -> Result<Decision, Refusal> {
    let mut refused: Vec<(usize, Vec<crate::policy::Reason>)> = Vec::new();
    let mut login = false;
    for (i, m) in request.messages.iter().enumerate() {
        let input = Input {
            mcp: Some(m.input()),
            ..*base
        };
        let decision = within_limit(gw, ctx, route, who, m, policy.evaluate(&input));
        log_decision(gw, asking, ctx, snap, route, at, who, Some(m), &decision);
        count(gw, route, m, &decision);
        match decision {
            Decision::Allow => {}
            Decision::NeedLogin => login = true,
            Decision::Deny { reasons } => refused.push((i, reasons)),
        }
    }
    if login {
        return Ok(Decision::NeedLogin);
    }
    if refused.is_empty() {
        return Ok(Decision::Allow);
    }
    let errors: Vec<McpError> = request
        .messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let id = m.id.clone()?;
            Some(match refused.iter().find(|(j, _)| *j == i) {
                Some((_, reasons)) => McpError {
                    id,
                    code: jsonrpc::FORBIDDEN,
                    message: refusal_text(m, reasons),
                    reasons: reasons.iter().map(|r| r.as_str()).collect(),
                },
                None => McpError {
                    id,
                    code: jsonrpc::BATCH_REFUSED,
                    message: "not forwarded: another call in this batch was refused".into(),
                    reasons: Vec::new(),
                },
            })
        })
        .collect();
    if errors.is_empty() {
        // Only notifications were refused: JSON-RPC has no answer for them.
        let reasons = refused.into_iter().flat_map(|(_, r)| r).collect();
        return Err(Refusal::Forbidden(reasons));
    }
    Err(Refusal::Mcp(Box::new(McpRefusal {
        status: StatusCode::OK,
        batch: request.batch,
        errors,
    })))
}

/// An allowed tool call, unless it is over the route's rate limit for this caller and tool (the
/// user, else the client's address).
fn within_limit(
    gw: &Gateway,
    ctx: &RequestCtx,
    route: &Route,
    who: Option<&UserSession>,
    m: &McpMessage,
    decision: Decision,
) -> Decision {
    let (Decision::Allow, Some(tool), Some(mcp)) = (&decision, m.tool.as_deref(), &route.mcp)
    else {
        return decision;
    };
    let ip;
    let caller = match who {
        Some(s) => s.user_id.as_str(),
        None => {
            ip = ctx.client_ip.map(|a| a.to_string()).unwrap_or_default();
            ip.as_str()
        }
    };
    match gw
        .mcp_rates
        .allow(&route.id, mcp, caller, tool, crate::clock::unix_now())
    {
        true => decision,
        false => Decision::Deny {
            reasons: vec![crate::policy::Reason::McpRateLimited],
        },
    }
}

fn refusal_text(m: &McpMessage, reasons: &[crate::policy::Reason]) -> String {
    let what = match &m.tool {
        Some(t) => format!("the call to tool {t:?}"),
        None => format!("{:?}", m.method),
    };
    if reasons == [crate::policy::Reason::McpRateLimited] {
        return format!("too many calls: {what} is over this route's rate limit; try again later");
    }
    let why: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
    format!("{what} is not allowed here ({})", why.join(", "))
}

/// Counts a tool call by route, tool and outcome.
fn count(gw: &Gateway, route: &Route, m: &McpMessage, decision: &Decision) {
    let Some(tool) = m.tool.as_deref() else {
        return;
    };
    let labels = &gw.metrics.mcp_tool_labels;
    let known = labels.contains(tool)
        || (labels.len() < MAX_TOOL_LABELS && tool.len() <= 64 && labels.insert(tool.to_string()))
        || labels.contains(tool);
    let outcome = match decision {
        Decision::Allow => "allowed",
        Decision::Deny { reasons } if reasons == &[crate::policy::Reason::McpRateLimited] => {
            "rate_limited"
        }
        Decision::Deny { .. } => "denied",
        Decision::NeedLogin => "login",
    };
    gw.metrics
        .mcp_calls
        .with_label_values(&[&*route.id, if known { tool } else { "other" }, outcome])
        .inc();
}

/// The user's own token for an MCP server that takes one (`upstream_oauth2`, or discovered),
/// for the upstream's `Authorization`. None held (never granted, or refused at refresh): the
/// client is told its token is no longer good, so it authorizes again and the person grants
/// access again.
pub async fn upstream_token(
    gw: &Gateway,
    snap: &Snapshot,
    route: &Route,
    at: &Addressed,
    who: Option<&UserSession>,
) -> Result<Option<std::sync::Arc<str>>, Refusal> {
    use crate::authn::mcp_oauth::upstream::{token_for, Upstream};
    let (Some(auth), Some(s)) = (snap.auth(), who) else {
        return Err(Refusal::UpstreamCredentials);
    };
    match token_for(&auth, &gw.auth, route, s).await {
        Ok(Upstream::Token(t)) => Ok(Some(t)),
        Ok(Upstream::NotNeeded) => Ok(None),
        Ok(Upstream::Missing) => Err(super::access::mcp_challenge(at, true)),
        Err(e) => {
            tracing::warn!(route_id = %route.id, error = %e, "request refused: no upstream token for the MCP server");
            Err(Refusal::UpstreamCredentials)
        }
    }
}
