//! Forward auth through the running gateway, in each ingress's own words: nginx's
//! `/verify?uri=` and `/?uri=`, Traefik's and Caddy's `X-Forwarded-*`, Envoy's `ext_authz` path
//! prefix. The browser flow with real nginx and Caddy is in `tests/e2e`.

use crate::signin::Env;
use crate::support::Resp;
use reqwest::Method;

const ROUTES: &str = "  - from: http://getonly.localhost\n    to: {u}\n    policy:\n      allow:\n        and:\n          - http_method: GET\n\
\x20 - from: http://deny.localhost\n    to: {u}\n    allowed_users: [nobody@example.com]\n";

async fn env(extra: &str) -> Env {
    Env::with_routes(
        &format!(
            "forward_auth_url: http://fwd.localhost\njwt_claims_headers: [email, groups]\n{extra}"
        ),
        ROUTES,
    )
    .await
}

/// A signed-in browser's `Cookie` for app.localhost (what an ingress forwards).
async fn signed_in_cookie(env: &Env) -> String {
    cookie_for(env, "app", 200).await
}

/// The `Cookie` a browser holds for `host` after signing in there (the session cookie is bound
/// to its host, as in proxy mode); the page itself answers `status`.
async fn cookie_for(env: &Env, host: &str, status: u16) -> String {
    let b = env.browser();
    assert_eq!(b.browse(&env.url(host, "/")).await.0.status, status);
    b.cookie_for(&env.url(host, "/")).unwrap()
}

async fn ask(env: &Env, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    env.gw
        .request(
            Method::GET,
            &format!("{host}:{}", env.gw.port),
            path,
            headers,
        )
        .await
}

/// nginx's question: may the request for `host` and `path` pass?
async fn verify(env: &Env, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let q = format!("/verify?uri={}", uri(env, host, path));
    ask(env, "fwd.localhost", &q, headers).await
}

fn uri(env: &Env, host: &str, path: &str) -> String {
    let u = format!("http://{host}.localhost:{}{path}", env.gw.port);
    url::form_urlencoded::byte_serialize(u.as_bytes()).collect()
}

