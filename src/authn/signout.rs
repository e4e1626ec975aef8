//! Sign-out: confirmation with a CSRF token, deleting the session in the store (every copy of the
//! cookie dies with it), clearing cookies, and RP-initiated logout at the IdP.

use super::*;

pub(super) fn csrf_token(auth: &Auth<'_>, session: Option<&UserSession>) -> String {
    auth.cookie_secret.derive("vallum csrf").sign(
        session
            .map(|s| s.id.as_str())
            .unwrap_or("anonymous")
            .as_bytes(),
    )
}

/// Sign-out is a state change, so it takes a POST with the CSRF token bound to the session;
/// a GET shows the confirmation form. `None`: go ahead; else the page to answer with.
fn confirm_sign_out(
    auth: &Auth<'_>,
    session: Option<&UserSession>,
    req: &Request<'_>,
) -> Option<Reply> {
    let csrf = csrf_token(auth, session);
    if req.method != http::Method::POST {
        return Some(Reply::html(
            StatusCode::OK,
            pages::sign_out_confirm(req.answer.branding, &csrf),
        ));
    }
    if !req.field("csrf").is_some_and(|c| ct_eq(c, &csrf)) {
        return Some(req.answer.refuse(Refusal::sign_in(
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            "The form has expired (CSRF check failed); reload and try again.",
        )));
    }
    None
}

#[derive(Serialize, Deserialize)]
struct Logout {
    id_token: String,
    exp: u64,
    /// The session this sign-out ends: the link signs out that session and no other.
    #[serde(default)]
    sid: String,
    /// Its provider's key: the provider whose end-session endpoint comes next.
    #[serde(default)]
    p: String,
}

fn logout_key(a: &Auth<'_>) -> crate::crypto::Key {
    a.shared_secret.derive("vallum logout")
}

fn signed_out_url(auth: &Auth<'_>) -> String {
    match &auth.signout_redirect_url {
        Some(u) => u.to_string(),
        None => {
            let mut u = auth.authenticate_url.clone();
            u.set_path("/.pomerium/signed_out");
            u.to_string()
        }
    }
}

