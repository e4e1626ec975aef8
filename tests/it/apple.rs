//! Sign in with Apple (`idp_provider: apple`): OpenID Connect, but the answer comes as a
//! cross-site POST to the callback (`response_mode=form_post`), the client secret goes in the
//! token request's body, and there is no userinfo endpoint. Played here by the in-process
//! provider in its Apple mode.

use crate::signin::{Browser, COOKIE_SECRET, SHARED_SECRET};
use crate::support::idp::{Idp, Mode};
use crate::support::{free_port, Gateway, Upstream};

#[tokio::test]
async fn apple_answers_by_form_post_and_the_session_starts() {
    let idp = Idp::start().await;
    idp.set_mode(Mode::Apple);
    idp.set_extra_claims(serde_json::json!({"is_private_email": false}));
    let up = Upstream::echo("app").await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\nauthenticate_service_url: http://authenticate.localhost:{port}\n\
         idp_provider: apple\nidp_provider_url: {}\nidp_client_id: vallum\nidp_client_secret: vallum-secret\n\
         cookie_secret: {COOKIE_SECRET}\nshared_secret: {SHARED_SECRET}\nsignin_rate_limit: 0\n\
         routes:\n  - from: http://app.localhost\n    to: {}\n    policy:\n      allow:\n        and:\n          - email: {{is: alice@example.com}}\n",
        idp.issuer(),
        up.url()
    );
    let gw = Gateway::start_with(port, &text, &[]).await;
    gw.eventually("identity provider discovered", || async {
        gw.log().contains("identity provider discovered")
    })
    .await;
    let b = Browser::resolving(&[
        ("app.localhost", gw.addr()),
        ("authenticate.localhost", gw.addr()),
    ]);
    let start = format!("http://app.localhost:{port}/");
    let (_, hops) = b
        .browse_until(&start, |u| u.starts_with(&idp.issuer()))
        .await;
    let authorize = url::Url::parse(hops.last().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("response_mode").map(String::as_str),
        Some("form_post")
    );
    assert_eq!(
        q.get("scope").map(String::as_str),
        Some("openid name email")
    );

    // Apple's page posts the answer to the callback.
    let (page, _) = b.get(authorize.as_str()).await;
    assert_eq!(page.status, 200);
    let value = |name: &str| {
        page.body
            .split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string()
    };
    let action = page
        .body
        .split("action=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    assert!(action.ends_with("/oauth2/callback"), "{action}");
    let answer = [("code", value("code")), ("state", value("state"))];
    let post_answer = || async { b.client.post(&action).form(&answer).send().await.unwrap() };
    let r = post_answer().await;
    assert_eq!(
        r.status(),
        302,
        "{}\n{}",
        r.text().await.unwrap_or_default(),
        gw.log()
    );
    let next = r.headers()["location"].to_str().unwrap().to_string();
    let (done, hops) = b.browse(&next).await;
    assert_eq!(done.status, 200, "{hops:#?}\n{}\n{}", done.body, gw.log());
    // Another attempt's state cannot be replayed through a POST either.
    assert_ne!(post_answer().await.status(), 302);
}

/// With TLS, the sign-in attempt's cookie for a form-post provider is `SameSite=None; Secure`:
/// Apple's answer is a cross-site POST, which a `Lax` cookie would not come back with.
#[tokio::test]
async fn over_tls_the_attempt_cookie_survives_a_cross_site_post() {
    let idp = Idp::start().await;
    idp.set_mode(Mode::Apple);
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::support::certs::TestCa::new("apple-tls");
    let (cert, key) = ca
        .server(&["app.localhost", "authenticate.localhost"])
        .write(dir.path(), "server");
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ncertificates:\n  - cert: {}\n    key: {}\n\
         authenticate_service_url: https://authenticate.localhost:{port}\n\
         idp_provider: apple\nidp_provider_url: {}\nidp_client_id: vallum\nidp_client_secret: vallum-secret\n\
         cookie_secret: {COOKIE_SECRET}\nshared_secret: {SHARED_SECRET}\nsignin_rate_limit: 0\n\
         routes:\n  - from: https://app.localhost\n    to: http://127.0.0.1:9\n    allow_any_authenticated_user: true\n",
        cert.display(),
        key.display(),
        idp.issuer(),
    );
    let gw = Gateway::start_with(port, &text, &[]).await;
    gw.eventually("identity provider discovered", || async {
        gw.log().contains("identity provider discovered")
    })
    .await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve("app.localhost", addr)
        .resolve("authenticate.localhost", addr)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let get = |u: String| {
        let client = client.clone();
        async move {
            client
                .get(u)
                .header("accept", "text/html")
                .send()
                .await
                .unwrap()
        }
    };
    let first = get(format!("https://app.localhost:{port}/")).await;
    assert_eq!(first.status(), 302);
    let sign_in = first.headers()["location"].to_str().unwrap().to_string();
    let attempt = get(sign_in).await;
    assert_eq!(attempt.status(), 302);
    let cookie = attempt
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.contains("_csrf_"))
        .expect("the attempt cookie");
    assert!(
        cookie.contains("SameSite=None") && cookie.contains("; Secure"),
        "{cookie}"
    );
}
