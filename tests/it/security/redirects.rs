//! Redirect targets: a sign-in link is HMAC-signed over its target, every parameter appears
//! once, and an over-long target is refused, so no query string can send a user elsewhere.

use crate::signin::Env;

#[tokio::test]
async fn unsigned_polluted_and_oversized_targets_are_refused() {
    let env = Env::start("").await;
    let b = env.browser();
    let sign_in = env.url("authenticate", "/.pomerium/sign_in");
    // (target, source)
    let targets = [
        ("https://evil.example/", "plain open redirect"),
        ("//evil.example/", "scheme-relative"),
        ("/\\evil.example", "oauth2-proxy CVE-2020-5233 (backslash)"),
        ("/\t/evil.example", "oauth2-proxy CVE-2020-11053 (tab)"),
        (
            "https://app.localhost.evil.example/",
            "suffix look-alike (oauth2-proxy CVE-2021-21291 class)",
        ),
        (
            "https://evil.example\\@app.localhost/",
            "userinfo/backslash confusion",
        ),
        ("javascript:alert(1)", "script scheme"),
        (
            "http://localhost:1/",
            "programmatic-login style (Pomerium CVE-2021-29651 class)",
        ),
    ];
    for (target, source) in targets {
        let mut u = url::Url::parse(&sign_in).unwrap();
        u.query_pairs_mut()
            .append_pair("pomerium_redirect_uri", target);
        assert_eq!(
            b.get(u.as_str()).await.0.status,
            400,
            "unsigned {target:?} ({source})"
        );
    }
    // A genuine signed link with a second, different target appended (parameter pollution).
    let (_, hops) = b
        .browse_until(&env.url("app", "/"), |u| u.contains("/.pomerium/sign_in?"))
        .await;
    let real = hops.last().unwrap().clone();
    for extra in [
        "&pomerium_redirect_uri=https%3A%2F%2Fevil.example%2F",
        "&pomerium_signature=x",
        "&pomerium_expiry=99999999999",
    ] {
        assert_eq!(
            b.get(&format!("{real}{extra}")).await.0.status,
            400,
            "repeated signed parameter {extra} (HTTP parameter pollution)"
        );
    }
    assert_eq!(
        b.get(&real).await.0.status,
        302,
        "the genuine link still works"
    );
    // A URL too long to carry through sign-in.
    let long = format!("/{}", "a".repeat(5000));
    let (r, _) = b.get(&env.url("app", &long)).await;
    assert_eq!(r.status, 414, "over-long return URL");
}
