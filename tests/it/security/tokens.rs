//! ID tokens and the claims policy reads: only signatures by the IdP's published keys, no key
//! material taken from the token, claims of the wrong type invalid (not absent), unverified
//! emails and multi-`@` addresses kept away from `email`/`domain` rules.

use crate::signin::Env;
use crate::support::idp::Mode;
use serde_json::json;

const ROUTES: &str = concat!(
    "  - from: http://email.localhost\n    to: {u}\n    policy:\n      allow:\n        and:\n          - email:\n              is: alice@example.com\n",
    "  - from: http://domain.localhost\n    to: {u}\n    policy:\n      allow:\n        and:\n          - domain:\n              is: evil.example\n",
    "  - from: http://claim.localhost\n    to: {u}\n    allow_unverified_email: true\n    policy:\n      allow:\n        and:\n          - email:\n              is: alice@example.com\n",
);

#[tokio::test]
async fn forged_and_mistyped_tokens_make_no_session() {
    let env = Env::with_routes("", ROUTES).await;
    // (misbehaviour, source)
    let modes = [
        (
            Mode::ZeroSignature,
            "ES256 r = s = 0 (Java CVE-2022-21449, \"psychic signatures\")",
        ),
        (
            Mode::KeysFromHeader,
            "key material from the token header: jku/x5u/jwk (CVE-2018-0114 class)",
        ),
        (Mode::AlgNone, "alg: none (CVE-2015-9235 class)"),
        (
            Mode::Hs256WithPublicKey,
            "HMAC with the public key as secret (algorithm confusion)",
        ),
        (Mode::HugeUserinfo, "unbounded IdP response"),
    ];
    for (mode, source) in modes {
        env.idp.set_mode(mode);
        let (r, hops) = env.browser().browse(&env.url("app", "/")).await;
        assert_eq!(
            r.status, 401,
            "{mode:?} ({source}) must be refused: {hops:#?}"
        );
    }
    env.idp.set_mode(Mode::Honest);
    // (claims, source)
    let mistyped = [
        (
            json!({"email_verified": "true"}),
            "a string where a boolean belongs",
        ),
        (
            json!({"email": ["alice@example.com", "ceo@example.com"]}),
            "an array where a string belongs",
        ),
        (
            json!({"groups": {"admins": true}}),
            "an object where a list of strings belongs",
        ),
        (json!({"groups": ["admins", 7]}), "a list with a non-string"),
    ];
    for (claims, source) in mistyped {
        env.idp.set_extra_claims(claims.clone());
        let (r, _) = env.browser().browse(&env.url("app", "/")).await;
        assert_eq!(r.status, 401, "{claims} ({source}): invalid, not absent");
    }
    env.idp.set_extra_claims(json!({}));
    let (r, _) = env.browser().browse(&env.url("app", "/")).await;
    assert_eq!(r.status, 200, "an honest token still works");
    let log = env.gw.log();
    assert!(
        log.contains("must be a list of strings"),
        "the reason is logged:\n{log}"
    );
}

#[tokio::test]
async fn email_rules_need_a_verified_single_address() {
    let env = Env::with_routes("", ROUTES).await;
    // (extra claims, host, status, source)
    let cases = [
        (json!({}), "email", 200, "verified address matches"),
        (
            json!({"email_verified": false}),
            "email",
            403,
            "unverified address (Pomerium/oauth2-proxy unverified-email takeovers)",
        ),
        (
            json!({"email_verified": null}),
            "email",
            403,
            "no verification claim counts as unverified",
        ),
        (
            json!({"email_verified": false}),
            "claim",
            200,
            "a route that opts out (allow_unverified_email)",
        ),
        (
            json!({"email_verified": false}),
            "app",
            200,
            "rules that do not read the email are unaffected",
        ),
        (
            json!({"email": "alice@example.com@evil.example"}),
            "domain",
            403,
            "two @: no single domain",
        ),
        (
            json!({"email": "bob@evil.example"}),
            "domain",
            200,
            "the control: one @ in the domain",
        ),
    ];
    for (claims, host, status, source) in cases {
        env.idp.set_extra_claims(claims.clone());
        let (r, hops) = env.browser().browse(&env.url(host, "/")).await;
        assert_eq!(r.status, status, "{claims} on {host} ({source}): {hops:#?}");
    }
}
