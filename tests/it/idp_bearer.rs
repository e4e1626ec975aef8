//! Machine-to-machine access with the IdP's own tokens (`bearer_token_format`): JWT access
//! tokens checked against the allowed audiences, opaque ones at userinfo, ID tokens with this
//! client as audience; expired, foreign and mis-addressed tokens refused.

use crate::signin::Env;
use crate::support::client;
use serde_json::json;

#[tokio::test]
async fn idp_tokens_as_bearer() {
    let env = Env::with_routes(
        "bearer_token_format: idp_access_token\nidp_access_token_allowed_audiences: [api://vallum]\n",
        "  - from: http://email.localhost\n    to: {u}\n    policy:\n      allow:\n        and:\n          - groups:\n              has: admins\n\
         \x20 - from: http://claim.localhost\n    to: {u}\n    bearer_token_format: idp_identity_token\n    allow_any_authenticated_user: true\n",
    )
    .await;
    let iss = env.idp.config();
    let issuer = iss
        .lines()
        .find_map(|l| l.strip_prefix("idp_provider_url: "))
        .unwrap()
        .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |aud: &str, iss: &str, exp: u64, sub: &str| {
        env.idp.sign_jwt(json!({
            "iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": exp,
            "email": "svc@example.com", "email_verified": true, "groups": ["admins"],
        }))
    };
    let get = |host: &'static str, bearer: String| {
        let url = env.gw.url("/");
        let port = env.gw.port;
        async move {
            client()
                .get(url)
                .header("host", format!("{host}.localhost:{port}"))
                .header("authorization", format!("Bearer {bearer}"))
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // (host, token, status, case)
    let client_id = env.idp.client_id.clone();
    let cases = [
        (
            "app",
            token("api://vallum", &issuer, now + 300, "svc-1"),
            200,
            "JWT access token for an allowed audience",
        ),
        (
            "email",
            token("api://vallum", &issuer, now + 300, "svc-1"),
            200,
            "policy sees its groups",
        ),
        (
            "app",
            token("api://other", &issuer, now + 300, "svc-1"),
            401,
            "an audience not on the list",
        ),
        (
            "app",
            token("api://vallum", "https://evil.example", now + 300, "svc-1"),
            401,
            "another issuer",
        ),
        (
            "app",
            token("api://vallum", &issuer, now - 3600, "svc-1"),
            401,
            "expired",
        ),
        (
            "app",
            env.idp.issue_access_token("alice-id"),
            200,
            "opaque access token, checked at userinfo",
        ),
        (
            "app",
            "at-made-up".to_string(),
            401,
            "opaque token the IdP does not know",
        ),
        (
            "claim",
            token(&client_id, &issuer, now + 300, "svc-2"),
            200,
            "ID token with this client as audience",
        ),
        (
            "claim",
            token("api://vallum", &issuer, now + 300, "svc-2"),
            401,
            "ID token for another audience",
        ),
    ];
    for (host, t, status, case) in cases {
        assert_eq!(get(host, t).await, status, "{case}");
    }
    // A token for a user the policy does not allow.
    let mut claims = json!({"iss": issuer, "aud": "api://vallum", "sub": "svc-3", "iat": now, "exp": now + 300, "groups": ["engineering"]});
    claims["email"] = json!("svc3@example.com");
    assert_eq!(
        get("email", env.idp.sign_jwt(claims)).await,
        403,
        "policy still decides"
    );
    assert!(env.gw.log_has("IdP bearer token refused"));
}
