//! Access without a browser session cookie (Pomerium's programmatic login): a script asks a
//! route host for a sign-in URL that returns to a local listener; after the user signs in, the
//! browser lands there with `pomerium_jwt=<token>`. The token is a sealed handle on the
//! server-side session — like the cookie, bound to the host it was issued for — so sign-out and
//! revocation end it too. Scripts present it as `Authorization: Pomerium <token>`,
//! `Authorization: Bearer Pomerium-<token>` or `X-Pomerium-Authorization: <token>`.

use super::*;

/// The redirect target a programmatic login may return its token to: http(s), no credentials,
/// and a host on `programmatic_redirect_domain_whitelist` (exact match; `localhost` also
/// admits loopback addresses). Pomerium's CVE-2021-29651 was a missing check here.
pub fn allowed_redirect(uri: &str, whitelist: &[String]) -> Option<Url> {
    if uri.len() > MAX_REDIRECT_LEN {
        return None;
    }
    let u = Url::parse(uri).ok()?;
    if !matches!(u.scheme(), "http" | "https") || !u.username().is_empty() || u.password().is_some()
    {
        return None;
    }
    let ok = match u.host()? {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            whitelist.contains(&d)
        }
        url::Host::Ipv4(ip) => {
            whitelist.iter().any(|w| *w == ip.to_string())
                || (ip.is_loopback() && whitelist.iter().any(|w| w == "localhost"))
        }
        url::Host::Ipv6(ip) => {
            whitelist.iter().any(|w| *w == ip.to_string())
                || (ip.is_loopback() && whitelist.iter().any(|w| w == "localhost"))
        }
    };
    ok.then_some(u)
}

fn token_key(a: &Auth<'_>) -> crate::crypto::Key {
    a.cookie_secret.derive("vallum bearer token")
}

const TOKEN_NAME: &str = "pomerium-bearer";

/// Tokens are bound to the host name without the port: one sign-in serves every service of a
/// host, including its TCP tunnels (`tcp+https://db.example.com:5432` is reached through the
/// gateway's HTTPS port).
pub(super) fn token_host(host: &str) -> String {
    host.parse::<http::uri::Authority>()
        .map(|a| a.host().to_string())
        .unwrap_or_else(|_| host.to_string())
}

/// `GET /.pomerium/api/v1/login?pomerium_redirect_uri=…` → the sign-in URL, as text.
pub(super) fn login_url(auth: &Auth<'_>, req: &Request<'_>) -> Reply {
    let uri = match req.param("pomerium_redirect_uri") {
        Some(u)
            if req
                .query
                .iter()
                .filter(|(k, _)| k == "pomerium_redirect_uri")
                .count()
                == 1 =>
        {
            u
        }
        _ => return bad_request(req, "pomerium_redirect_uri is required, once"),
    };
    if allowed_redirect(uri, &auth.programmatic_redirects).is_none() {
        tracing::warn!(
            reason = "redirect-not-allowed",
            "programmatic login refused"
        );
        return bad_request(
            req,
            "pomerium_redirect_uri must point at a host on programmatic_redirect_domain_whitelist",
        );
    }
    let Ok(base) = Url::parse(&format!("{}://{}/", req.scheme, req.host)) else {
        return bad_request(req, "invalid host");
    };
    let back = signed::sign(
        &auth.shared_secret,
        &base,
        "/.pomerium/programmatic",
        uri,
        &[],
        unix_now(),
    );
    let url = host_sign_in_url(auth, req, back.as_str());
    Reply::text(StatusCode::OK, bytes::Bytes::from(format!("{url}\n")))
}

/// `GET /.pomerium/programmatic?…` (signed; reached after sign-in with the app cookie set):
/// mints the token for this host and hands it to the whitelisted redirect target.
pub(super) async fn hand_token(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Reply {
    let now = unix_now();
    let target = match signed::verify(
        &auth.shared_secret,
        "/.pomerium/programmatic",
        &req.query,
        now,
    ) {
        Ok(t) => t,
        Err(e) => return bad_request(req, &e.to_string()),
    };
    let Some(mut to) = allowed_redirect(&target, &auth.programmatic_redirects) else {
        return bad_request(req, "the redirect target is not allowed");
    };
    let session = match host_session(auth, state, req).await {
        Ok(Some(s)) => s,
        Ok(None) => return bad_request(req, "not signed in; start again"),
        Err(e) => return req.answer.refuse(e.into()),
    };
    let token = cookie::seal(
        &token_key(auth),
        TOKEN_NAME,
        &token_host(req.host),
        &Handle {
            sid: session.id.clone(),
            exp: session.expires_at,
        },
    );
    to.query_pairs_mut().append_pair("pomerium_jwt", &token);
    Reply::found(to.as_str())
}

/// The token a request carries in one of the bearer forms, if any.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(t) = headers
        .get("x-pomerium-authorization")
        .and_then(|v| v.to_str().ok())
    {
        return Some(t.trim());
    }
    authorization_token(headers)
}

/// A Vallum token in `Authorization` (`Pomerium <t>` or `Bearer Pomerium-<t>`, whatever the
/// spacing). The one parser for both accepting it and keeping it from the upstream: whatever
/// Vallum takes as its own credential is never forwarded.
pub fn authorization_token(headers: &http::HeaderMap) -> Option<&str> {
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?
        .trim();
    if let Some(t) = auth.strip_prefix("Pomerium ") {
        return Some(t.trim());
    }
    auth.strip_prefix("Bearer ")
        .and_then(|t| t.trim().strip_prefix("Pomerium-"))
}

/// The live session a bearer token refers to, for `host`.
pub async fn session_for_token(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    token: &str,
    host: &str,
) -> Result<Option<Arc<UserSession>>, StoreError> {
    let now = unix_now();
    let Some(handle) = cookie::open(&token_key(auth), TOKEN_NAME, &token_host(host), token, now)
    else {
        return Ok(None);
    };
    match state.store.get(&handle.sid).await? {
        Some(s) if !s.is_expired(now) => {
            refresh::maybe_refresh(auth, state, &s, now);
            Ok(Some(s))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::allowed_redirect;

    #[test]
    fn only_whitelisted_hosts_receive_tokens() {
        let wl = vec!["localhost".to_string()];
        for ok in [
            "http://localhost:8000/cb",
            "http://LOCALHOST.:1/cb",
            "http://127.0.0.1:5555/",
            "http://127.1.2.3/",
            "http://[::1]:9/x",
        ] {
            assert!(allowed_redirect(ok, &wl).is_some(), "{ok}");
        }
        for bad in [
            "http://localhost.evil.example/",
            "http://evil.example/#localhost",
            "http://localhost@evil.example/",
            "http://evil.example\\@localhost/",
            "http://127.0.0.1.nip.io/",
            "http://localhost%2eevil.example/",
            "javascript://localhost/%0aalert(1)",
            "file://localhost/etc/passwd",
            "//localhost/",
            "http://0x7f000001.evil.example/",
            "https://user:pw@localhost/",
            "http://10.0.0.1/",
        ] {
            assert!(allowed_redirect(bad, &wl).is_none(), "{bad}");
        }
        let custom = vec!["cli.example.com".to_string()];
        assert!(allowed_redirect("https://cli.example.com/cb", &custom).is_some());
        assert!(allowed_redirect("http://localhost/cb", &custom).is_none());
    }
}
