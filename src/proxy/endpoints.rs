//! Step 3: what Vallum answers itself before any route: the probes on every host, the
//! authenticate host, `/.pomerium/` and `/.well-known/pomerium` on route hosts, and the MCP
//! authorization server's endpoints on MCP route hosts.

use super::target::Addressed;
use super::{Gateway, RequestCtx};
use crate::authn;
use crate::config::auth::Services;
use crate::respond::refusal::{Answer, Format, Refusal};
use crate::respond::reply::Reply;
use crate::routes::path::Target;
use crate::snapshot::Snapshot;
use http::StatusCode;
use pingora_core::ErrorType;
use pingora_proxy::Session;

/// Largest form body the sign-in endpoints read.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// `/ping` and `/healthz`: "OK" on every host, for load balancers that probe the route hosts.
pub fn probe(method: &http::Method, target: &Target) -> Option<Reply> {
    let is_probe = target.path == "/ping" || target.path == "/healthz";
    (is_probe && (method == http::Method::GET || method == http::Method::HEAD))
        .then(|| Reply::text(StatusCode::OK, bytes::Bytes::from_static(b"OK")))
}

/// The sign-in endpoints; `Ok(None)` when the request is for a route.
pub async fn serve(
    gw: &Gateway,
    session: &mut Session,
    ctx: &RequestCtx,
    snap: &Snapshot,
    at: &Addressed,
) -> Result<Option<Reply>, Refusal> {
    let Some(auth) = snap.auth() else {
        return Ok(None);
    };
    let path = at.target.path.as_str();
    let on_auth_host = auth.services != Services::Proxy && at.host_full == auth.authenticate_host;
    let starts_idp_work =
        on_auth_host && (path == "/.pomerium/sign_in" || path == "/oauth2/callback");
    let limit = snap.settings.ops.signin_rate_limit;
    if starts_idp_work && limit > 0 {
        let key = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        if gw.sign_in_rate.observe(&key, 1) > limit as isize {
            tracing::info!(request_id = %ctx.request_id, "sign-in refused: rate limit");
            return Err(Refusal::SignInRateLimited);
        }
    }
    let own_path = path.starts_with("/.pomerium/") || path.starts_with("/.well-known/pomerium");
    // Vallum's endpoints answer only on the authenticate host and on hosts a route serves: any
    // other `Host` would have Vallum sign links and accept hand-offs for a host it does not own.
    // The JWKS (public keys, the same on every host) is the exception: apps fetch it from
    // wherever they reach Vallum.
    let public_keys = path == "/.well-known/pomerium/jwks.json";
    let mcp_oauth = authn::mcp_oauth::is_endpoint(&auth, &snap.routes, &at.host_full, path);
    let own_path = own_path || mcp_oauth;
    if own_path && !on_auth_host && !public_keys && !snap.routes.serves_host(&at.host) {
        return Err(Refusal::NoRoute);
    }
    if on_auth_host || own_path {
        // Boxed: the sign-in flow's state (a body being read, a token exchange with the IdP) is
        // kilobytes, and left inline it would enlarge, and be copied with, every request's
        // future (measured: 3.3 of route_request's 3.7 KB).
        let to = Endpoint {
            auth: &auth,
            path,
            on_auth_host,
            mcp_oauth,
        };
        if let Some(reply) = Box::pin(answer(gw, session, ctx, snap, at, to)).await? {
            return Ok(Some(reply));
        }
    }
    if auth.services == Services::Authenticate && !on_auth_host {
        return Err(Refusal::AuthenticateOnly);
    }
    Ok(None)
}

/// Which of Vallum's endpoints a request is for, as [`serve`] found it.
struct Endpoint<'a> {
    auth: &'a crate::snapshot::auth::Auth<'a>,
    path: &'a str,
    on_auth_host: bool,
    mcp_oauth: bool,
}

/// The answer of the authenticate host, an MCP OAuth endpoint or a route host's
/// `/.pomerium/` endpoint, once the request (and its body) is read.
async fn answer(
    gw: &Gateway,
    session: &mut Session,
    ctx: &RequestCtx,
    snap: &Snapshot,
    at: &Addressed,
    to: Endpoint<'_>,
) -> Result<Option<Reply>, Refusal> {
    let answer = Answer {
        format: Format::of(&session.req_header().headers),
        request_id: &ctx.request_id,
        branding: Some(&snap.settings.branding),
    };
    let input = read(session, &at.target, gw.scheme()).await?;
    let req = input.as_request(&at.host_full, to.path, answer, &snap.routes, ctx.client_ip);
    if to.on_auth_host {
        return Ok(Some(
            authn::authenticate_host(to.auth, &gw.auth, &req).await,
        ));
    }
    if to.mcp_oauth {
        return Ok(Some(authn::mcp_oauth::serve(to.auth, &gw.auth, &req).await));
    }
    Ok(authn::route_endpoint(to.auth, &gw.auth, &req).await)
}

/// What the sign-in endpoints need from a request, owned so the body can be read first.
struct AuthnInput {
    method: http::Method,
    query: Vec<(String, String)>,
    cookies: Option<String>,
    bearer: Option<String>,
    form: Vec<(String, String)>,
    body: Vec<u8>,
    authorization: Option<String>,
    scheme: &'static str,
}

impl AuthnInput {
    fn as_request<'a>(
        &'a self,
        host: &'a str,
        path: &'a str,
        answer: Answer<'a>,
        routes: &'a crate::routes::RouteTable,
        client_ip: Option<std::net::IpAddr>,
    ) -> authn::Request<'a> {
        authn::Request {
            method: &self.method,
            scheme: self.scheme,
            host,
            path,
            query: self.query.clone(),
            cookies: self.cookies.as_deref(),
            bearer: self.bearer.as_deref(),
            answer,
            routes,
            form: self.form.clone(),
            body: &self.body,
            authorization: self.authorization.as_deref(),
            client_ip,
        }
    }
}

/// The query, the cookies, a bearer token and (for a POST) the form body, at most
/// `MAX_FORM_BYTES` of it.
async fn read(
    session: &mut Session,
    target: &Target,
    scheme: &'static str,
) -> Result<AuthnInput, Refusal> {
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
    let mut body = Vec::new();
    if method == http::Method::POST {
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_FORM_BYTES {
                        return Err(Refusal::FormTooLarge);
                    }
                }
                Ok(None) => break,
                Err(e) if matches!(e.etype(), ErrorType::ReadTimedout) => {
                    tracing::info!("request refused: the body did not arrive within timeout_read");
                    return Err(Refusal::BodyTimeout);
                }
                Err(_) => return Err(Refusal::BodyUnreadable),
            }
        }
        form = url::form_urlencoded::parse(&body).into_owned().collect();
    }
    let headers = &session.req_header().headers;
    Ok(AuthnInput {
        method,
        query,
        cookies: crate::session::cookie::header(headers).map(std::borrow::Cow::into_owned),
        bearer: authn::programmatic::bearer_token(headers).map(str::to_string),
        authorization: headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        form,
        body,
        scheme,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_answer_get_and_head_only() {
        let t = |p: &str| Target {
            path: p.into(),
            query: None,
        };
        for path in ["/ping", "/healthz"] {
            for m in [http::Method::GET, http::Method::HEAD] {
                let r = probe(&m, &t(path)).unwrap();
                assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"OK"[..]));
            }
            assert!(probe(&http::Method::POST, &t(path)).is_none());
        }
        assert!(probe(&http::Method::GET, &t("/pingx")).is_none());
    }
}
