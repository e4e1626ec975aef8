//! Authorization through the running gateway: PPL and legacy rules on real sessions, 302 / 401 /
//! 403, identity headers verified against the published JWKS, and the `/.pomerium/` endpoints.

use crate::signin::Env;
use crate::support::Resp;
use chrono::Datelike;

const ROUTES: &str = r#"  - from: http://email.localhost
    to: {u}
    policy:
      allow:
        and:
          - email: {is: alice@example.com}
  - from: http://group.localhost
    to: {u}
    policy:
      - allow:
          or:
            - groups: {has: admins}
  - from: http://domain.localhost
    to: {u}
    allowed_domains: [example.com]
  - from: http://claim.localhost
    to: {u}
    policy:
      allow:
        and:
          - claim/name: Alice
          - http_method: {in: [GET, HEAD]}
  - from: http://deny.localhost
    to: {u}
    allow_any_authenticated_user: true
    policy:
      deny:
        or:
          - domain: {is: evil.example}
          - http_path: {starts_with: /admin}
  - from: http://jwt.localhost
    to: {u}
    allow_any_authenticated_user: true
    pass_identity_headers: true
    set_request_headers:
      X-Id-Token: "${pomerium.id_token}"
      X-Literal: "$${pomerium.jwt}"
  - from: http://cors.localhost
    to: {u}
    allow_any_authenticated_user: true
    cors_allow_preflight: true
"#;

async fn env() -> Env {
    Env::with_routes("jwt_claims_headers: [email, groups]\n", ROUTES).await
}

async fn signed_in(env: &Env, who: &str) -> crate::signin::Browser {
    env.idp.login_as(who);
    let b = env.browser();
    assert_eq!(b.browse(&env.url("app", "/")).await.0.status, 200);
    b
}

async fn status(b: &crate::signin::Browser, env: &Env, host: &str, path: &str) -> u16 {
    b.browse(&env.url(host, path)).await.0.status
}