/// Sign-out on an app host: GET confirms, POST with the CSRF token ends the session everywhere
/// (the store record is deleted, so every copy of every cookie stops working) and continues to
/// the authenticate host and the IdP.
pub(super) async fn route_sign_out(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Reply {
    if let Some(reply) = super::logout::frontchannel(state, req).await {
        return reply;
    }
    // Every session this host's cookies hold (one per provider its routes use) ends.
    let mut sessions = Vec::new();
    let mut names = Vec::new();
    for key in host_idps(req) {
        let name = session_cookie(auth, &key).into_owned();
        match session_for(auth, state, req.cookies, &name, req.host).await {
            Ok(Some(s)) => sessions.push(s),
            Ok(None) => {}
            Err(e) => return req.answer.refuse(e.into()),
        }
        names.push(name);
    }
    if let Some(reply) = confirm_sign_out(auth, sessions.first().map(|s| &**s), req) {
        return reply;
    }
    let mut extra = Vec::new();
    for s in &sessions {
        if let Err(e) = end(state, req, s).await {
            return e;
        }
    }
    if let Some(s) = sessions.first() {
        let l = Logout {
            id_token: s.id_token.clone(),
            exp: unix_now() + signed::VALIDITY_SECS,
            sid: s.id.clone(),
            p: s.idp.clone(),
        };
        extra.push(logout_key(auth).seal(
            &serde_json::to_vec(&l).unwrap_or_default(),
            format!("logout|{}", auth.authenticate_host).as_bytes(),
        ));
    }
    let extra_pairs: Vec<(&str, &str)> = extra
        .iter()
        .map(|v| ("pomerium_logout", v.as_str()))
        .collect();
    let url = signed::sign(
        &auth.shared_secret,
        &auth.authenticate_url,
        "/.pomerium/sign_out",
        &signed_out_url(auth),
        &extra_pairs,
        unix_now(),
    );
    names.iter().fold(Reply::found(url.as_str()), |r, name| {
        r.with_cookie(cookie::set_cookie(&auth.cookie, name, "", 0, false))
    })
}

/// A bound sign-out link: the session it names ends (if the app host has not ended it already),
/// its authenticate-host cookie is cleared, and its provider's end-session endpoint is next.
async fn end_one(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
    target: &str,
    l: &Logout,
) -> Reply {
    if let Ok(Some(s)) = state.store.get(&l.sid).await {
        if let Err(reply) = end(state, req, &s).await {
            return reply;
        }
    }
    let clear = vec![cookie::set_cookie(
        &auth.cookie,
        &auth_cookie(auth, &l.p),
        "",
        0,
        true,
    )];
    onward(state, req, target, Some((&l.id_token, &l.p)), clear)
}

/// The end of a sign-out on the authenticate host: the cookies cleared, then the provider's
/// end-session endpoint (RP-initiated logout) for `ended` (its ID token and provider key), or
/// straight to `target`. The target is the configured `signout_redirect_url` or the
/// signed-out page, never built from a request's `Host`.
fn onward(
    state: &AuthState,
    req: &Request<'_>,
    target: &str,
    ended: Option<(&str, &str)>,
    clear: Vec<String>,
) -> Reply {
    let with_clear = |r: Reply| clear.into_iter().fold(r, Reply::with_cookie);
    let Some(target) = signed::safe_target(target) else {
        return with_clear(bad_request(req, "invalid sign-out destination"));
    };
    let idp_logout = ended.and_then(|(token, key)| {
        state
            .idp
            .get(key)
            .and_then(|idp| idp.end_session_url(token, &target))
    });
    with_clear(Reply::found(
        idp_logout.as_ref().unwrap_or(&target).as_str(),
    ))
}

/// Deletes one session (every copy of its cookie stops working); `Err` is the answer when the
/// store cannot.
async fn end(state: &AuthState, req: &Request<'_>, s: &UserSession) -> Result<(), Reply> {
    if let Err(e) = state.store.delete(&s.id).await {
        tracing::error!(error = %e, "cannot delete the session");
        return Err(req.answer.refuse(Refusal::sign_in(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-out failed",
            "the session store is unavailable; try again",
        )));
    }
    tracing::info!(user = %s.user_id, session_id = %s.id, "signed out");
    state
        .metrics
        .sessions_ended
        .with_label_values(&["sign_out"])
        .inc();
    Ok(())
}

/// Sign-out on the authenticate host: clears its cookie, ends its session, and goes to the IdP's
/// end-session endpoint (RP-initiated logout) or the signed-out page.
pub(super) async fn authenticate_sign_out(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Reply {
    if let Some(reply) = super::logout::frontchannel(state, req).await {
        return reply;
    }
    let now = unix_now();
    let sessions = match auth_sessions(auth, state, req).await {
        Ok(s) => s,
        Err(e) => return req.answer.refuse(e.into()),
    };
    let logout = req
        .param("pomerium_logout")
        .and_then(|v| logout_key(auth).open(v, format!("logout|{}", req.host).as_bytes()))
        .and_then(|b| serde_json::from_slice::<Logout>(&b).ok())
        .filter(|l| l.exp > now);
    let signed = signed::verify(&auth.shared_secret, "/.pomerium/sign_out", &req.query, now);
    // The sign-out link of an app host ends the one session it was made for (already deleted
    // there), at its provider, and nothing else: the user's sessions with other providers are
    // other identities. A link made for another session than the live one its provider's
    // cookie holds here is someone else's, and anyone can get a signed link without a logout
    // (an anonymous sign-out makes one): both end sessions only after the confirmation.
    let foreign = logout.as_ref().is_some_and(|l| {
        sessions
            .iter()
            .any(|s| s.idp == l.p && !ct_eq(&s.id, &l.sid))
    });
    if let (Ok(target), Some(l), false) = (&signed, &logout, foreign) {
        return end_one(auth, state, req, target, l).await;
    }
    let target = match signed {
        Ok(t) if sessions.is_empty() => t,
        _ => {
            if let Some(reply) = confirm_sign_out(auth, sessions.first().map(|s| &**s), req) {
                return reply;
            }
            signed_out_url(auth)
        }
    };
    let mut clear = Vec::new();
    for s in &sessions {
        if state.store.delete(&s.id).await.is_ok() {
            state
                .metrics
                .sessions_ended
                .with_label_values(&["sign_out"])
                .inc();
        }
        let name = auth_cookie(auth, &s.idp);
        clear.push(cookie::set_cookie(&auth.cookie, &name, "", 0, true));
    }
    if clear.is_empty() {
        clear.push(cookie::set_cookie(
            &auth.cookie,
            auth_cookie_name(auth),
            "",
            0,
            true,
        ));
    }
    // The IdP's session ends for the first (the global provider's, when there is one).
    let ended = sessions
        .first()
        .map(|s| (s.id_token.as_str(), s.idp.as_str()));
    onward(state, req, &target, ended, clear)
}
