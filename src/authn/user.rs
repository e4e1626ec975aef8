//! What a signed-in user and an upstream can ask about identity: `/.pomerium/`, `/.pomerium/user`,
//! `/.pomerium/jwt`, and the `/.well-known/pomerium` documents.

use super::signout::csrf_token;
use super::*;

/// The session for this route host, or the 401 an endpoint that needs one answers with.
async fn route_session(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Result<Arc<UserSession>, Box<Reply>> {
    let found = match host_session(auth, state, req).await {
        Ok(None) => match req.bearer {
            Some(t) => super::programmatic::session_for_token(auth, state, t, req.host)
                .await
                .map_err(SessionError::from),
            None => Ok(None),
        },
        other => other,
    };
    match found {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(Box::new(
            req.answer
                .refuse(Refusal::SignInRequired { location: None }),
        )),
        Err(e) => Err(Box::new(req.answer.refuse(e.into()))),
    }
}

/// `/.pomerium/user`: the signed-in user's claims as JSON (never tokens).
pub(super) async fn user_json(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let s = match route_session(auth, state, req).await {
        Ok(s) => s,
        Err(unauthenticated) => return *unauthenticated,
    };
    let mut claims = s.claims.to_map();
    for k in crate::identity::PROTOCOL_CLAIMS {
        claims.remove(*k);
    }
    claims.insert("sub".into(), serde_json::json!(s.user_id));
    claims.insert("user".into(), serde_json::json!(s.user_id));
    claims.insert("email".into(), serde_json::json!(s.email));
    claims.insert("name".into(), serde_json::json!(s.name));
    claims.insert("groups".into(), serde_json::json!(s.groups));
    claims.insert("sid".into(), serde_json::json!(s.id));
    Reply::json(StatusCode::OK, &serde_json::Value::Object(claims))
}

/// `/.pomerium/`: who you are signed in as. Never shows tokens (Pomerium's CVE-2024-39315).
pub(super) async fn user_page(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let s = match host_session(auth, state, req).await {
        Ok(s) => s,
        Err(e) => return req.answer.refuse(e.into()),
    };
    let Some(s) = s else {
        if req.answer.wants_json() {
            return req
                .answer
                .refuse(Refusal::SignInRequired { location: None });
        }
        let original = format!("{}://{}/.pomerium/", req.scheme, req.host);
        return Reply::found(host_sign_in_url(auth, req, &original).as_str());
    };
    let e = pages::escape;
    let mut claims: Vec<(&str, &serde_json::Value)> = s
        .claims
        .iter()
        .filter(|(k, _)| !crate::identity::PROTOCOL_CLAIMS.contains(k))
        .collect();
    claims.sort_by(|a, b| a.0.cmp(b.0));
    let rows: String = claims
        .iter()
        .map(|(k, v)| format!("<tr><th>{}</th><td>{}</td></tr>", e(k), e(&v.to_string())))
        .collect();
    let expires = chrono::DateTime::from_timestamp(s.expires_at as i64, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let csrf = csrf_token(auth, Some(&s));
    let devices = match super::webauthn::load_devices(state.store.as_ref(), &s.user_id).await {
        Ok(d) => d,
        Err(_) => return req.answer.refuse(Refusal::StoreUnavailable),
    };
    let devices = super::device_page::user_page_section(&devices, &csrf);
    let body = format!(
        "<table><tr><th>User</th><td>{}</td></tr><tr><th>Email</th><td>{}</td></tr><tr><th>Name</th><td>{}</td></tr>\
         <tr><th>Groups</th><td>{}</td></tr><tr><th>UserSession expires</th><td>{}</td></tr></table>\
         <h2>Claims</h2><table>{rows}</table>{devices}\
         <form method=\"post\" action=\"/.pomerium/sign_out\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\">Sign out</button></form>",
        e(&s.user_id),
        e(s.email.as_deref().unwrap_or("")),
        e(s.name.as_deref().unwrap_or("")),
        e(&s.groups.join(", ")),
        e(&expires),
        e(&csrf),
    );
    Reply::html(StatusCode::OK, req.answer.page_html("Signed in", &body))
}

/// `/.pomerium/jwt` (when `runtime_flags.pomerium_jwt_endpoint`): the assertion for this host, for
/// browser apps that want to read it.
pub(super) async fn jwt_endpoint(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Reply {
    let s = match route_session(auth, state, req).await {
        Ok(s) => s,
        Err(unauthenticated) => return *unauthenticated,
    };
    let host = req.host.split(':').next().unwrap_or(req.host);
    let jwt = crate::headers::assertion(&auth.keys.signer, auth, &s, host, auth.issuer_uri, None);
    let mut r = Reply::text(
        StatusCode::OK,
        bytes::Bytes::copy_from_slice(jwt.as_bytes()),
    );
    r.content_type = "application/jwt";
    r
}

fn cors_cacheable(r: Reply, etag: Option<String>) -> Reply {
    use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, ETAG};
    let mut r = r
        .with_header(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            http::HeaderValue::from_static("*"),
        )
        .with_header(CACHE_CONTROL, http::HeaderValue::from_static("max-age=60"));
    if let Some(t) = etag.and_then(|t| http::HeaderValue::from_str(&t).ok()) {
        r = r.with_header(ETAG, t);
    }
    r
}

/// `/.well-known/pomerium/jwks.json`: the key upstreams verify the assertion with.
pub(super) fn jwks(auth: &Auth<'_>) -> Reply {
    let body = auth.keys.signer.jwks();
    let etag = format!("\"{}\"", auth.keys.signer.kid());
    cors_cacheable(Reply::json(StatusCode::OK, &body), Some(etag))
}

/// `/.well-known/pomerium`: where this host's keys and endpoints are.
pub(super) fn well_known(auth: &Auth<'_>, req: &Request<'_>) -> Reply {
    let base = format!("{}://{}", req.scheme, req.host);
    let mut callback = auth.authenticate_url.clone();
    callback.set_path("/oauth2/callback");
    let mut backchannel = auth.authenticate_url.clone();
    backchannel.set_path(super::logout::BACKCHANNEL_PATH);
    let body = serde_json::json!({
        "issuer": format!("{base}/"),
        "authentication_callback_endpoint": callback.as_str(),
        "jwks_uri": format!("{base}/.well-known/pomerium/jwks.json"),
        "frontchannel_logout_uri": format!("{base}/.pomerium/sign_out"),
        "backchannel_logout_uri": backchannel.as_str(),
    });
    cors_cacheable(Reply::json(StatusCode::OK, &body), None)
}
