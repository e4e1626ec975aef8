//! Step 7: who is asking, and may they? Deny by default: a route is served only when its policy
//! allows. The session is read only when the decision or the upstream headers need it.

use super::target::Addressed;
use super::{Gateway, RequestCtx};
use crate::authn;
use crate::config::auth::BearerFormat;
use crate::policy::mcp::{McpMessage, McpRequest};
use crate::policy::{Decision, Input, Reason};
use crate::respond::refusal::{Format, Refusal};
use crate::routes::route::{Access, Route};
use crate::session::UserSession;
use crate::snapshot::Snapshot;
use crate::telemetry::logs::{Authorize, Who};
use pingora_proxy::Session;
use std::sync::Arc;

/// What a decision reads from the request: the proxied request itself, or (forward auth) the
/// original request an ingress describes.
pub struct Asking<'a> {
    pub method: &'a http::Method,
    /// Cookies, bearer tokens, `Accept`, CORS preflight headers.
    pub headers: &'a http::HeaderMap,
    pub client_cert: crate::policy::CertInput<'a>,
    /// The JSON-RPC messages of a request to an MCP route (read by `mcp::read`).
    pub mcp: Option<&'a McpRequest>,
}

impl<'a> Asking<'a> {
    /// The request Pingora received, with its connection's client certificate.
    pub fn of(session: &'a Session) -> Self {
        Asking {
            method: &session.req_header().method,
            headers: &session.req_header().headers,
            client_cert: super::client_cert::input(super::client_cert::conn(session)),
            mcp: None,
        }
    }
}

/// The signed-in user (if the route needs one and there is one), once the policy allowed.
pub async fn decide(
    gw: &Gateway,
    session: &Asking<'_>,
    ctx: &RequestCtx,
    snap: &Snapshot,
    route: &Route,
    at: &Addressed,
) -> Result<Option<Arc<UserSession>>, Refusal> {
    let ended = |who: Option<&UserSession>, reason| {
        let decision = Decision::Deny {
            reasons: vec![reason],
        };
        log_decision(gw, session, ctx, snap, route, at, who, None, &decision);
    };
    // Browser or API client matters only for a refusal: read `Accept` then, not on every request.
    let format = || Format::of(session.headers);
    // Boxed, and only where the route reads the user: the session lookup's state would otherwise
    // enlarge every request's future (public routes too), and moving it costs each request.
    let who = match wants_identity(route) {
        true => Box::pin(who(gw, session, snap, route, at)).await,
        false => Ok(None),
    };
    let identity = match who {
        Ok(i) => i,
        Err((reason, refusal)) => {
            if let Some(r) = reason {
                ended(None, r);
            }
            return Err(refusal);
        }
    };
    if let (Some(max), Some(s)) = (route.max_auth_age, identity.as_deref()) {
        if authn::auth_age(s, crate::clock::unix_now()) > max.as_secs() {
            ended(Some(s), Reason::ReauthenticationRequired);
            return Err(reauthenticate(snap, at, format(), max, &s.idp));
        }
    }
    let Access::Policy(policy) = &route.access else {
        return Ok(identity);
    };
    let who = identity.as_deref();
    let path = &at.target.path;
    let decision = with_input(
        session,
        ctx.client_ip,
        route,
        who,
        path,
        |input| match session.mcp {
            Some(request) => super::mcp::decide(
                gw, session, ctx, snap, route, at, who, policy, input, request,
            ),
            None => {
                let decision = policy.evaluate(input);
                log_decision(gw, session, ctx, snap, route, at, who, None, &decision);
                Ok(decision)
            }
        },
    )?;
    match decision {
        Decision::Allow => Ok(identity),
        Decision::NeedLogin if route.bearer == BearerFormat::Jwt => {
            let f = format();
            match snap.auth() {
                Some(_) if f == Format::Html => Err(need_login(snap, route, at, f)),
                _ => Err(Refusal::BearerRequired),
            }
        }
        Decision::NeedLogin => Err(need_login(snap, route, at, format())),
        Decision::Deny { reasons } => Err(refusal_for(snap, route, at, format(), reasons)),
    }
}

/// The policy input for this request and caller, without an MCP message, handed to `f` (the
/// verified email and the proven devices it borrows live here). The one builder, for the
/// decision and for filtering a `tools/list` answer.
pub(super) fn with_input<R>(
    asking: &Asking<'_>,
    client_ip: Option<std::net::IpAddr>,
    route: &Route,
    identity: Option<&UserSession>,
    path: &str,
    f: impl FnOnce(&Input<'_>) -> R,
) -> R {
    let email = authn::verified_email(identity, route.allow_unverified_email);
    let proven = identity
        .map(UserSession::proven_devices)
        .unwrap_or_default();
    let input = Input {
        subject: identity.map(|s| s.subject(email.as_deref())),
        method: asking.method.as_str(),
        path,
        client_ip,
        now: chrono::Utc::now(),
        cors_preflight: asking.method == http::Method::OPTIONS
            && asking.headers.contains_key(http::header::ORIGIN)
            && asking
                .headers
                .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD),
        client_cert: asking.client_cert,
        devices: &proven,
        mcp: None,
    };
    f(&input)
}

