//! `GET /.pomerium/mcp/authorize`: the person behind an MCP client approves it by signing in.
//! Problems with the client or its redirect URI are shown on a page (never sent to a URI that
//! could not be checked); every other problem goes back to the client as an OAuth error.

use super::consent::{self, Consent};
use super::grants::{self, Code};
use super::{clients, origin, resource_route, upstream, AuthState, Request};
use crate::authn::{host_session, host_sign_in_url, programmatic::token_host};
use crate::clock::unix_now;
use crate::crypto::random_token;
use crate::respond::reply::Reply;
use crate::snapshot::auth::Auth;
use http::StatusCode;
use std::sync::Arc;

fn page_error(req: &Request<'_>, detail: &str) -> Reply {
    super::problem_page(req, StatusCode::BAD_REQUEST, detail.to_string())
}

/// Back to the client's (registered) redirect URI with `params`, and `state` and `iss`.
fn back(req: &Request<'_>, redirect: &str, params: &[(&str, &str)]) -> Reply {
    let Ok(mut to) = url::Url::parse(redirect) else {
        return page_error(req, "the redirect URI is not a URL");
    };
    {
        let mut q = to.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = req.param("state") {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &origin(req));
    }
    Reply::found(to.as_str())
}

/// The resource of the host's first MCP route: what a client that names none asks for.
fn default_resource(req: &Request<'_>) -> Option<String> {
    let host = req.host.split(':').next().unwrap_or(req.host);
    let route = req.routes.for_host(host).find(|r| r.mcp.is_some())?;
    Some(format!("{}{}", origin(req), super::mcp_path(route)))
}

/// This request's URL, to come back to after sign-in.
fn current_url(req: &Request<'_>) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(req.query.iter())
        .finish();
    format!("{}{}?{q}", origin(req), req.path)
}

/// An authorization request, checked.
struct Checked {
    redirect: String,
    challenge: String,
    resource: String,
}

/// The request's parameters, or the answer: problems with the client or its redirect URI on a
/// page, every other problem as an OAuth error at the redirect URI.
fn checked(req: &Request<'_>, client: &clients::Client) -> Result<Checked, Box<Reply>> {
    let page = |detail: &str| Box::new(page_error(req, detail));
    let redirect = match (req.param("redirect_uri"), client.redirect_uris.as_slice()) {
        (Some(r), uris) if uris.iter().any(|u| u == r) => r.to_string(),
        (Some(_), _) => return Err(page("redirect_uri is not one the client registered")),
        (None, [only]) => only.clone(),
        (None, _) => return Err(page("redirect_uri is required")),
    };
    let fail = |error: &str, description: &str| {
        tracing::info!(error, reason = description, "MCP authorization refused");
        let params = [("error", error), ("error_description", description)];
        Box::new(back(req, &redirect, &params))
    };
    if req.param("response_type") != Some("code") {
        return Err(fail(
            "unsupported_response_type",
            "response_type must be code",
        ));
    }
    let challenge = req.param("code_challenge").unwrap_or_default();
    let well_formed = challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if req.param("code_challenge_method") != Some("S256") || !well_formed {
        let why = "PKCE is required: code_challenge with code_challenge_method S256";
        return Err(fail("invalid_request", why));
    }
    let resource = match req.param("resource") {
        Some(r) if resource_route(req, r).is_some() => r.to_string(),
        Some(_) => {
            return Err(fail(
                "invalid_target",
                "resource is not an MCP server on this host",
            ))
        }
        None => match default_resource(req) {
            Some(r) => r,
            None => return Err(fail("invalid_target", "no MCP server on this host")),
        },
    };
    Ok(Checked {
        challenge: challenge.to_string(),
        redirect,
        resource,
    })
}

pub(super) async fn authorize(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let Some(client_id) = req.param("client_id") else {
        return page_error(req, "client_id is required");
    };
    let client = match super::find_client(auth, client_id).await {
        Ok(c) => c,
        Err(why) => return page_error(req, &why),
    };
    let Checked {
        redirect,
        challenge,
        resource,
    } = match checked(req, &client) {
        Ok(c) => c,
        Err(reply) => return *reply,
    };
    let session = match host_session(auth, state, req).await {
        Ok(Some(s)) => s,
        Ok(None) => return Reply::found(host_sign_in_url(auth, req, &current_url(req)).as_str()),
        Err(e) => return req.answer.refuse(e.into()),
    };
    // The person allows this client first; then the MCP server's own OAuth, when it needs a
    // token from this user.
    let asked = consent::check(
        auth,
        state,
        req,
        &session,
        (client_id, &client),
        &resource,
        &redirect,
    );
    match asked.await {
        Ok(Consent::Given) => {}
        Ok(Consent::Ask(page)) => return page,
        Ok(Consent::Denied) => {
            let why = [
                ("error", "access_denied"),
                ("error_description", "the person did not allow this client"),
            ];
            return back(req, &redirect, &why);
        }
        Err(e) => {
            tracing::error!(error = %e, "MCP authorization: the session store did not answer");
            return req
                .answer
                .refuse(crate::respond::refusal::Refusal::StoreUnavailable);
        }
    }
    if let Some(route) = resource_route(req, &resource) {
        match upstream::consent(auth, state, req, route, &session, current_url(req)).await {
            Ok(Some(detour)) => return detour,
            Ok(None) => {}
            Err(e) => return upstream::problem(req, &e),
        }
    }
    let code = Code {
        sid: session.id.clone(),
        client: client_id.to_string(),
        redirect_uri: redirect.clone(),
        challenge,
        resource,
        scope: req.param("scope").map(str::to_string),
        exp: unix_now() + grants::CODE_TTL,
        n: random_token(12),
    };
    tracing::info!(
        session_id = %session.id,
        client = client.name.as_deref().unwrap_or(""),
        "MCP client authorized"
    );
    let sealed = grants::seal_code(&auth.keys.mcp_key, &token_host(req.host), &code);
    back(req, &redirect, &[("code", &sealed)])
}
