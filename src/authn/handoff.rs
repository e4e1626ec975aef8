//! The hand-off from the authenticate host to an app host: a sealed, single-use, host-bound
//! token that becomes the app host's own session cookie.

use super::*;

#[derive(Serialize, Deserialize)]
struct Handoff {
    sid: String,
    jti: String,
    exp: u64,
    t: String,
}

fn handoff_key(a: &Auth<'_>) -> crate::crypto::Key {
    a.shared_secret.derive("vallum handoff")
}

fn authority(u: &Url) -> String {
    match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
        None => u.host_str().unwrap_or_default().to_string(),
    }
    .to_ascii_lowercase()
}

/// 302 to the target host's callback with a sealed, one-time, short-lived hand-off.
pub(super) fn handoff(auth: &Auth<'_>, target: &Url, session: &UserSession) -> Reply {
    let host = authority(target);
    let h = Handoff {
        sid: session.id.clone(),
        jti: random_token(16),
        exp: unix_now() + HANDOFF_TTL,
        t: target.to_string(),
    };
    let sealed = handoff_key(auth).seal(
        &serde_json::to_vec(&h).unwrap_or_default(),
        format!("handoff|{host}").as_bytes(),
    );
    let mut cb = target.clone();
    cb.set_path("/.pomerium/callback/");
    cb.set_query(None);
    cb.set_fragment(None);
    cb.query_pairs_mut()
        .append_pair("pomerium_session", &sealed);
    Reply::found(cb.as_str())
}

pub(super) async fn route_callback(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Reply {
    let now = unix_now();
    let h: Option<Handoff> = req
        .param("pomerium_session")
        .and_then(|v| handoff_key(auth).open(v, format!("handoff|{}", req.host).as_bytes()))
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(h) = h.filter(|h| h.exp > now) else {
        return bad_request(req, "invalid or expired sign-in hand-off");
    };
    let first = match state.first_use(&format!("handoff|{}", h.jti), h.exp).await {
        Ok(first) => first,
        Err(refusal) => return req.answer.refuse(refusal),
    };
    if !first {
        return bad_request(req, "this sign-in hand-off was already used");
    }
    let Some(target) = routed_target(req, &h.t).filter(|t| authority(t) == req.host) else {
        return bad_request(req, "the hand-off is for another host");
    };
    let session = match state.store.get(&h.sid).await {
        Ok(Some(s)) if !s.is_expired(now) => s,
        Ok(_) => return bad_request(req, "the session has ended; sign in again"),
        Err(_) => return req.answer.refuse(Refusal::StoreUnavailable),
    };
    let handle = Handle {
        sid: session.id.clone(),
        exp: session.expires_at,
    };
    let name = session_cookie(auth, &session.idp);
    let value = cookie::seal(session_key(auth), &name, req.host, &handle);
    Reply::found(target.as_str()).with_cookie(cookie::set_cookie(
        &auth.cookie,
        &name,
        &value,
        session.ttl(now).as_secs(),
        false,
    ))
}
