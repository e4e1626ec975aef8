//! For MCP client apps (`mcp.client` routes), with Pomerium's endpoints: the gateway's MCP
//! servers and whether each holds the user's upstream grant (`GET /.pomerium/mcp/routes`),
//! getting that grant in the browser and coming back (`GET /.pomerium/mcp/connect`), and
//! dropping it (`POST /.pomerium/mcp/routes/disconnect`). The user is the session of the
//! browser's cookie, or of the app's delegated token.

use super::{token, upstream, AuthState, Request};
use crate::authn::{host_session, host_sign_in_url};
use crate::respond::refusal::Refusal;
use crate::respond::reply::Reply;
use crate::routes::route::Route;
use crate::session::UserSession;
use crate::snapshot::auth::Auth;
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;

pub const ROUTES_PATH: &str = "/.pomerium/mcp/routes";
pub const CONNECT_PATH: &str = "/.pomerium/mcp/connect";
pub const DISCONNECT_PATH: &str = "/.pomerium/mcp/routes/disconnect";

/// The route's MCP endpoint as a client reaches it: its `from`, with the port this request came
/// on when `from` names none (one listener serves every host), and the MCP path.
fn server_url(r: &Route, req: &Request<'_>) -> String {
    let from = r.listing.from.trim_end_matches('/');
    let port = req.host.rsplit_once(':').map(|(_, p)| p);
    let explicit_port = from
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()));
    let base = match (port, explicit_port) {
        (Some(p), false) => format!("{from}:{p}"),
        _ => from.to_string(),
    };
    format!("{base}{}", super::mcp_path(r))
}

async fn user(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Result<Option<Arc<UserSession>>, Refusal> {
    if let Some(s) = host_session(auth, state, req)
        .await
        .map_err(Refusal::from)?
    {
        return Ok(Some(s));
    }
    token::session_of_bearer(auth, state, req)
        .await
        .map_err(|_| Refusal::StoreUnavailable)
}

async fn listing(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
    s: &UserSession,
) -> Reply {
    let mut servers = Vec::new();
    for r in req.routes.iter().filter(|r| r.mcp.is_some()) {
        let connected = match upstream::applies(auth, r) {
            false => true,
            true => match upstream::granted(auth, state, r, s).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "MCP server listing: upstream grants unknown");
                    return req.answer.refuse(Refusal::StoreUnavailable);
                }
            },
        };
        let mut item = json!({
            "url": server_url(r, req),
            "connected": connected,
            "needs_oauth": upstream::applies(auth, r),
        });
        for (k, v) in [
            ("name", &r.listing.name),
            ("description", &r.listing.description),
            ("logo_url", &r.listing.logo_url),
        ] {
            if let Some(v) = v {
                item[k] = json!(v);
            }
        }
        servers.push(item);
    }
    super::no_store(Reply::json(StatusCode::OK, &json!({ "servers": servers })))
}

/// `GET /.pomerium/mcp/routes`.
pub(super) async fn routes(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    match user(auth, state, req).await {
        Ok(Some(s)) => listing(auth, state, req, &s).await,
        Ok(None) => req
            .answer
            .refuse(Refusal::SignInRequired { location: None }),
        Err(r) => req.answer.refuse(r),
    }
}

/// Where `connect` may send the browser back: this host, or the host of an `mcp.client` route,
/// under the scheme of this request.
fn connect_target(req: &Request<'_>, target: &str) -> Option<url::Url> {
    let u = url::Url::parse(target).ok()?;
    if u.scheme() != req.scheme || !u.username().is_empty() || u.password().is_some() {
        return None;
    }
    let host = u.host_str()?.to_ascii_lowercase();
    let here = req.host.split(':').next().unwrap_or(req.host);
    let client_host = req.routes.for_host(&host).any(|r| r.mcp_client);
    (host == here || client_host).then_some(u)
}

/// `GET /.pomerium/mcp/connect?redirect_url=…` on an MCP server's host.
pub(super) async fn connect(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let Some(back) = req
        .param("redirect_url")
        .and_then(|t| connect_target(req, t))
    else {
        return req.answer.refuse(Refusal::BadRedirect);
    };
    let session = match host_session(auth, state, req).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            let here = format!(
                "{}://{}{}?{}",
                req.scheme,
                req.host,
                CONNECT_PATH,
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(req.query.iter())
                    .finish()
            );
            return Reply::found(host_sign_in_url(auth, req, &here).as_str());
        }
        Err(e) => return req.answer.refuse(e.into()),
    };
    let host = req.host.split(':').next().unwrap_or(req.host);
    if let Some(route) = req
        .routes
        .for_host(host)
        .find(|r| upstream::applies(auth, r))
    {
        match upstream::consent(auth, state, req, route, &session, back.to_string()).await {
            Ok(Some(detour)) => return detour,
            Ok(None) => {}
            Err(e) => return upstream::problem(req, &e),
        }
    }
    Reply::found(back.as_str())
}

/// `POST /.pomerium/mcp/routes/disconnect` with `{"routes": [<server URL>, …]}`.
pub(super) async fn disconnect(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Reply {
    let s = match user(auth, state, req).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return req
                .answer
                .refuse(Refusal::SignInRequired { location: None })
        }
        Err(r) => return req.answer.refuse(r),
    };
    #[derive(serde::Deserialize)]
    struct Body {
        routes: Vec<String>,
    }
    let Ok(body) = serde_json::from_slice::<Body>(req.body) else {
        return super::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected {\"routes\": [<server URL>, …]}",
        );
    };
    for target in &body.routes {
        let Some(host) = url::Url::parse(target)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        else {
            continue;
        };
        for route in req
            .routes
            .for_host(&host)
            .filter(|r| upstream::applies(auth, r))
        {
            if let Err(e) = upstream::forget(state, route, &s).await {
                tracing::error!(error = %e, "MCP disconnect: upstream grant not dropped");
                return req.answer.refuse(Refusal::StoreUnavailable);
            }
            tracing::info!(route_id = %route.id, session_id = %s.id, "MCP upstream grant dropped");
        }
    }
    listing(auth, state, req, &s).await
}
