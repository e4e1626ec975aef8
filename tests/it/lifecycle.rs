//! How sessions end besides the user's own sign-out: OpenID Connect back-channel logout (a
//! logout token the IdP POSTs), front-channel logout (a GET from the IdP's logout page).

use crate::signin::Env;
use crate::support::client;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A logout token as the test IdP would send it for IdP session `sid` of `sub`.
fn token_claims(env: &Env, sub: Option<&str>, sid: Option<&str>) -> Value {
    let mut c = json!({
        "iss": env.idp.issuer(),
        "aud": env.idp.client_id,
        "iat": now(),
        "exp": now() + 120,
        "jti": format!("jti-{}", rand::random::<u64>()),
        "events": {EVENT: {}},
    });
    if let Some(sub) = sub {
        c["sub"] = json!(sub);
    }
    if let Some(sid) = sid {
        c["sid"] = json!(sid);
    }
    c
}

async fn post_logout(env: &Env, token: &str) -> (u16, Value) {
    let r = client()
        .post(env.gw.url("/.pomerium/backchannel_logout"))
        .header("host", format!("authenticate.localhost:{}", env.gw.port))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap();
    crate::support::status_and_json(r).await
}

/// Signs in a browser as the IdP's current user, with IdP session `sid`; returns its cookie.
async fn signed_in(env: &Env, sid: &str) -> String {
    env.idp.set_extra_claims(json!({ "sid": sid }));
    let b = env.browser();
    let app = env.url("app", "/hello");
    let (r, hops) = b.browse(&app).await;
    assert_eq!(r.status, 200, "{hops:#?}");
    b.cookie_for(&app).unwrap()
}