/// Who is asking (on a route that reads it): the caller a workload token proves on a `jwt` route,
/// else the session of a cookie or a Vallum token. A refusal comes with the reason to log when it
/// is a decision about the caller.
async fn who(
    gw: &Gateway,
    session: &Asking<'_>,
    snap: &Snapshot,
    route: &Route,
    at: &Addressed,
) -> Result<Option<Arc<UserSession>>, (Option<Reason>, Refusal)> {
    let workload_token = match route.bearer {
        BearerFormat::Jwt => authn::idp_bearer::idp_token(session.headers),
        _ => None,
    };
    match (snap.auth(), workload_token) {
        (auth, Some(token)) => {
            // Boxed: a key fetch's state would otherwise enlarge every request's future.
            Box::pin(authn::workload::identify(
                auth.as_ref(),
                &gw.auth,
                session.headers,
                route,
                token,
            ))
            .await
            .map(Some)
            .map_err(|refusal| {
                let reason = match refusal {
                    Refusal::AmbiguousCredentials => Reason::AmbiguousCredentials,
                    _ => Reason::InvalidBearerToken,
                };
                (Some(reason), refusal)
            })
        }
        (Some(auth), None) => {
            match authn::identify(&auth, &gw.auth, session.headers, route, &at.host_full).await {
                Ok(identity) => Ok(identity),
                Err(authn::SessionError::TokenRejected) => {
                    Err((Some(Reason::InvalidBearerToken), mcp_challenge(at, true)))
                }
                Err(authn::SessionError::Idle) => {
                    let format = Format::of(session.headers);
                    Err((
                        Some(Reason::SessionIdle),
                        need_login(snap, route, at, format),
                    ))
                }
                Err(e) => Err((None, e.into())),
            }
        }
        (None, None) => Ok(None),
    }
}

/// The decision on the `authorize` span: allow, deny (with the policy's reasons), sign_in, or
/// the refusal's status. Never who the user is or any credential.
pub fn trace_outcome(span: &tracing::Span, decided: &Result<Option<Arc<UserSession>>, Refusal>) {
    if span.is_disabled() {
        return;
    }
    match decided {
        Ok(_) => span.record("vallum.outcome", "allow"),
        Err(Refusal::Forbidden(reasons)) => {
            let list: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
            span.record("vallum.outcome", "deny");
            span.record("vallum.reasons", list.join(","))
        }
        Err(Refusal::SignInRequired { .. } | Refusal::ReauthenticationRequired { .. }) => {
            span.record("vallum.outcome", "sign_in")
        }
        Err(other) => span.record("vallum.outcome", other.status().as_u16()),
    };
}

/// The authorize log line and metric for one decision (of one JSON-RPC message, on an MCP
/// route).
#[allow(clippy::too_many_arguments)]
pub(super) fn log_decision(
    gw: &Gateway,
    session: &Asking<'_>,
    ctx: &RequestCtx,
    snap: &Snapshot,
    route: &Route,
    at: &Addressed,
    who: Option<&UserSession>,
    mcp: Option<&McpMessage>,
    decision: &Decision,
) {
    Authorize {
        fields: snap.settings.ops.authorize_log,
        request_id: &ctx.request_id,
        method: session.method,
        path: &at.target.path,
        host: &at.host_full,
        ip: ctx.client_ip,
        route_id: &route.id,
        who: who.map(|s| Who {
            session_id: &s.id,
            user_id: &s.user_id,
            email: s.email.as_deref(),
        }),
        mcp,
        decision,
    }
    .record(&gw.metrics, &route.metrics);
}

/// Whether anything on this route reads the user: the policy, identity headers, a
/// `set_request_headers` template, an MCP server (its tokens, the user's upstream token, the
/// per-user rate limits), or an MCP client app's token for its user.
fn wants_identity(route: &Route) -> bool {
    route.pass_identity_headers
        || route.mcp_client
        || route.mcp.is_some()
        || route
            .set_request_headers
            .iter()
            .any(|(_, t)| t.needs_identity())
        || matches!(&route.access, Access::Policy(p) if p.needs_identity())
}

