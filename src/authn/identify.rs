//! Who a request is, in one order: its session cookie, else (on an MCP server route) an MCP
//! access token, else a Vallum bearer token (programmatic login), else, where the route's
//! `bearer_token_format` admits one, a token the IdP issued.

use super::{
    idp_bearer, mcp_oauth, programmatic, route_idp_keys, session_of, AuthState, SessionError,
};
use crate::routes::route::Route;
use crate::session::UserSession;
use crate::snapshot::auth::Auth;
use std::sync::Arc;

/// `Ok(None)`: anonymous. An error means the session store could not answer (a 503, never a
/// sign-in loop) or the cookies name two sessions.
pub async fn identify(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    headers: &http::HeaderMap,
    route: &Route,
    host: &str,
) -> Result<Option<Arc<UserSession>>, SessionError> {
    let cookies = crate::session::cookie::header(headers);
    let keys = route_idp_keys(route);
    let from_cookie = session_of(auth, state, cookies.as_deref(), &keys, host).await?;
    if from_cookie.is_some() {
        return unless_idle(state, from_cookie, route).await;
    }
    if route.mcp.is_some() && auth.mcp.enabled {
        if let Some(token) = mcp_oauth::access_token(headers) {
            let s = mcp_oauth::session_for_access_token(auth, state, token, host, route).await?;
            return unless_idle(state, Some(s), route).await;
        }
    }
    if let Some(token) = programmatic::bearer_token(headers) {
        let session = programmatic::session_for_token(auth, state, token, host)
            .await?
            .filter(|s| keys.contains(&s.idp.as_str()));
        return unless_idle(state, session, route).await;
    }
    Ok(match idp_bearer::idp_token(headers) {
        Some(t) => {
            let key = keys.first().copied().unwrap_or_default();
            idp_bearer::session_for_idp_token(state, t, route, key).await
        }
        None => None,
    })
}

/// The session, unless the route's idle timeout ended it just now (`SessionError::Idle`).
async fn unless_idle(
    state: &Arc<AuthState>,
    session: Option<Arc<UserSession>>,
    route: &Route,
) -> Result<Option<Arc<UserSession>>, SessionError> {
    match (&session, route.session_idle) {
        (Some(s), Some(idle))
            if !super::idle::alive(state, s, idle, crate::clock::unix_now()).await =>
        {
            Err(SessionError::Idle)
        }
        _ => Ok(session),
    }
}
