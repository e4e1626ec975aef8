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