/// Certificate problems are 495 (signing in cannot fix them); a missing device sends browsers to
/// the device page; anything else is 403 with the reasons.
fn refusal_for(
    snap: &Snapshot,
    route: &Route,
    at: &Addressed,
    format: Format,
    reasons: Vec<Reason>,
) -> Refusal {
    if let Some(first) = reasons.first() {
        if reasons.iter().all(|r| r.is_certificate_problem()) {
            return Refusal::ClientCertificate(*first);
        }
    }
    if !reasons.contains(&Reason::DeviceUnauthenticated) {
        return Refusal::Forbidden(reasons);
    }
    let auth = match snap.auth() {
        Some(a) if format == Format::Html => a,
        _ => return Refusal::DeviceRequired { location: None },
    };
    let original = match return_url(at) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let wanted = match &route.access {
        Access::Policy(p) => p.device_type_wanted(),
        Access::Public => None,
    };
    let url = authn::webauthn::device_url(&auth, &original, wanted.as_deref());
    Refusal::DeviceRequired {
        location: Some(url.to_string()),
    }
}

/// Anonymous on a route that needs a user: browsers are sent to sign in, API clients get 401.
fn need_login(snap: &Snapshot, route: &Route, at: &Addressed, format: Format) -> Refusal {
    let Some(auth) = snap.auth() else {
        return Refusal::SignInNotConfigured;
    };
    if route.mcp.is_some() && auth.mcp.enabled {
        return mcp_challenge(at, false);
    }
    if format != Format::Html {
        return Refusal::SignInRequired { location: None };
    }
    match return_url(at) {
        Ok(original) => Refusal::SignInRequired {
            location: Some(
                authn::sign_in_url(&auth, &original, &authn::route_idp_keys(route)).to_string(),
            ),
        },
        Err(r) => r,
    }
}

/// An MCP client without a (usable) access token learns where to get one (MCP authorization,
/// RFC 9728): never a sign-in redirect, which it could not follow.
pub(super) fn mcp_challenge(at: &Addressed, invalid: bool) -> Refusal {
    Refusal::McpUnauthorized {
        challenge: authn::mcp_oauth::challenge(at.scheme, &at.host_full, &at.target.path, invalid),
    }
}

/// Signed in too long ago for the route's `max_auth_age`: browsers sign in again, with the IdP
/// told to authenticate the user afresh; API clients get 401.
fn reauthenticate(
    snap: &Snapshot,
    at: &Addressed,
    format: Format,
    max: std::time::Duration,
    session_idp: &str,
) -> Refusal {
    let location = match (snap.auth(), format) {
        (Some(auth), Format::Html) => match return_url(at) {
            Ok(original) => {
                Some(authn::reauthenticate_url(&auth, &original, max, session_idp).to_string())
            }
            Err(r) => return r,
        },
        _ => None,
    };
    Refusal::ReauthenticationRequired { location }
}

/// The URL a detour (sign-in, the device page) comes back to: the request as the browser sent
/// it. Too long to carry through signed links → 414.
fn return_url(at: &Addressed) -> Result<String, Refusal> {
    let original = at.url();
    if original.len() > authn::MAX_REDIRECT_LEN {
        return Err(Refusal::UrlTooLong);
    }
    Ok(original)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{route, snapshot};

    fn user(email: &str, verified: Option<bool>) -> UserSession {
        let mut claims = serde_json::Map::new();
        if let Some(v) = verified {
            claims.insert("email_verified".into(), serde_json::Value::Bool(v));
        }
        UserSession {
            id: "sid".into(),
            user_id: "u1".into(),
            email: Some(email.into()),
            name: None,
            groups: Vec::new(),
            claims: claims.into(),
            id_token: String::new(),
            access_token: String::new(),
            refresh_token: None,
            access_expires_at: None,
            issued_at: 0,
            expires_at: u64::MAX,
            claims_refreshed_at: 0,
            idp: String::new(),
            devices: Vec::new(),
        }
    }

    #[test]
    fn only_verified_addresses_reach_email_rules() {
        let alice = user("Alice@Example.com", Some(true));
        assert_eq!(
            authn::verified_email(Some(&alice), false).as_deref(),
            Some("alice@example.com")
        );
        let claimed = user("ceo@example.com", None);
        assert_eq!(authn::verified_email(Some(&claimed), false), None);
        assert_eq!(
            authn::verified_email(Some(&claimed), true).as_deref(),
            Some("ceo@example.com"),
            "allow_unverified_email opts out"
        );
        let unverified = user("ceo@example.com", Some(false));
        assert_eq!(authn::verified_email(Some(&unverified), false), None);
        assert_eq!(authn::verified_email(None, true), None);
    }

    #[test]
    fn identity_is_read_only_where_something_needs_it() {
        let snap = snapshot(
            "- from: http://public.test\n  to: http://127.0.0.1:9\n  allow_public_unauthenticated_access: true\n\
             - from: http://office.test\n  to: http://127.0.0.1:9\n  policy: {allow: {and: [{source_ip: 10.0.0.0/8}]}}\n",
        );
        assert!(!wants_identity(&route(&snap, "public.test", "/")));
        assert!(!wants_identity(&route(&snap, "office.test", "/")));
    }
}
