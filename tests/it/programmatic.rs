//! Access without a browser cookie: the programmatic login flow, each bearer form, tokens that
//! die with their session, the redirect whitelist against the usual bypass spellings, and
//! `vallum login` end to end.

use crate::signin::{csrf_field, Env};
use crate::support::client;

fn token_from(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "pomerium_jwt")
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("no pomerium_jwt in {url}"))
}

#[tokio::test]
async fn programmatic_login_and_bearer_forms() {
    let env = Env::start("").await;
    let b = env.browser();
    let back = "http://127.0.0.1:45678/cb?state=1";
    let api = |uri: &str| {
        let mut u = url::Url::parse(&env.url("app", "/.pomerium/api/v1/login")).unwrap();
        u.query_pairs_mut()
            .append_pair("pomerium_redirect_uri", uri);
        u.to_string()
    };
    let (r, _) = b.get(&api(back)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let sign_in = r.body.trim().to_string();
    assert!(sign_in.contains("/.pomerium/sign_in?"), "{sign_in}");

    // The user signs in in a browser; it lands on the local listener with the token.
    let (_, hops) = b
        .browse_until(&sign_in, |u| u.starts_with("http://127.0.0.1:45678/"))
        .await;
    let landed = hops.last().unwrap();
    assert!(
        landed.starts_with("http://127.0.0.1:45678/cb?state=1&pomerium_jwt="),
        "{landed}"
    );
    let token = token_from(landed);

    let app = env.url("app", "/api/data");
    let host = format!("app.localhost:{}", env.gw.port);
    let send = |name: &'static str, value: String, host: String| {
        let c = client();
        let url = env.gw.url("/api/data");
        async move {
            c.get(url)
                .header("host", host)
                .header(name, value)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
        }
    };
    for (name, value) in [
        ("authorization", format!("Pomerium {token}")),
        ("authorization", format!("Bearer Pomerium-{token}")),
        ("x-pomerium-authorization", token.clone()),
    ] {
        let r = send(name, value.clone(), host.clone()).await;
        assert_eq!(r.status(), 200, "{name}: {value:.30}…");
        let echo: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let headers = echo["headers"].as_object().unwrap();
        assert!(
            !headers.contains_key("authorization"),
            "stripped: {headers:?}"
        );
        assert!(!headers.contains_key("x-pomerium-authorization"));
    }
    let r = send(
        "authorization",
        format!("Pomerium {token}"),
        format!("app2.localhost:{}", env.gw.port),
    )
    .await;
    assert_eq!(
        r.status(),
        401,
        "the token is bound to the host it was issued for"
    );
    let r = send("authorization", "Pomerium forged".into(), host.clone()).await;
    assert_eq!(r.status(), 401);
    let _ = app;

    // Sign out in the browser: the token dies with the session.
    let sign_out = env.url("app", "/.pomerium/sign_out");
    let (page, _) = b.get(&sign_out).await;
    let r = b
        .client
        .post(&sign_out)
        .form(&[("csrf", csrf_field(&page.body))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    for (name, value) in [
        ("authorization", format!("Pomerium {token}")),
        ("x-pomerium-authorization", token.clone()),
    ] {
        assert_eq!(
            send(name, value, host.clone()).await.status(),
            401,
            "revoked"
        );
    }
}

#[tokio::test]
async fn programmatic_redirects_only_to_the_whitelist() {
    let env = Env::start("").await;
    let b = env.browser();
    // (redirect target, source)
    let refused = [
        ("http://evil.example/cb", "Pomerium CVE-2021-29651"),
        ("http://localhost.evil.example/cb", "suffix look-alike"),
        ("http://localhost@evil.example/cb", "userinfo confusion"),
        ("http://evil.example/#localhost", "fragment confusion"),
        ("http://127.0.0.1.nip.io/cb", "wildcard DNS look-alike"),
        ("javascript://localhost/%0aalert(1)", "script scheme"),
        ("//localhost/cb", "scheme-relative"),
    ];
    for (target, source) in refused {
        let mut u = url::Url::parse(&env.url("app", "/.pomerium/api/v1/login")).unwrap();
        u.query_pairs_mut()
            .append_pair("pomerium_redirect_uri", target);
        assert_eq!(b.get(u.as_str()).await.0.status, 400, "{target} ({source})");
    }
    let custom = Env::start("programmatic_redirect_domain_whitelist: [cli.example.com]\n").await;
    let mut u = url::Url::parse(&custom.url("app", "/.pomerium/api/v1/login")).unwrap();
    u.query_pairs_mut()
        .append_pair("pomerium_redirect_uri", "https://cli.example.com/cb");
    assert_eq!(custom.browser().get(u.as_str()).await.0.status, 200);
    let mut u = url::Url::parse(&custom.url("app", "/.pomerium/api/v1/login")).unwrap();
    u.query_pairs_mut()
        .append_pair("pomerium_redirect_uri", "http://localhost:1/cb");
    assert_eq!(
        custom.browser().get(u.as_str()).await.0.status,
        400,
        "localhost is not implied once a whitelist is set"
    );
    // The token endpoint itself only works through a signed link.
    let (r, _) = b
        .get(&env.url(
            "app",
            "/.pomerium/programmatic?pomerium_redirect_uri=http%3A%2F%2Flocalhost%3A1%2F",
        ))
        .await;
    assert_eq!(r.status, 400);
}
