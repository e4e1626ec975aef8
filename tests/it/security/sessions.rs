//! Sessions and CSRF: a fresh session id at every sign-in, no sign-out by a cross-site GET or a
//! POST without the token, callback parameters given once, and a bounded number of login-state
//! cookies.

use crate::signin::Env;

fn sid(jwt: &str) -> String {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn session_ids_csrf_and_callback_parameters() {
    let env = Env::start("pass_identity_headers: true\n").await;
    let b = env.browser();
    let (first, _) = b.browse(&env.url("app", "/")).await;
    let first_sid = sid(first.echo().header("x-pomerium-jwt-assertion").unwrap());
    // Signing in again (a second browser) never reuses a session id (session fixation).
    let (second, _) = env.browser().browse(&env.url("app", "/")).await;
    assert_ne!(
        sid(second.echo().header("x-pomerium-jwt-assertion").unwrap()),
        first_sid
    );

    // (request, source) — none of these may end the session.
    let sign_out = env.url("app", "/.pomerium/sign_out");
    let (page, _) = b.get(&sign_out).await;
    assert_eq!(
        page.status, 200,
        "GET only asks for confirmation (no logout by <img src>)"
    );
    let r = b.client.post(&sign_out).send().await.unwrap();
    assert_eq!(r.status(), 403, "POST without the CSRF token");
    let r = b
        .client
        .post(&sign_out)
        .form(&[("csrf", "forged-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "POST with a forged token");
    let (still, _) = b.get(&env.url("app", "/")).await;
    assert_eq!(still.status, 200, "the session survived every attempt");

    // Callback parameters given twice are refused (parameter pollution).
    for q in ["state=a&state=b&code=c", "state=a&code=b&code=c"] {
        let (r, _) = b
            .get(&env.url("authenticate", &format!("/oauth2/callback?{q}")))
            .await;
        assert_eq!(r.status, 400, "{q}");
    }
}

#[tokio::test]
async fn abandoned_sign_ins_cannot_grow_the_cookie_header() {
    let env = Env::start("").await;
    let b = env.browser();
    for _ in 0..12 {
        // Start a sign-in and abandon it at the IdP.
        b.browse_until(&env.url("app", "/"), |u| u.contains("/authorize"))
            .await;
    }
    let cookies = b
        .cookie_for(&env.url("authenticate", "/"))
        .unwrap_or_default();
    let pending = cookies.matches("_pomerium_csrf_").count();
    assert!(pending <= 6, "{pending} login-state cookies: {cookies}");
    let (r, _) = b.browse(&env.url("app", "/")).await;
    assert_eq!(r.status, 200, "a sign-in still completes");
}

#[tokio::test]
async fn an_open_websocket_ends_with_its_session() {
    use crate::support::upstream::WsEcho;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let ws = WsEcho::start().await;
    let env = Env::with_routes(
        "",
        &format!(
            "  - from: http://cors.localhost\n    to: http://{}\n    allow_websockets: true\n    allow_any_authenticated_user: true\n",
            ws.addr
        ),
    )
    .await;
    let b = env.browser();
    let (r, _) = b.browse(&env.url("cors", "/")).await;
    assert_ne!(
        r.status, 302,
        "signed in (the websocket server itself refuses plain GETs)"
    );
    let cookie = b.cookie_for(&env.url("cors", "/")).unwrap();
    let mut req = format!("ws://127.0.0.1:{}/chat", env.gw.port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "host",
        format!("cors.localhost:{}", env.gw.port).parse().unwrap(),
    );
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut conn, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    conn.send(Message::text("before")).await.unwrap();
    assert_eq!(conn.next().await.unwrap().unwrap(), Message::text("before"));

    // Sign out in the browser; the websocket's next message after the re-check interval finds
    // the session gone and the connection is closed.
    let sign_out = env.url("cors", "/.pomerium/sign_out");
    let (page, _) = b.get(&sign_out).await;
    let csrf = crate::signin::csrf_field(&page.body);
    let r = b
        .client
        .post(&sign_out)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let _ = conn.send(Message::text("after")).await;
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), conn.next())
        .await
        .expect("the gateway acts within the re-check interval");
    assert!(
        !matches!(next, Some(Ok(Message::Text(ref t))) if t.as_str() == "after"),
        "a revoked session's websocket is cut: {next:?}"
    );
}

/// Cookie tossing: a `_pomerium` cookie planted from a sibling subdomain arrives beside the
/// user's own. Every cookie of the name counts: junk does not hide the user's session, and two
/// different live sessions are refused rather than one picked (the attacker's could win).
#[tokio::test]
async fn every_session_cookie_counts_and_two_sessions_are_refused() {
    let env = Env::start("pass_identity_headers: true\n").await;
    let app = env.url("app", "/");
    let session_cookie = |b: &crate::signin::Browser| {
        let all = b.cookie_for(&app).unwrap();
        all.split("; ")
            .find(|c| c.starts_with("_pomerium="))
            .unwrap()
            .to_string()
    };
    let alice = env.browser();
    let (first, _) = alice.browse(&app).await;
    assert_eq!(first.status, 200);
    let alice_sid = sid(first.echo().header("x-pomerium-jwt-assertion").unwrap());
    let alice_cookie = session_cookie(&alice);
    env.idp.login_as("bob-id");
    let mallory = env.browser();
    assert_eq!(mallory.browse(&app).await.0.status, 200);
    let mallory_cookie = session_cookie(&mallory);

    let send = |cookie: String| {
        let c = crate::support::client();
        let url = env.gw.url("/");
        let host = format!("app.localhost:{}", env.gw.port);
        async move {
            crate::support::Resp::from(
                c.get(url)
                    .header("host", host)
                    .header("cookie", cookie)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    // A junk cookie first, the user's second: still the user.
    let r = send(format!("_pomerium=planted-junk; {alice_cookie}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        sid(r.echo().header("x-pomerium-jwt-assertion").unwrap()),
        alice_sid
    );
    // Another user's valid session beside the user's own, in either order: refused.
    for cookie in [
        format!("{mallory_cookie}; {alice_cookie}"),
        format!("{alice_cookie}; {mallory_cookie}"),
    ] {
        let r = send(cookie).await;
        assert_eq!(r.status, 400, "{}", r.body);
    }
    // The same session twice (a browser may send a copy per path) is fine.
    let r = send(format!("{alice_cookie}; {alice_cookie}")).await;
    assert_eq!(r.status, 200);
}

/// Confirms sign-out on an app host as the browser would; the signed link to the authenticate
/// host it is sent on to.
async fn signed_sign_out_link(b: &crate::signin::Browser, sign_out: &str) -> String {
    let (form, _) = b.get(sign_out).await;
    let r = b
        .client
        .post(sign_out)
        .form(&[("csrf", crate::signin::csrf_field(&form.body))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    r.headers()["location"].to_str().unwrap().to_string()
}

/// Sign-out CSRF: anyone can get a signed sign-out link (an anonymous sign-out makes one), so a
/// signed link ends only the session it was made for. Another user's browser sent to it is asked
/// to confirm and keeps its session.
#[tokio::test]
async fn a_signed_sign_out_link_ends_only_its_own_session() {
    let env = Env::start("").await;
    let sign_out = env.url("app", "/.pomerium/sign_out");
    let attacker = env.browser();
    let link = signed_sign_out_link(&attacker, &sign_out).await;
    assert!(link.contains("/.pomerium/sign_out?"), "{link}");

    let victim = env.browser();
    assert_eq!(victim.browse(&env.url("app", "/")).await.0.status, 200);
    let (page, _) = victim.get(&link).await;
    assert_eq!(
        page.status, 200,
        "a confirmation, not a sign-out: {}",
        page.body
    );
    assert!(page.body.contains("name=\"csrf\""), "{}", page.body);
    let (still, _) = victim.get(&env.url("app", "/")).await;
    assert_eq!(still.status, 200, "the victim is still signed in");

    // The user's own sign-out still goes straight through the authenticate host.
    let own = signed_sign_out_link(&victim, &sign_out).await;
    let (done, _) = victim.get(&own).await;
    assert_eq!(done.status, 302, "no second confirmation: {}", done.body);
    let (after, _) = victim.get(&env.url("app", "/")).await;
    assert_ne!(after.status, 200, "signed out");
}

/// Vallum's own endpoints answer only for hosts it serves: a `Host` no route names gets 404, not
/// a signed sign-in link that would carry a user's hand-off to that host; and a validly signed
/// link to such a host is not honoured at the authenticate host.
#[tokio::test]
async fn own_endpoints_only_for_hosts_with_a_route() {
    let env = Env::start("").await;
    let evil = "evil.example";
    for path in [
        "/.pomerium/",
        "/.pomerium/api/v1/login?pomerium_redirect_uri=http://127.0.0.1:1/cb",
        "/.pomerium/user",
        "/.pomerium/callback/?pomerium_handoff=x",
        "/.pomerium/webauthn",
    ] {
        let r = env
            .gw
            .request(reqwest::Method::GET, evil, path, &[("accept", "text/html")])
            .await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert!(r.header("location").is_none(), "{path}");
    }
    // The public keys are the same everywhere, and apps fetch them from any address.
    let r = env
        .gw
        .request(
            reqwest::Method::GET,
            evil,
            "/.well-known/pomerium/jwks.json",
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    // A served host still has them.
    let host = format!("app.localhost:{}", env.gw.port);
    let r = env
        .gw
        .request(
            reqwest::Method::GET,
            &host,
            "/.pomerium/",
            &[("accept", "text/html")],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);

    // A signed sign-in link for a host no route serves (signed here with the test's secret, as
    // an older Vallum would have made one) is refused.
    let key = vallum::crypto::Key::from_base64(crate::signin::SHARED_SECRET).unwrap();
    let base = url::Url::parse(&env.url("authenticate", "/")).unwrap();
    let link = vallum::authn::signed::sign(
        &key,
        &base,
        "/.pomerium/sign_in",
        &format!("http://{evil}/.pomerium/"),
        &[],
        vallum::clock::unix_now(),
    );
    let victim = env.browser();
    assert_eq!(victim.browse(&env.url("app", "/")).await.0.status, 200);
    let (r, _) = victim.get(link.as_str()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.header("location").is_none(),
        "no hand-off leaves for {evil}"
    );
}
