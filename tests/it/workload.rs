//! Workload identities (`identity_providers`, `bearer_token_format: jwt`): JWTs from configured
//! external issuers — here two local issuers the test runs, each with a discovery document and a
//! JWKS — accepted as `Authorization: Bearer` on the routes that allow them, their claims seen by
//! PPL, the identity headers and the authorize log; every other token refused with 401.

use crate::signin::Env;
use crate::support::idp::Idp;
use crate::support::upstream::Upstream;
use crate::support::{client, free_port, Gateway};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token `idp` signs: `iss` is the issuer, valid five minutes, with `extra` claims.
fn token(idp: &Idp, aud: &str, sub: &str, extra: Value) -> String {
    let mut c =
        json!({"iss": idp.issuer(), "aud": aud, "sub": sub, "iat": now(), "exp": now() + 300});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    idp.sign_jwt(c)
}

struct Call {
    status: u16,
    www_authenticate: Option<String>,
    body: String,
}

async fn call(gw: &Gateway, host: &str, bearer: &str, cookie: Option<&str>) -> Call {
    let mut req = client()
        .get(gw.url("/"))
        .header("host", format!("{host}.localhost:{}", gw.port))
        .header("accept", "application/json");
    if !bearer.is_empty() {
        req = req.header("authorization", format!("Bearer {bearer}"));
    }
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let www_authenticate = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    Call {
        status,
        www_authenticate,
        body: r.text().await.unwrap(),
    }
}

#[tokio::test]
async fn workload_tokens_from_configured_issuers() {
    let ci = Idp::start().await;
    let k8s = Idp::start().await;
    let stranger = Idp::start().await;
    let rsa_only = Idp::start().await;
    let extra = format!(
        "jwt_claims_headers: [repository]\n\
         identity_providers:\n  ci:\n    issuer: {ci}\n    audiences: [https://vallum.example]\n\
         \x20 k8s:\n    issuer: {k8s}\n    jwks_url: {k8s}/jwks\n    audiences: [vallum, other]\n    supported_algs: [ES256]\n\
         \x20 rsa:\n    issuer: {rsa}\n    audiences: [https://vallum.example]\n    supported_algs: [RS256, PS256]\n",
        ci = ci.issuer(),
        k8s = k8s.issuer(),
        rsa = rsa_only.issuer()
    );
    let routes = "  - from: http://jwt.localhost\n    to: {u}\n    bearer_token_format: jwt\n    pass_identity_headers: true\n    policy:\n      allow:\n        and:\n          - claim/repository: acme/app\n\
                  \x20 - from: http://k8sonly.localhost\n    to: {u}\n    bearer_token_format: jwt\n    identity_providers: [k8s]\n    policy:\n      allow:\n        or:\n          - user:\n              is: k8s/system:serviceaccount:ci:builder\n";
    let env = Env::with_routes(&extra, routes).await;
    let gw = &env.gw;
    let aud = "https://vallum.example";
    let good = token(
        &ci,
        aud,
        "repo:acme/app:ref:main",
        json!({"repository": "acme/app"}),
    );

    // An allowed token: the upstream sees who, as claim headers and in the signed assertion.
    let ok = call(gw, "jwt", &good, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let echo: crate::support::upstream::Echo = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(echo.header("x-pomerium-claim-repository"), Some("acme/app"));
    let assertion = echo.header("x-pomerium-jwt-assertion").unwrap();
    let payload = assertion.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "ci/repo:acme/app:ref:main", "{claims}");
    assert!(
        gw.log_has("ci/repo:acme/app:ref:main"),
        "the authorize log names the caller"
    );

    let fetches = ci.jwks_fetches.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(call(gw, "jwt", &good, None).await.status, 200);
    }
    assert_eq!(
        ci.jwks_fetches.load(Ordering::SeqCst),
        fetches,
        "keys are cached"
    );

    let mut tampered = good.clone();
    tampered.truncate(good.len() - 4);
    tampered.push_str("AAAA");
    let cases = [
        (
            "jwt",
            token(&ci, aud, "repo:acme/other", json!({"repository": "acme/other"})),
            403,
            "the policy decides on the claims",
        ),
        ("jwt", token(&ci, "https://elsewhere", "s", json!({})), 401, "another audience"),
        (
            "jwt",
            ci.sign_jwt(json!({"iss": ci.issuer(), "aud": aud, "sub": "s", "iat": now() - 900, "exp": now() - 600})),
            401,
            "expired",
        ),
        (
            "jwt",
            ci.sign_jwt(json!({"iss": ci.issuer(), "aud": aud, "sub": "s", "nbf": now() + 600, "exp": now() + 900})),
            401,
            "not yet valid",
        ),
        ("jwt", tampered, 401, "a tampered signature"),
        ("jwt", token(&stranger, aud, "s", json!({})), 401, "an issuer not configured"),
        (
            "jwt",
            stranger.sign_jwt(json!({"iss": ci.issuer(), "aud": aud, "sub": "s", "exp": now() + 300})),
            401,
            "a configured issuer's name, another's key",
        ),
        ("jwt", "not-a-jwt".into(), 401, "not a JWT"),
        (
            "jwt",
            token(&rsa_only, aud, "s", json!({"repository": "acme/app"})),
            401,
            "an algorithm the issuer's supported_algs leaves out",
        ),
        ("k8sonly", good.clone(), 401, "an issuer the route does not accept"),
        (
            "k8sonly",
            token(&k8s, "vallum", "system:serviceaccount:ci:builder", json!({})),
            200,
            "the route's own issuer, the user criterion on provider/sub",
        ),
        (
            "k8sonly",
            token(&k8s, "other", "system:serviceaccount:ci:deployer", json!({})),
            403,
            "another subject of that issuer",
        ),
    ];
    for (host, t, status, case) in cases {
        let r = call(gw, host, &t, None).await;
        let log = || {
            let l = gw.log();
            l.lines()
                .filter(|l| l.contains("workload"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(r.status, status, "{case}: {}\n{}", r.body, log());
        if status == 401 {
            assert_eq!(
                r.www_authenticate.as_deref(),
                Some("Bearer error=\"invalid_token\""),
                "{case}"
            );
        }
    }
    assert!(gw.log_has("workload bearer token refused"));
    // A route without the jwt format does not read the token: still anonymous there.
    let other = call(gw, "app", &good, None).await;
    assert_eq!((other.status, other.www_authenticate), (401, None));

    // A bearer token beside a session cookie: which one speaks is not guessed.
    for cookie in [
        "_pomerium=anything",
        "_pomerium_0123456789ab=a-route-provider-session",
    ] {
        let both = call(gw, "jwt", &good, Some(cookie)).await;
        assert_eq!(both.status, 400, "{cookie}: {}", both.body);
    }
    // No token at all: told to bring one.
    let none = call(gw, "jwt", "", None).await;
    assert_eq!(
        (none.status, none.www_authenticate.as_deref()),
        (401, Some("Bearer"))
    );

    // The issuer rotates its key: the new kid is fetched once, then tokens verify again.
    ci.rotate_key("key-2");
    let before = ci.jwks_fetches.load(Ordering::SeqCst);
    let rotated = token(
        &ci,
        aud,
        "repo:acme/app:ref:main",
        json!({"repository": "acme/app"}),
    );
    assert_eq!(call(gw, "jwt", &rotated, None).await.status, 200);
    assert_eq!(ci.jwks_fetches.load(Ordering::SeqCst), before + 1);
    // Another new kid right after: no refetch within the minimum interval, however many tokens.
    ci.rotate_key("key-3");
    let unknown = token(
        &ci,
        aud,
        "repo:acme/app:ref:main",
        json!({"repository": "acme/app"}),
    );
    let mut calls = Vec::new();
    for _ in 0..20 {
        calls.push(call(gw, "jwt", &unknown, None));
    }
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status, 401);
    }
    assert_eq!(
        ci.jwks_fetches.load(Ordering::SeqCst),
        before + 1,
        "refetches are bounded"
    );
}

