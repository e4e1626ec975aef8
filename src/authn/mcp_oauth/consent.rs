//! The person's consent to an MCP client, asked once per user, client and MCP server (kept 30
//! days in the session store, fleet-wide). Without it, anyone could register a client and send
//! a signed-in person a link that hands that client a token for them without a word (single
//! sign-on would make it silent): the MCP spec's "confused deputy". The form is a POST to the
//! same URL with a CSRF token bound to the session, client and resource.

use super::clients::Client;
use super::{AuthState, Request};
use crate::respond::pages::escape;
use crate::respond::reply::Reply;
use crate::session::UserSession;
use crate::snapshot::auth::Auth;
use http::StatusCode;

const KEEP: u64 = 30 * 24 * 3600;

pub(super) enum Consent {
    Given,
    /// The page that asks (or, for a bad form, says it expired).
    Ask(Reply),
    Denied,
}

fn record_key(s: &UserSession, client_id: &str, resource: &str) -> String {
    super::grants::claim_key(
        "consent",
        &format!("{}|{}|{client_id}|{resource}", s.idp, s.user_id),
    )
}

fn csrf(auth: &Auth<'_>, s: &UserSession, client_id: &str, resource: &str) -> String {
    auth.keys
        .mcp_key
        .sign(format!("consent|{}|{client_id}|{resource}", s.id).as_bytes())
}

/// Whether the person allows `client` on `resource`: already, now (the form's POST), or the
/// page that asks.
pub(super) async fn check(
    auth: &Auth<'_>,
    state: &AuthState,
    req: &Request<'_>,
    s: &UserSession,
    (client_id, client): (&str, &Client),
    resource: &str,
    redirect: &str,
) -> Result<Consent, crate::session::StoreError> {
    let key = record_key(s, client_id, resource);
    if req.method == http::Method::POST {
        let token = csrf(auth, s, client_id, resource);
        if !req
            .field("csrf")
            .is_some_and(|c| crate::crypto::ct_eq(c, &token))
        {
            return Ok(Consent::Ask(super::problem_page(
                req,
                StatusCode::FORBIDDEN,
                "The form has expired (CSRF check failed); start the connection again.".into(),
            )));
        }
        if req.field("decision") != Some("allow") {
            tracing::info!(session_id = %s.id, "MCP client not allowed by the person");
            return Ok(Consent::Denied);
        }
        state.store.put_record(&key, b"1".to_vec(), KEEP).await?;
        tracing::info!(session_id = %s.id, client = client.name.as_deref().unwrap_or(""), "MCP client allowed by the person");
        return Ok(Consent::Given);
    }
    if state.store.get_record(&key).await?.is_some() {
        return Ok(Consent::Given);
    }
    Ok(Consent::Ask(page(
        auth,
        req,
        s,
        (client_id, client),
        resource,
        redirect,
    )))
}

fn page(
    auth: &Auth<'_>,
    req: &Request<'_>,
    s: &UserSession,
    (client_id, client): (&str, &Client),
    resource: &str,
    redirect: &str,
) -> Reply {
    let name = client.name.as_deref().unwrap_or("An MCP client");
    let to = url::Url::parse(redirect)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let who = s.email.as_deref().unwrap_or(&s.user_id);
    let body = format!(
        "<p><strong>{name}</strong> wants to use <strong>{resource}</strong> as <strong>{who}</strong>.</p>\
         <p>It will be able to call the tools this server lets you call, until you sign out. \
         It will be sent back to <code>{to}</code>. Only allow clients you started yourself.</p>\
         <form method=\"post\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button> \
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        name = escape(name),
        resource = escape(resource),
        who = escape(who),
        to = escape(&to),
        csrf = escape(&csrf(auth, s, client_id, resource)),
    );
    // Never inside another site's frame, whatever `set_response_headers` says: a framed Allow
    // button could be clicked for the person (clickjacking).
    req.answer
        .page(StatusCode::OK, "Allow this agent?", &body)
        .with_header(
            http::header::CONTENT_SECURITY_POLICY,
            http::HeaderValue::from_static("frame-ancestors 'none'"),
        )
        .with_header(
            http::header::X_FRAME_OPTIONS,
            http::HeaderValue::from_static("DENY"),
        )
}
