//! The sign-in flow on the authenticate host: the signed sign-in link, the IdP round trip (code +
//! PKCE, `state` in a sealed per-attempt cookie, `nonce`), and the new session.

use super::handoff::handoff;
use super::*;

#[derive(Serialize, Deserialize)]
struct Flow {
    /// `state`
    s: String,
    /// `nonce`
    n: String,
    /// PKCE verifier
    v: String,
    /// where to go afterwards
    t: String,
    /// issued at
    i: u64,
    /// `max_age` asked of the IdP (a route's `max_auth_age`): the ID token must show an
    /// authentication that recent.
    #[serde(default)]
    m: Option<u64>,
    /// The provider's key (empty: the global one).
    #[serde(default)]
    p: String,
}

fn flow_cookie_name(a: &Auth<'_>, state: &str) -> String {
    format!("{}_csrf_{}", a.cookie.name, state.get(..8).unwrap_or(state))
}

fn flow_key(a: &Auth<'_>) -> crate::crypto::Key {
    a.cookie_secret.derive("vallum oauth flow")
}

pub(super) async fn sign_in(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let now = unix_now();
    let target = match signed::verify(&auth.shared_secret, "/.pomerium/sign_in", &req.query, now) {
        Ok(t) => t,
        Err(e) => return bad_request(req, &e.to_string()),
    };
    let Some(target_url) = routed_target(req, &target) else {
        return bad_request(req, "the sign-in link points nowhere Vallum serves");
    };
    let max_age = req.param("max_age").and_then(|v| v.parse::<u64>().ok());
    let key = match (req.param("idp"), req.param("idp_choices")) {
        (Some(k), _) => choice_key(k).to_string(),
        (None, Some(list)) => {
            return super::chooser::choose(auth, state, req, &target_url, list).await;
        }
        (None, None) => String::new(),
    };
    // Already signed in at the authenticate host with this provider (recently enough, when a
    // route asks): hand off straight away (single sign-on).
    let name = auth_cookie(auth, &key);
    match session_for(auth, state, req.cookies, &name, req.host).await {
        Ok(Some(session)) if max_age.is_none_or(|m| auth_age(&session, now) <= m) => {
            return handoff(auth, &target_url, &session)
        }
        Ok(_) => {}
        Err(e) => return req.answer.refuse(e.into()),
    }
    let Some(idp) = state.idp.get(&key) else {
        return req.answer.refuse(Refusal::sign_in(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "The identity provider has not been reached yet. Try again in a moment.",
        ));
    };
    let flow = Flow {
        s: random_token(32),
        n: random_token(32),
        v: random_token(48),
        t: target,
        i: now,
        m: max_age,
        p: key,
    };
    let sealed = flow_key(auth).seal(
        &serde_json::to_vec(&flow).unwrap_or_default(),
        format!("flow|{}", req.host).as_bytes(),
    );
    let mut url = idp.authorize_url(&flow.s, &flow.n, &flow.v);
    if let Some(m) = max_age {
        url.query_pairs_mut()
            .append_pair("max_age", &m.to_string())
            .append_pair("prompt", "login");
    }
    // Each attempt leaves a small cookie until its callback; a client that starts attempts
    // without finishing them would grow the Cookie header without bound. Past a few, the old
    // attempts are dropped (a tab still waiting on one restarts its sign-in).
    let prefix = format!("{}_csrf_", auth.cookie.name);
    let stale: Vec<String> = req
        .cookies
        .map(|c| {
            c.split(';')
                .filter_map(|kv| kv.trim().split_once('=').map(|(k, _)| k.trim()))
                .filter(|k| k.starts_with(&prefix))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut reply = Reply::found(url.as_str());
    if stale.len() >= MAX_PENDING_SIGN_INS {
        for name in stale {
            reply = reply.with_cookie(cookie::set_cookie(&auth.cookie, &name, "", 0, true));
        }
    }
    state
        .metrics
        .sign_ins
        .with_label_values(&["started", ""])
        .inc();
    reply.with_cookie(cookie::set_cookie(
        &flow_cookie_settings(auth, idp.settings().form_post),
        &flow_cookie_name(auth, &flow.s),
        &sealed,
        FLOW_TTL,
        true,
    ))
}

/// The attempt cookie's attributes: the session cookie's, except that an IdP answering with a
/// cross-site POST (`form_post`, Apple) needs it `SameSite=None` to come back with the answer,
/// which browsers allow only on `Secure` cookies (so only with TLS). It is safe there: sealed,
/// bound to this host, and worth nothing without the `state` the IdP sends back with it.
fn flow_cookie_settings(auth: &Auth<'_>, form_post: bool) -> crate::config::auth::CookieSettings {
    let mut c = auth.cookie.clone();
    if c.secure && form_post {
        c.same_site = crate::config::auth::SameSite::None;
    }
    c
}

/// The provider key an `idp` parameter names (`global`: the global provider).
pub(super) fn choice_key(v: &str) -> &str {
    match v {
        GLOBAL_CHOICE => "",
        k => k,
    }
}

/// Counts a sign-in that ended without a session, by a bounded reason.
fn failed(state: &AuthState, reason: &'static str) {
    state
        .metrics
        .sign_ins
        .with_label_values(&["failed", reason])
        .inc();
}

/// The callback's parameters: the query, or the form of a POST (`response_mode=form_post`, which
/// Apple always uses).
fn callback_params<'r>(req: &'r Request<'_>) -> &'r [(String, String)] {
    match *req.method == http::Method::POST {
        true => &req.form,
        false => &req.query,
    }
}

fn callback_param<'r>(req: &'r Request<'_>, k: &str) -> Option<&'r str> {
    callback_params(req)
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

/// The sign-in attempt this callback finishes: its sealed cookie matches `state`, is fresh, and
/// is used once across the fleet. Also the `Set-Cookie` that clears the attempt's cookie.
async fn verified_flow(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
    now: u64,
) -> Result<(Flow, String), Reply> {
    let Some(state_param) = callback_param(req, "state").filter(|s| !s.is_empty()) else {
        failed(state, "csrf");
        return Err(bad_request(req, "missing state"));
    };
    let cookie_name = flow_cookie_name(auth, state_param);
    let clear = cookie::set_cookie(&auth.cookie, &cookie_name, "", 0, true);
    let flow: Option<Flow> = req
        .cookies
        .and_then(|c| cookie::find(c, &cookie_name))
        .and_then(|v| flow_key(auth).open(v, format!("flow|{}", req.host).as_bytes()))
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(flow) = flow else {
        failed(state, "csrf");
        tracing::warn!(
            reason = "csrf",
            "sign-in callback without a matching sign-in attempt"
        );
        return Err(bad_request(req, "this sign-in attempt is unknown or expired (state check failed); start again from the application").with_cookie(clear));
    };
    if !ct_eq(&flow.s, state_param) {
        failed(state, "csrf");
        tracing::warn!(reason = "csrf", "sign-in callback state mismatch");
        // The cookie is left in place: a forged callback must not cancel the user's real attempt.
        return Err(bad_request(req, "state mismatch"));
    }
    if now > flow.i + FLOW_TTL {
        failed(state, "expired");
        return Err(
            bad_request(req, "this sign-in attempt expired; start again").with_cookie(clear),
        );
    }
    let first = match state
        .first_use(&format!("state|{}", flow.s), flow.i + FLOW_TTL)
        .await
    {
        Ok(first) => first,
        Err(refusal) => {
            failed(state, "store_unavailable");
            return Err(req.answer.refuse(refusal));
        }
    };
    if !first {
        failed(state, "replay");
        tracing::warn!(reason = "replay", "sign-in callback replayed");
        return Err(bad_request(req, "this sign-in response was already used").with_cookie(clear));
    }
    Ok((flow, clear))
}

/// A new session record from a verified sign-in with provider `idp`.
fn new_session(
    identity: crate::identity::Identity,
    now: u64,
    expires_at: u64,
    idp: &str,
) -> UserSession {
    let mut s = UserSession {
        id: random_token(24),
        user_id: identity.user_id,
        email: identity.email,
        name: identity.name,
        groups: identity.groups,
        claims: identity.claims.into(),
        id_token: identity.id_token,
        access_token: identity.access_token,
        refresh_token: identity.refresh_token,
        access_expires_at: identity.access_expires_at,
        issued_at: now,
        expires_at,
        claims_refreshed_at: now,
        idp: idp.to_string(),
        devices: Vec::new(),
    };
    s.compact_claims();
    s
}

/// Stores the new session and where the IdP's logouts will find it: a session its IdP cannot
/// end is not made.
async fn store_session(state: &AuthState, session: &UserSession) -> Result<(), Refusal> {
    let stored = match state.store.put(session.clone()).await {
        Ok(()) => super::logout::remember(state, session).await,
        Err(e) => Err(e),
    };
    stored.map_err(|e| {
        failed(state, "store_unavailable");
        tracing::error!(error = %e, "cannot store the new session");
        Refusal::sign_in(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "the session store is unavailable",
        )
    })
}

/// Asked to authenticate the user within `max_age`, the IdP must say when it did (`auth_time`,
/// required by OpenID Connect when `max_age` is sent) and that must be recent; otherwise the
/// route would send the browser straight back, round and round.
fn too_old(
    idp: &crate::identity::Provider,
    identity: &crate::identity::Identity,
    max_age: u64,
    now: u64,
) -> Option<Refusal> {
    let at = identity
        .claims
        .get("auth_time")
        .and_then(serde_json::Value::as_u64);
    let fresh = match at {
        Some(t) => now.saturating_sub(t) <= max_age + 60,
        // Only OpenID Connect has the claim; GitHub's sign-in is now.
        None => matches!(idp, crate::identity::Provider::Github(_)),
    };
    if fresh {
        return None;
    }
    tracing::warn!(auth_time = ?at, max_age, "the identity provider did not authenticate the user again");
    Some(Refusal::sign_in(
        StatusCode::UNAUTHORIZED,
        "Sign-in too old",
        "This page needs a recent sign-in, and the identity provider did not ask you to sign in again.",
    ))
}

/// A code exchange that failed: unreachable, down or rate-limited is worth a retry (503);
/// anything else is a refusal (401). No session either way.
fn exchange_failed(state: &AuthState, e: crate::identity::IdpError) -> Refusal {
    tracing::warn!(reason = %e, "sign-in failed; no session created");
    match e {
        crate::identity::IdpError::Unreachable(_) => {
            failed(state, "idp_unavailable");
            Refusal::sign_in(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in unavailable",
                "The identity provider is not answering right now; try again in a moment.",
            )
        }
        _ => {
            failed(state, "token_rejected");
            Refusal::sign_in(
                StatusCode::UNAUTHORIZED,
                "Sign-in failed",
                "The identity provider's answer could not be verified.",
            )
        }
    }
}

pub(super) async fn oauth_callback(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Reply {
    let now = unix_now();
    if let Some(err) = callback_param(req, "error") {
        failed(state, "idp_error");
        let desc = callback_param(req, "error_description").unwrap_or("");
        tracing::warn!(
            error = err,
            description = desc,
            "identity provider returned an error"
        );
        return req.answer.refuse(Refusal::sign_in(
            StatusCode::UNAUTHORIZED,
            "Sign-in refused",
            format!("The identity provider said: {err} {desc}"),
        ));
    }
    // A parameter given twice is refused, not resolved first- or last-wins: the two halves of
    // a stack that disagree on which one counts is how parameter pollution attacks work.
    if ["state", "code", "error"]
        .iter()
        .any(|k| callback_params(req).iter().filter(|(n, _)| n == k).count() > 1)
    {
        failed(state, "bad_response");
        return bad_request(req, "a sign-in parameter was given more than once");
    }
    let (flow, clear) = match verified_flow(auth, state, req, now).await {
        Ok(f) => f,
        Err(reply) => return reply,
    };
    let Some(code) = callback_param(req, "code") else {
        failed(state, "bad_response");
        return bad_request(req, "missing code").with_cookie(clear);
    };
    let Some(idp) = state.idp.get(&flow.p) else {
        failed(state, "idp_unavailable");
        return req.answer.refuse(Refusal::sign_in(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "identity provider not reachable",
        ));
    };
    let identity = match idp.exchange(code, &flow.v, &flow.n).await {
        Ok(i) => i,
        Err(e) => {
            return req
                .answer
                .refuse(exchange_failed(state, e))
                .with_cookie(clear)
        }
    };
    if let Some(refusal) = flow.m.and_then(|m| too_old(&idp, &identity, m, now)) {
        failed(state, "reauthentication_refused");
        return req.answer.refuse(refusal).with_cookie(clear);
    }
    let Some(target) = routed_target(req, &flow.t) else {
        failed(state, "bad_destination");
        return bad_request(req, "invalid destination").with_cookie(clear);
    };
    let expires_at = now + auth.cookie.expire.as_secs();
    let session = new_session(identity, now, expires_at, &flow.p);
    if let Err(refusal) = store_session(state, &session).await {
        return req.answer.refuse(refusal).with_cookie(clear);
    }
    tracing::info!(user = %session.user_id, session_id = %session.id, "signed in");
    state
        .metrics
        .sign_ins
        .with_label_values(&["completed", ""])
        .inc();
    let name = auth_cookie(auth, &flow.p);
    let handle = Handle {
        sid: session.id.clone(),
        exp: expires_at,
    };
    let auth_cookie = cookie::set_cookie(
        &auth.cookie,
        &name,
        &cookie::seal(session_key(auth), &name, req.host, &handle),
        auth.cookie.expire.as_secs(),
        true,
    );
    handoff(auth, &target, &session)
        .with_cookie(clear)
        .with_cookie(auth_cookie)
}