#[tokio::test]
async fn policies_on_email_groups_domain_claims_method_and_deny() {
    let env = env().await;
    let alice = signed_in(&env, "alice-id").await;
    let bob = signed_in(&env, "bob-id").await;
    let eve = signed_in(&env, "eve-id").await;
    for (host, path, a, b, e) in [
        ("email", "/", 200, 403, 403),
        ("group", "/", 200, 403, 403),
        ("domain", "/", 200, 200, 403),
        ("claim", "/", 200, 403, 403),
        ("deny", "/", 200, 200, 403),
        ("deny", "/admin/x", 403, 403, 403),
    ] {
        assert_eq!(
            status(&alice, &env, host, path).await,
            a,
            "alice on {host}{path}"
        );
        assert_eq!(
            status(&bob, &env, host, path).await,
            b,
            "bob on {host}{path}"
        );
        assert_eq!(
            status(&eve, &env, host, path).await,
            e,
            "eve on {host}{path}"
        );
    }
    let jwt = alice
        .client
        .get(env.url("email", "/.pomerium/jwt"))
        .send()
        .await
        .unwrap();
    assert_eq!(jwt.status(), 404, "/.pomerium/jwt is off by default");
    let post = alice
        .client
        .post(env.url("claim", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 403, "method rule");
    // A GET the method rule allows cannot carry a request to act as another method: frameworks
    // honour these headers, and the policy only saw GET.
    let r = Resp::from(
        alice
            .client
            .get(env.url("claim", "/"))
            .header("x-http-method-override", "DELETE")
            .header("x-http-method", "DELETE")
            .header("x-method-override", "DELETE")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert_eq!(r.echo().header(h), None, "{h} reached the upstream");
    }
    let r = Resp::from(
        bob.client
            .get(env.url("email", "/"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["reasons"], serde_json::json!(["email-unauthorized"]));
    assert!(env.gw.log_has("authorize"), "authorize log line");

    // Anonymous: browsers are sent to sign in, API clients get 401, never 403.
    let anon = env.browser();
    for host in ["email", "group", "domain", "claim"] {
        let (r, _) = anon.get(&env.url(host, "/")).await;
        assert_eq!(r.status, 302, "{host}");
        let api = anon
            .client
            .get(env.url(host, "/"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 401, "{host}");
    }
}

#[tokio::test]
async fn identity_headers_verify_against_the_published_jwks() {
    let env = env().await;
    let b = signed_in(&env, "alice-id").await;
    assert_eq!(
        b.browse(&env.url("jwt", "/")).await.0.status,
        200,
        "single sign-on onto jwt.localhost"
    );
    let r = Resp::from(
        b.client
            .get(env.url("jwt", "/hello"))
            .header("x-pomerium-jwt-assertion", "forged")
            .header("x-pomerium-claim-email", "ceo@example.com")
            .header("accept", "text/html")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let echo = r.echo();
    let jwt = echo
        .header("x-pomerium-jwt-assertion")
        .expect("assertion sent")
        .to_string();
    assert_ne!(jwt, "forged");
    assert_eq!(
        echo.header("x-pomerium-claim-email"),
        Some("alice@example.com"),
        "claim header overwrites the client's"
    );
    assert_eq!(
        echo.header("x-pomerium-claim-groups"),
        Some("admins,engineering")
    );
    assert!(
        echo.header("x-id-token")
            .is_some_and(|t| t.split('.').count() == 3),
        "${{pomerium.id_token}}"
    );
    assert_eq!(
        echo.header("x-literal"),
        Some("${pomerium.jwt}"),
        "$$ is a literal $, and nothing is re-substituted"
    );
    assert!(!echo.header("cookie").unwrap_or("").contains("_pomerium"));

    // Verify as an upstream would: the JWKS of the route host.
    let jwks_resp = Resp::from(
        b.client
            .get(env.url("jwt", "/.well-known/pomerium/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jwks_resp.status, 200);
    assert_eq!(jwks_resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(jwks_resp.header("cache-control"), Some("max-age=60"));
    assert!(jwks_resp.header("etag").is_some());
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks_resp.body).unwrap();
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid in the JWKS");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["jwt.localhost"]);
    v.set_issuer(&["jwt.localhost"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &jwt,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &v,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "alice-id");
    assert_eq!(claims["user"], "alice-id");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["admins", "engineering"])
    );
    assert_eq!(claims["name"], "Alice");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(claims["sid"].as_str().is_some());

    // Eve has no groups: `[]`, never null.
    let eve = signed_in(&env, "eve-id").await;
    let (r, _) = eve.browse(&env.url("jwt", "/")).await;
    let jwt = r
        .echo()
        .header("x-pomerium-jwt-assertion")
        .unwrap()
        .to_string();
    assert_eq!(jwt_payload(&jwt)["groups"], serde_json::json!([]));

    // Routes without pass_identity_headers send no assertion, and strip a client's.
    let r = Resp::from(
        b.client
            .get(env.url("app", "/"))
            .header("x-pomerium-jwt-assertion", "forged")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.echo().header("x-pomerium-jwt-assertion"), None);
}

#[tokio::test]
async fn pomerium_endpoints_and_their_traversal_spellings() {
    let env = Env::with_routes(
        "jwt_claims_headers: [email]\nruntime_flags:\n  pomerium_jwt_endpoint: true\n",
        ROUTES,
    )
    .await;
    let anon = env.browser();
    // Traversal spellings are normalised first: they reach the right handler, or the route.
    let (r, _) = anon.get(&env.url("email", "/.pomerium/../x")).await;
    assert_eq!(r.status, 302, "routed as /x, which needs sign-in");
    assert!(r
        .header("location")
        .unwrap()
        .contains("/.pomerium/sign_in?"));
    for spelling in ["/%2epomerium/", "//.pomerium/", "/./.pomerium/"] {
        let (r, _) = anon.get(&env.url("email", spelling)).await;
        assert_eq!(
            r.status, 302,
            "{spelling}: the user page, which needs sign-in"
        );
        let loc = r.header("location").unwrap();
        assert!(
            loc.contains("/.pomerium/sign_in?") && loc.contains("email.localhost"),
            "{spelling}: {loc}"
        );
    }
    let wk = Resp::from(
        anon.client
            .get(env.url("email", "/.well-known/pomerium"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let wk: serde_json::Value = serde_json::from_str(&wk.body).unwrap();
    assert!(wk["jwks_uri"]
        .as_str()
        .unwrap()
        .ends_with("/.well-known/pomerium/jwks.json"));

    let alice = signed_in(&env, "alice-id").await;
    let (page, _) = alice.browse(&env.url("email", "/.pomerium/")).await;
    assert_eq!(page.status, 200);
    for shown in ["alice@example.com", "admins", "Sign out"] {
        assert!(page.body.contains(shown), "user page shows {shown}");
    }
    assert!(!page.body.contains("eyJ"), "no token on the user page");
    let jwt = Resp::from(
        alice
            .client
            .get(env.url("email", "/.pomerium/jwt"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        jwt.status, 200,
        "runtime_flags.pomerium_jwt_endpoint turns /.pomerium/jwt on"
    );
    assert_eq!(jwt.header("content-type"), Some("application/jwt"));
    assert_eq!(jwt.body.split('.').count(), 3);
    let unknown = Resp::from(
        alice
            .client
            .get(env.url("email", "/.pomerium/nope"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        unknown.status, 404,
        "unknown /.pomerium/ paths never reach the app"
    );
}

#[tokio::test]
async fn time_rules_and_cors_preflight() {
    let now = chrono::Utc::now();
    let today = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [now.weekday().num_days_from_monday() as usize];
    let routes = format!(
        "  - from: http://time.localhost\n    to: {{u}}\n    policy:\n      allow:\n        and:\n          - day_of_week: {today}\n          - date: {{after: '{}'}}\n\
         \x20 - from: http://notime.localhost\n    to: {{u}}\n    policy:\n      allow:\n        and:\n          - date: {{before: '2020-01-01'}}\n",
        (now - chrono::Duration::days(1)).to_rfc3339()
    );
    let env = Env::with_routes("", &format!("{ROUTES}{routes}")).await;
    let anon = env.browser();
    assert_eq!(
        anon.get(&env.url("time", "/")).await.0.status,
        200,
        "time rules need no sign-in"
    );
    let (r, _) = anon.get(&env.url("notime", "/")).await;
    assert_eq!(
        r.status, 403,
        "past the date, nobody gets in: no sign-in redirect"
    );

    let pre = anon
        .client
        .request(reqwest::Method::OPTIONS, env.url("cors", "/api"))
        .header("origin", "https://web.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        pre.status(),
        200,
        "a CORS preflight passes without a session"
    );
    let not_pre = anon
        .client
        .request(reqwest::Method::OPTIONS, env.url("cors", "/api"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_pre.status(), 401, "a plain OPTIONS is not a preflight");
    assert_eq!(
        anon.get(&env.url("cors", "/api")).await.0.status,
        302,
        "the preflight rule authenticates nothing else"
    );
}

/// The groups an assertion and the claim headers carry: all of them by default; the global and
/// the route's `jwt_groups_filter`; and with `jwt_groups_filter_infer_from_ppl`, the groups the
/// route's policy names.
#[tokio::test]
async fn groups_filters_limit_the_groups_an_upstream_is_told() {
    let routes = "  - from: http://email.localhost\n    to: {u}\n    pass_identity_headers: true\n    allow_any_authenticated_user: true\n\
\x20 - from: http://group.localhost\n    to: {u}\n    pass_identity_headers: true\n    jwt_groups_filter: [admins]\n    allow_any_authenticated_user: true\n\
\x20 - from: http://claim.localhost\n    to: {u}\n    pass_identity_headers: true\n    jwt_groups_filter_infer_from_ppl: true\n    policy:\n      allow:\n        or:\n          - groups: {has: engineering}\n";
    let env = Env::with_routes(
        "jwt_claims_headers: [groups]\njwt_groups_filter: [auditors]\n",
        routes,
    )
    .await;
    let b = env.browser();
    let told = |host: &'static str| {
        let (b, env) = (&b, &env);
        async move {
            let (r, _) = b.browse(&env.url(host, "/")).await;
            assert_eq!(r.status, 200, "{host}");
            let echo = r.echo();
            let jwt = echo.header("x-pomerium-jwt-assertion").unwrap().to_string();
            (
                jwt_payload(&jwt)["groups"].clone(),
                echo.header("x-pomerium-claim-groups")
                    .unwrap_or("")
                    .to_string(),
            )
        }
    };
    // alice is in admins and engineering; the global filter names a group she is not in.
    for (host, groups, why) in [
        ("email", &[][..], "the global filter applies to every route"),
        (
            "group",
            &["admins"][..],
            "the route's filter adds its groups",
        ),
        ("claim", &["engineering"][..], "inferred from the policy"),
    ] {
        let (jwt, header) = told(host).await;
        assert_eq!(jwt, serde_json::json!(groups), "{why}");
        assert_eq!(header, groups.join(","), "{why}");
    }
}

/// The claims of a JWT (its signature is another test's business).
fn jwt_payload(jwt: &str) -> serde_json::Value {
    serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwt.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap()
}
