//! Step 8: what an admitted request becomes: the route's direct response, a redirect, a backend
//! picked from its pool, or a TCP tunnel.

use super::forward::{self, RequestUrl};
use super::target::Addressed;
use super::RequestCtx;
use crate::respond::refusal::Refusal;
use crate::respond::reply::Reply;
use crate::routes::route::{Action, PathMatch, Route};
use crate::upstream::dns::Unresolved;
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

pub async fn take(
    route: &Route,
    at: &Addressed,
    scheme: &'static str,
    ctx: &mut RequestCtx,
) -> Result<Step, Refusal> {
    match &route.action {
        Action::Respond { status, body } => Ok(Step::Reply(Reply::text(*status, body.clone()))),
        Action::Tunnel(names) => match names.current().await {
            Ok(answer) => Ok(Step::Tunnel(answer.all())),
            Err(why) => Err(unresolved(route, ctx, &why)),
        },
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
            pool.prepare()
                .await
                .map_err(|why| unresolved(route, ctx, &why))?;
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

/// No name of the route resolves: said in the log with the resolver's reason (the client only
/// learns that the name does not resolve).
fn unresolved(route: &Route, ctx: &RequestCtx, why: &Unresolved) -> Refusal {
    tracing::warn!(request_id = %ctx.request_id, route_id = %route.id, error = %why.0, "request refused: upstream host name does not resolve");
    Refusal::UpstreamUnresolved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{at, route, snapshot};

    #[tokio::test]
    async fn each_action_becomes_its_step() {
        let snap = snapshot(
            "- from: http://ok.test\n  response: {status: 204, body: done}\n  allow_public_unauthenticated_access: true\n\
             - from: http://old.test\n  prefix: /docs\n  redirect: {host_redirect: new.test, https_redirect: true}\n  allow_public_unauthenticated_access: true\n\
             - from: http://app.test\n  to: http://127.0.0.1:9\n  allow_public_unauthenticated_access: true\n",
        );
        let mut ctx = RequestCtx::default();
        match take(
            &route(&snap, "ok.test", "/"),
            &at("ok.test", "/", None),
            "http",
            &mut ctx,
        )
        .await
        {
            Ok(Step::Reply(r)) => assert_eq!((r.status.as_u16(), &r.body[..]), (204, &b"done"[..])),
            _ => panic!("a direct response"),
        }
        let r = route(&snap, "old.test", "/docs/a");
        match take(
            &r,
            &at("old.test", "/docs/a", Some("x=1")),
            "http",
            &mut ctx,
        )
        .await
        {
            Ok(Step::Reply(r)) => {
                let loc = r.location.unwrap();
                assert!(
                    loc.to_str().unwrap().starts_with("https://new.test"),
                    "{loc:?}"
                );
            }
            _ => panic!("a redirect"),
        }
        assert!(ctx.picked.is_none());
        let r = route(&snap, "app.test", "/");
        assert!(matches!(
            take(&r, &at("app.test", "/", None), "http", &mut ctx).await,
            Ok(Step::Forward)
        ));
        assert!(ctx.picked.is_some(), "a backend was picked");
    }
}