/// A gateway that signs nobody in: workloads only, no `authenticate_service_url`, no IdP.
#[tokio::test]
async fn a_machine_only_gateway_needs_no_sign_in_settings() {
    let issuer = Idp::start().await;
    let up = Upstream::echo("api").await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\n\
         identity_providers:\n  gha:\n    issuer: {iss}\n    audiences: [api]\n\
         routes:\n  - from: http://api.localhost\n    to: {u}\n    bearer_token_format: jwt\n    policy:\n      allow:\n        and:\n          - claim/repository_owner: acme\n",
        iss = issuer.issuer(),
        u = up.url()
    );
    let gw = Gateway::start_with(port, &text, &[]).await;
    let t = |owner: &str| token(&issuer, "api", "repo:x", json!({"repository_owner": owner}));
    assert_eq!(call(&gw, "api", &t("acme"), None).await.status, 200);
    assert_eq!(call(&gw, "api", &t("evil"), None).await.status, 403);
    let none = call(&gw, "api", "", None).await;
    assert_eq!(
        (none.status, none.www_authenticate.as_deref()),
        (401, Some("Bearer"))
    );
}

#[test]
fn bad_workload_settings_are_refused_with_the_key_named() {
    let (ok, out) = crate::support::check_config(
        "insecure_server: true\naddress: 127.0.0.1:0\n\
         identity_providers:\n  gha:\n    issuer: https://token.actions.githubusercontent.com\n    audiences: []\n\
         routes:\n  - from: http://a.localhost\n    to: http://127.0.0.1:1\n    bearer_token_format: jwt\n    identity_providers: [gitlab]\n    allow_public_unauthenticated_access: true\n\
         \x20 - from: http://b.localhost\n    to: http://127.0.0.1:1\n    identity_providers: [gha]\n    allow_public_unauthenticated_access: true\n",
    );
    assert!(!ok, "{out}");
    for want in [
        "identity_providers.gha.audiences",
        "routes[0].identity_providers: \"gitlab\" is not in the global identity_providers",
        "routes[1].identity_providers: only applies with bearer_token_format: jwt",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
}