#[tokio::test]
async fn nginx_verify_answers_200_with_identity_401_or_403() {
    let env = env("").await;
    let cookie = signed_in_cookie(&env).await;
    let html = ("accept", "text/html");

    let r = verify(&env, "app", "/x?y=1", &[("cookie", &cookie), html]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let jwt = r
        .header("x-pomerium-jwt-assertion")
        .expect("the signed assertion");
    assert_eq!(jwt.split('.').count(), 3);
    assert_eq!(
        r.header("x-pomerium-claim-email"),
        Some("alice@example.com")
    );

    // Not signed in: 401 (nginx's error_page sends the browser to sign in), never a 302.
    let r = verify(&env, "app", "/x", &[html]).await;
    assert_eq!(r.status, 401);
    // Signed in but not allowed: 403. A cookie of another host is no session here.
    let r = verify(&env, "deny", "/", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 401, "app's cookie does not sign in on deny");
    let deny_cookie = cookie_for(&env, "deny", 403).await;
    let r = verify(&env, "deny", "/", &[("cookie", &deny_cookie)]).await;
    assert_eq!(r.status, 403);
    // The original method, not the sub-request's, meets the policy.
    let r = verify(&env, "getonly", "/", &[("x-original-method", "POST")]).await;
    assert_eq!(r.status, 403, "POST refused by http_method: GET");
    let r = verify(&env, "getonly", "/", &[("x-original-method", "GET")]).await;
    assert_eq!(r.status, 200);
    // A URL no route covers is denied; a path not in normal form is refused, not judged.
    let r = verify(&env, "elsewhere", "/", &[]).await;
    assert_eq!(r.status, 403);
    let r = verify(&env, "getonly", "/a/../b", &[]).await;
    assert_eq!(r.status, 400);
    let r = ask(&env, "fwd.localhost", "/verify", &[]).await;
    assert_eq!(r.status, 400, "which request?");
}

/// Scripts and services: a programmatic-login token in `Authorization` answers like a cookie.
#[tokio::test]
async fn a_bearer_token_is_a_session_too() {
    let env = env("").await;
    let b = env.browser();
    let token = crate::programmatic::login_token(&env, &b, "app").await;
    let bearer = format!("Pomerium {token}");
    let verify = format!("/verify?uri={}", uri(&env, "app", "/api"));
    let r = ask(
        &env,
        "fwd.localhost",
        &verify,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-pomerium-claim-email"),
        Some("alice@example.com")
    );
    let r = ask(
        &env,
        "fwd.localhost",
        &verify,
        &[("authorization", "Pomerium forged")],
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn the_sign_in_start_sends_the_browser_to_sign_in_and_back() {
    let env = env("").await;
    let html = ("accept", "text/html");
    let r = ask(
        &env,
        "fwd.localhost",
        &format!("/?uri={}", uri(&env, "app", "/deep?q=1")),
        &[html],
    )
    .await;
    assert_eq!(r.status, 302);
    let to = r.header("location").unwrap();
    assert!(
        to.starts_with(&format!(
            "http://authenticate.localhost:{}/.pomerium/sign_in",
            env.gw.port
        )),
        "{to}"
    );
    assert!(to.contains("deep"), "comes back to the original URL: {to}");

    let cookie = signed_in_cookie(&env).await;
    let r = ask(
        &env,
        "fwd.localhost",
        &format!("/?uri={}", uri(&env, "app", "/deep?q=1")),
        &[html, ("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("http://app.localhost:{}/deep?q=1", env.gw.port).as_str())
    );
}

#[tokio::test]
async fn traefik_and_caddy_forwarded_headers() {
    let env = env("").await;
    let cookie = signed_in_cookie(&env).await;
    let host = format!("app.localhost:{}", env.gw.port);
    let fwd = |method: &'static str, uri: &'static str| {
        [
            ("x-forwarded-method", method),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-uri", uri),
        ]
    };
    let mut h: Vec<(&str, &str)> = fwd("GET", "/page").to_vec();
    h.push(("x-forwarded-host", &host));
    h.push(("cookie", &cookie));
    let r = ask(&env, "fwd.localhost", "/", &h).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-pomerium-claim-email"),
        Some("alice@example.com")
    );

    // Not signed in: browsers get the sign-in redirect to pass on, API clients 401.
    let mut h: Vec<(&str, &str)> = fwd("GET", "/page").to_vec();
    h.push(("x-forwarded-host", &host));
    h.push(("accept", "text/html"));
    let r = ask(&env, "fwd.localhost", "/", &h).await;
    assert_eq!(r.status, 302);
    assert!(r.header("location").unwrap().contains("/.pomerium/sign_in"));
    h.pop();
    h.push(("accept", "application/json"));
    assert_eq!(ask(&env, "fwd.localhost", "/", &h).await.status, 401);
}

#[tokio::test]
async fn envoy_ext_authz_path_prefix() {
    let env = env("").await;
    let cookie = signed_in_cookie(&env).await;
    let r = ask(
        &env,
        "app.localhost",
        "/.pomerium/ext_authz/reports?id=3",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-pomerium-jwt-assertion").is_some());
    let r = ask(
        &env,
        "app.localhost",
        "/.pomerium/ext_authz/reports",
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(
        r.status, 302,
        "Envoy passes the sign-in redirect to the browser"
    );
    let deny_cookie = cookie_for(&env, "deny", 403).await;
    let r = ask(
        &env,
        "deny.localhost",
        "/.pomerium/ext_authz/",
        &[("cookie", &deny_cookie)],
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn only_configured_ingresses_are_answered() {
    let env = env("forward_auth_ingresses: [10.0.0.0/8]\n").await;
    let cookie = signed_in_cookie(&env).await;
    let r = verify(&env, "app", "/", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 403, "loopback is not a configured ingress here");
    let r = ask(
        &env,
        "app.localhost",
        "/.pomerium/ext_authz/",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(env.gw.log_has("not in forward_auth_ingresses"));
    // The proxy itself is unaffected.
    assert_eq!(ask(&env, "public.localhost", "/", &[]).await.status, 200);
}
