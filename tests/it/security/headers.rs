//! Identity headers are the gateway's own: whatever a client sends under those names never
//! reaches an upstream, and forwarding headers are believed only from trusted proxies.

use super::public_gateway;
use reqwest::Method;

#[tokio::test]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let (gw, _up) = public_gateway(
        "headers_with_underscores_action: allow\njwt_claims_headers: [email]\n",
        "  - from: http://set.test\n    to: {u}\n    allow_public_unauthenticated_access: true\n    set_request_headers:\n      X-Static: from-vallum\n",
    )
    .await;
    // (header sent, header the upstream would read, source)
    let cases = [
        (
            "X-Pomerium-Jwt-Assertion",
            "x-pomerium-jwt-assertion",
            "Pomerium's own assertion header",
        ),
        (
            "x-pomerium-claim-email",
            "x-pomerium-claim-email",
            "Pomerium claim headers",
        ),
        (
            "X_Pomerium_Claim_Email",
            "x_pomerium_claim_email",
            "underscore spelling read as dashes by some frameworks (nginx/Apache CGI)",
        ),
        (
            "X-Forwarded-User",
            "x-forwarded-user",
            "oauth2-proxy / Authelia upstream convention",
        ),
        (
            "X-Forwarded-Email",
            "x-forwarded-email",
            "oauth2-proxy upstream convention",
        ),
        (
            "X-Auth-Request-Email",
            "x-auth-request-email",
            "oauth2-proxy auth_request headers",
        ),
        (
            "X_Auth_Request_User",
            "x_auth_request_user",
            "the same, underscore spelling",
        ),
        (
            "Remote-User",
            "remote-user",
            "Authelia / Apache REMOTE_USER",
        ),
        (
            "X-Goog-Authenticated-User-Email",
            "x-goog-authenticated-user-email",
            "Google IAP header",
        ),
        (
            "Cf-Access-Jwt-Assertion",
            "cf-access-jwt-assertion",
            "Cloudflare Access header",
        ),
        (
            "X-Email",
            "x-email",
            "the claim header name Vallum would set",
        ),
    ];
    for (sent, read, source) in cases {
        let r = gw
            .request(
                Method::GET,
                "app.test",
                "/",
                &[(sent, "ceo@victim.example")],
            )
            .await;
        assert_eq!(r.status, 200, "{sent}: {r:?}");
        assert_eq!(
            r.echo().header(read),
            None,
            "{sent} ({source}) was forwarded"
        );
    }
    // A header the route sets cannot be pre-set by the client nor nominated away by
    // `Connection` (Traefik CVE-2024-45410 class: hop-by-hop nomination of forwarding headers).
    let r = gw
        .request(
            Method::GET,
            "set.test",
            "/",
            &[("x-static", "from-client"), ("connection", "X-Static")],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echo().header("x-static"), Some("from-vallum"));
    let r = gw
        .request(
            Method::GET,
            "set.test",
            "/",
            &[("connection", "X-Forwarded-For")],
        )
        .await;
    assert_eq!(
        r.status, 400,
        "nominating a forwarding header is refused outright"
    );
}

#[tokio::test]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let forged = [
        ("X-Forwarded-For", "10.9.9.9"),
        ("Forwarded", "for=10.9.9.9;proto=https"),
        ("X-Real-IP", "10.9.9.9"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Forwarded-Host", "admin.internal"),
        ("X-Forwarded-Proto", "https"),
    ];
    let (untrusted, _u1) = public_gateway(
        "",
        "  - from: http://office.test\n    to: {u}\n    policy:\n      allow:\n        and:\n          - source_ip: 10.9.9.0/24\n",
    )
    .await;
    let r = untrusted
        .request(Method::GET, "app.test", "/", &forged)
        .await;
    let e = r.echo();
    // (header, what the upstream sees, source)
    for (h, want, source) in [
        (
            "x-forwarded-for",
            Some("127.0.0.1"),
            "XFF spoofing: replaced by the peer address",
        ),
        ("forwarded", None, "RFC 7239 spoofing"),
        ("x-real-ip", None, "X-Real-IP spoofing"),
        (
            "x-original-url",
            None,
            "IIS/Symfony X-Original-URL routing bypass",
        ),
        ("x-rewrite-url", None, "X-Rewrite-URL routing bypass"),
        (
            "x-forwarded-host",
            Some("app.test"),
            "host spoofing: Vallum's own value",
        ),
        (
            "x-forwarded-proto",
            Some("http"),
            "scheme spoofing: Vallum's own value",
        ),
    ] {
        assert_eq!(e.header(h), want, "{h} ({source})");
    }
    let r = untrusted
        .request(Method::GET, "office.test", "/", &forged)
        .await;
    assert_eq!(
        r.status, 403,
        "source_ip rules see the peer, not a claimed address"
    );

    let (trusted, _u2) = public_gateway(
        "trusted_proxies: [127.0.0.1]\n",
        "  - from: http://office.test\n    to: {u}\n    policy:\n      allow:\n        and:\n          - source_ip: 10.9.9.0/24\n",
    )
    .await;
    let r = trusted
        .request(
            Method::GET,
            "app.test",
            "/",
            &[("x-forwarded-for", "10.9.9.9")],
        )
        .await;
    assert_eq!(
        r.echo().header("x-forwarded-for"),
        Some("10.9.9.9, 127.0.0.1"),
        "appended behind a trusted proxy"
    );
    let r = trusted
        .request(
            Method::GET,
            "office.test",
            "/",
            &[("x-forwarded-for", "10.9.9.9")],
        )
        .await;
    assert_eq!(
        r.status, 200,
        "behind a trusted proxy, the client is the right-most untrusted XFF entry"
    );
    let r = trusted
        .request(
            Method::GET,
            "office.test",
            "/",
            &[("x-forwarded-for", "10.9.9.9, 192.0.2.7")],
        )
        .await;
    assert_eq!(
        r.status, 403,
        "an address the client prepended is not believed"
    );
}
