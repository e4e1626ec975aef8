//! WebAuthn device identity without a browser: the gate in front of a `device` route (302 to the
//! signed device page for browsers, 450 for API clients), the device page's guard rails (CSRF,
//! single-use ceremonies, malformed answers) and the device-type config checks. The ceremony
//! with a real authenticator is the browser suite's (tests/e2e, Chromium's virtual authenticator).

use crate::signin::Env;

const ROUTES: &str = "  - from: http://device.localhost\n    to: {u}\n    policy:\n      allow:\n        and:\n          - authenticated_user: true\n          - device: {type: enclave_only}\n";

async fn signed_in(env: &Env) -> crate::signin::Browser {
    let b = env.browser();
    assert_eq!(b.browse(&env.url("app", "/")).await.0.status, 200);
    b
}

async fn post(
    b: &crate::signin::Browser,
    url: &str,
    fields: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let r = b
        .client
        .post(url)
        .header("accept", "application/json")
        .form(fields)
        .send()
        .await
        .unwrap();
    crate::support::status_and_json(r).await
}

#[tokio::test]
async fn a_device_route_sends_browsers_to_the_device_page_and_answers_450_to_apis() {
    let env = Env::with_routes("", ROUTES).await;
    let b = signed_in(&env).await;
    let target = env.url("device", "/report?q=1");

    // A browser (after single sign-on to this host): to the signed device page on the
    // authenticate host, type preselected.
    let (resp, hops) = b
        .browse_until(&target, |u| u.contains("/.pomerium/webauthn"))
        .await;
    assert_eq!(resp.status, 302, "{hops:#?}\n{}", env.gw.log());
    let loc = hops.last().unwrap().to_string();
    assert!(
        loc.starts_with(&env.url("authenticate", "/.pomerium/webauthn?")),
        "{loc}"
    );
    assert!(loc.contains("pomerium_device_type=enclave_only"), "{loc}");
    assert!(loc.contains("pomerium_redirect_uri="), "{loc}");

    // An API client with the same session: 450 with Pomerium's reason.
    let r = b
        .client
        .get(&target)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 450);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "device-unauthenticated");

    // Anonymous: sign in first (a device belongs to a user).
    let anon = env.browser();
    let (resp, _) = anon.get(&target).await;
    assert_eq!(resp.status, 302);
    assert!(resp
        .header("location")
        .unwrap()
        .contains("/.pomerium/sign_in?"));

    // The device page renders with the enrolled list empty and the type preselected.
    let (page, _) = b.get(&loc).await;
    assert_eq!(page.status, 200);
    assert!(page
        .body
        .contains("<option value=\"enclave_only\" selected>"));
    // A tampered signature is refused.
    let (bad, _) = b
        .get(&loc.replace("pomerium_signature=", "pomerium_signature=x"))
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn the_device_page_refuses_forged_replayed_and_malformed_ceremonies() {
    let env = Env::with_routes("", ROUTES).await;
    let b = signed_in(&env).await;
    let page_url = env.url("authenticate", "/.pomerium/webauthn");
    let (page, _) = b.get(&page_url).await;
    assert_eq!(page.status, 200, "{}", env.gw.log());
    let csrf = page
        .body
        .split("const CSRF=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string();
    assert!(!csrf.is_empty());

    // Cross-site request forgery: no token, or another session's token.
    let (st, _) = post(&b, &page_url, &[("action", "register-begin")]).await;
    assert_eq!(st, 403);
    let other = signed_in(&env).await;
    let (st, _) = post(
        &other,
        &page_url,
        &[("action", "register-begin"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(st, 403, "a token is bound to its session");

    // Begin: the relying party is the authenticate host; the platform attachment is asked for.
    let (st, opts) = post(
        &b,
        &page_url,
        &[
            ("action", "register-begin"),
            ("csrf", &csrf),
            ("type", "enclave_only"),
        ],
    )
    .await;
    assert_eq!(st, 200, "{opts}");
    assert_eq!(opts["publicKey"]["rp"]["id"], "authenticate.localhost");
    assert_eq!(
        opts["publicKey"]["authenticatorSelection"]["authenticatorAttachment"],
        "platform"
    );
    // A forged answer does not verify, and the ceremony is then used up.
    let forged = serde_json::json!({
        "id": "AAAA", "rawId": "AAAA", "type": "public-key", "extensions": {},
        "response": {"attestationObject": "AAAA", "clientDataJSON": "AAAA"}
    })
    .to_string();
    let (st, body) = post(
        &b,
        &page_url,
        &[
            ("action", "register-finish"),
            ("csrf", &csrf),
            ("credential", &forged),
        ],
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("does not verify"),
        "{body}"
    );
    let (st, body) = post(
        &b,
        &page_url,
        &[
            ("action", "register-finish"),
            ("csrf", &csrf),
            ("credential", &forged),
        ],
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no enrolment in progress"),
        "{body}"
    );
    // Malformed JSON, unknown types and actions, proving with nothing enrolled.
    post(
        &b,
        &page_url,
        &[("action", "register-begin"), ("csrf", &csrf)],
    )
    .await;
    let (st, body) = post(
        &b,
        &page_url,
        &[
            ("action", "register-finish"),
            ("csrf", &csrf),
            ("credential", "{not json"),
        ],
    )
    .await;
    assert_eq!(st, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("malformed credential"));
    for (action, t, needle) in [
        ("register-begin", "yubikey", "unknown device type"),
        ("authenticate-begin", "", "no enrolled device"),
        ("launch", "", "unknown action"),
    ] {
        let (st, body) = post(
            &b,
            &page_url,
            &[("action", action), ("csrf", &csrf), ("type", t)],
        )
        .await;
        assert_eq!(st, 400, "{action}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{action}: {body}"
        );
    }
    // Without a session the page does not start ceremonies.
    let anon = env.browser();
    let (st, _) = post(&anon, &page_url, &[("action", "register-begin")]).await;
    assert_eq!(st, 401);
}

/// Enough sign-in settings for identity policies to load (nothing is contacted by check-config).
const AUTH: &str = "insecure_server: true\nauthenticate_service_url: http://authenticate.localhost\nidp_provider: oidc\nidp_provider_url: http://127.0.0.1:1\nidp_client_id: c\nidp_client_secret: s\ncookie_secret: 8GIP1sU0aqXJZ8T8XkL1zB0cR2P0kTmYxw0a3DkBwsw=\nshared_secret: Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=\n";

#[tokio::test]
async fn device_types_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, needle) in [
        (
            "routes:\n  - from: http://a.localhost\n    to: http://127.0.0.1:1\n    policy:\n      allow:\n        and:\n          - device: {type: yubikey}\n",
            "routes[0].policy",
            "device type \"yubikey\" is not configured",
        ),
        (
            "device_types:\n  - id: keys\n    attachment: usb\nroutes: []\n",
            "device_types[0].attachment",
            "cross_platform",
        ),
        (
            "device_types:\n  - id: keys\n    backup: sometimes\nroutes: []\n",
            "device_types[0].backup",
            "forbidden",
        ),
        (
            "device_types:\n  - id: 'a b'\nroutes: []\n",
            "device_types[0].id",
            "letters",
        ),
    ] {
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, format!("{AUTH}{text}")).unwrap();
        let out = std::process::Command::new(crate::support::bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(err.contains(key) && err.contains(needle), "{text}: {err}");
    }
    // A custom type is accepted and usable by a policy.
    std::fs::write(
        dir.path().join("ok.yaml"),
        format!("{AUTH}device_types:\n  - id: yubikey\n    attachment: cross_platform\n    user_verification: required\nroutes:\n  - from: http://a.localhost\n    to: http://127.0.0.1:1\n    policy:\n      allow:\n        and:\n          - device: {{type: yubikey}}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(crate::support::bin())
        .arg("check-config")
        .arg(dir.path().join("ok.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