async fn status_with(env: &Env, cookie: &str) -> u16 {
    client()
        .get(env.gw.url("/hello"))
        .header("host", format!("app.localhost:{}", env.gw.port))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_valid_logout_token_ends_the_idp_session_and_nothing_else() {
    let mport = crate::support::free_port();
    let env = Env::start(&format!("metrics_address: 127.0.0.1:{mport}\n")).await;
    let one = signed_in(&env, "idp-sid-1").await;
    let two = signed_in(&env, "idp-sid-2").await;
    assert_eq!(status_with(&env, &one).await, 200);

    let token = env
        .idp
        .sign_jwt(token_claims(&env, None, Some("idp-sid-1")));
    let (status, body) = post_logout(&env, &token).await;
    assert_eq!(status, 200, "{body}\n{}", env.gw.log());
    assert_eq!(
        status_with(&env, &one).await,
        401,
        "that IdP session's cookie is signed out"
    );
    assert_eq!(
        status_with(&env, &two).await,
        200,
        "the user's other IdP session lives on"
    );

    // The same token again is a replay.
    let (status, body) = post_logout(&env, &token).await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{body}"
    );

    // By subject alone: every session of the user ends.
    let three = signed_in(&env, "idp-sid-3").await;
    let token = env.idp.sign_jwt(token_claims(&env, Some("alice-id"), None));
    assert_eq!(post_logout(&env, &token).await.0, 200);
    assert_eq!(status_with(&env, &two).await, 401);
    assert_eq!(status_with(&env, &three).await, 401);

    let metrics = crate::support::scrape(mport, None).await.1;
    assert!(
        metrics.contains("vallum_sessions_ended_total{how=\"backchannel_logout\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vallum_logout_tokens_total{result=\"refused\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn forged_expired_replayed_or_misdirected_logout_tokens_end_nothing() {
    let env = Env::start("").await;
    let cookie = signed_in(&env, "idp-sid-x").await;
    let good = || token_claims(&env, Some("alice-id"), Some("idp-sid-x"));
    let with = |k: &str, v: Value| {
        let mut c = good();
        c[k] = v;
        env.idp.sign_jwt(c)
    };
    let without = |k: &str| {
        let mut c = good();
        c.as_object_mut().unwrap().remove(k);
        env.idp.sign_jwt(c)
    };
    // A valid token with its payload swapped: the signature no longer matches.
    let forged = {
        let real = env.idp.sign_jwt(good());
        let parts: Vec<&str> = real.split('.').collect();
        let other = env.idp.sign_jwt(json!({"sub": "mallory"}));
        format!(
            "{}.{}.{}",
            parts[0],
            other.split('.').nth(1).unwrap(),
            parts[2]
        )
    };
    let cases = [
        ("forged signature", forged),
        ("wrong audience", with("aud", json!("another-client"))),
        ("wrong issuer", with("iss", json!("https://evil.example"))),
        ("issued an hour ago", with("iat", json!(now() - 3600))),
        ("expired", with("exp", json!(now() - 300))),
        ("issued in the future", with("iat", json!(now() + 3600))),
        ("no logout event", with("events", json!({"other": {}}))),
        ("a nonce", with("nonce", json!("n"))),
        ("no jti", without("jti")),
        ("neither sub nor sid", {
            let mut c = good();
            let o = c.as_object_mut().unwrap();
            o.remove("sub");
            o.remove("sid");
            env.idp.sign_jwt(c)
        }),
        ("not a JWT", "garbage".to_string()),
    ];
    for (what, token) in cases {
        let (status, body) = post_logout(&env, &token).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"], "invalid_request", "{what}");
        assert_eq!(
            status_with(&env, &cookie).await,
            200,
            "{what} ended the session"
        );
    }
    let r = client()
        .get(env.gw.url("/.pomerium/backchannel_logout"))
        .header("host", format!("authenticate.localhost:{}", env.gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(status_with(&env, &cookie).await, 200);
}

#[tokio::test]
async fn front_channel_logout_ends_the_idp_session_without_a_page() {
    let env = Env::start("").await;
    let cookie = signed_in(&env, "idp-sid-f").await;
    let other = signed_in(&env, "idp-sid-g").await;
    let get = |host: &'static str, query: String| {
        let env = &env;
        async move {
            client()
                .get(format!("{}?{query}", env.gw.url("/.pomerium/sign_out")))
                .header("host", format!("{host}.localhost:{}", env.gw.port))
                .send()
                .await
                .unwrap()
        }
    };
    let iss = url::form_urlencoded::byte_serialize(env.idp.issuer().as_bytes()).collect::<String>();

    // From another issuer: refused, nothing ends.
    let r = get(
        "authenticate",
        "iss=https%3A%2F%2Fevil.example&sid=idp-sid-f".into(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(status_with(&env, &cookie).await, 200);

    // What the IdP's logout iframe loads: a 200 with nothing to follow or cache.
    let r = get("authenticate", format!("iss={iss}&sid=idp-sid-f")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("location").is_none());
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(status_with(&env, &cookie).await, 401, "signed out");
    assert_eq!(
        status_with(&env, &other).await,
        200,
        "another IdP session lives on"
    );

    // On an app host too (the URI /.well-known/pomerium advertises).
    let r = get("app", format!("iss={iss}&sid=idp-sid-g")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(status_with(&env, &other).await, 401);

    // Without iss and sid, a user's sign-out still asks for confirmation.
    let r = get("app", String::new()).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("csrf"));

    let known: Value = serde_json::from_str(
        &client()
            .get(env.gw.url("/.well-known/pomerium"))
            .header("host", format!("app.localhost:{}", env.gw.port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        known["backchannel_logout_uri"],
        format!(
            "http://authenticate.localhost:{}/.pomerium/backchannel_logout",
            env.gw.port
        )
    );
}

#[test]
fn idle_timeouts_shorter_than_a_minute_are_refused() {
    let base = "authenticate_service_url: https://auth.example.com\nidp_provider: oidc\nidp_provider_url: https://idp.example.com\n\
                idp_client_id: x\nidp_client_secret: y\ninsecure_server: true\n";
    let check = |extra: &str| {
        vallum::snapshot::Snapshot::from_str(&format!("{base}{extra}"), &|_| None, None)
            .map(|s| s.routes.len())
            .map_err(|e| e.to_string())
    };
    let e = check("session_idle_timeout: 30s\nroutes: []\n").unwrap_err();
    assert!(
        e.contains("session_idle_timeout") && e.contains("at least 1m"),
        "{e}"
    );
    let e = check("routes:\n  - from: https://a.example.com\n    to: http://127.0.0.1:1\n    allow_any_authenticated_user: true\n    session_idle_timeout: 5s\n").unwrap_err();
    assert!(e.contains("routes[0].session_idle_timeout"), "{e}");
    check("session_idle_timeout: 30m\nroutes:\n  - from: https://a.example.com\n    to: http://127.0.0.1:1\n    allow_any_authenticated_user: true\n    session_idle_timeout: 0s\n").unwrap();
}

/// `max_auth_age`: a session whose IdP authentication (`auth_time`) is older than the route
/// allows is sent back to the IdP with `max_age` and `prompt=login`; the new `auth_time` is
/// checked; API clients get 401. Time is driven through the `auth_time` the IdP reports.
#[tokio::test]
async fn a_route_with_a_maximum_auth_age_sends_an_old_sign_in_back_to_the_idp() {
    let env = Env::with_routes(
        "",
        "  - from: http://strict.localhost\n    to: {u}\n    allow_any_authenticated_user: true\n    max_auth_age: 1m\n",
    )
    .await;
    // The user authenticated at the IdP an hour ago, and the IdP ignores `max_age`: the
    // sign-in it answers with is refused rather than sent round again.
    env.idp.set_extra_claims(json!({"auth_time": now() - 3600}));
    let old = env.browser();
    assert_eq!(old.browse(&env.url("app", "/")).await.0.status, 200);
    let (r, hops) = old.browse(&env.url("strict", "/")).await;
    assert_eq!(r.status, 401, "{hops:#?}");
    assert!(hops.len() < 12, "no loop: {hops:#?}");
    assert!(env.gw.log_has("did not authenticate the user again"));

    // An API client with that old session: 401 and the reason.
    let cookie = old.cookie_for(&env.url("strict", "/")).unwrap();
    let r = client()
        .get(env.gw.url("/api"))
        .header("host", format!("strict.localhost:{}", env.gw.port))
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "reauthentication-required", "{body}");
    assert!(
        env.gw
            .log()
            .contains("reasons=\"reauthentication-required\""),
        "the authorize log says why"
    );

    // A browser signed in long ago is sent to the IdP, told to authenticate again; it does.
    let b = env.browser();
    assert_eq!(b.browse(&env.url("app", "/")).await.0.status, 200);
    env.idp.set_extra_claims(json!({"auth_time": now()}));
    let asked = env.idp.state.lock().unwrap().authorize_queries.len();
    let (r, hops) = b.browse(&env.url("strict", "/page")).await;
    assert_eq!(r.status, 200, "{hops:#?}\n{}", env.gw.log());
    let q = env.idp.state.lock().unwrap().authorize_queries[asked..].to_vec();
    assert_eq!(q.len(), 1, "one trip to the IdP: {q:?}");
    assert_eq!(q[0].get("max_age").map(String::as_str), Some("60"));
    assert_eq!(q[0].get("prompt").map(String::as_str), Some("login"));
    let (r, _) = b.browse(&env.url("strict", "/again")).await;
    assert_eq!(r.status, 200, "recent enough now");
    assert_eq!(
        env.idp.state.lock().unwrap().authorize_queries.len(),
        asked + 1
    );
}
