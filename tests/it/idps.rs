//! Several sign-in providers: a route with its own (`idp_provider_url`, `idp_client_id`, …) and a
//! route whose users choose (`idp_choices`), beside routes on the global provider. Two OpenID
//! providers run here; sessions are kept per provider and never cross.

use crate::signin::{Browser, Env};
use crate::support::idp::Idp;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// `claim.localhost` signs in with `partners`; `group.localhost` lets the user choose.
async fn start(partners: &Idp) -> Env {
    start_with(partners, "").await
}

async fn start_with(partners: &Idp, extra: &str) -> Env {
    let routes = format!(
        "  - from: http://claim.localhost\n    to: {{u}}\n    idp_provider_url: {p}\n    idp_client_id: {id}\n    idp_client_secret: {secret}\n    allow_any_authenticated_user: true\n\
         \x20 - from: http://group.localhost\n    to: {{u}}\n    allow_any_authenticated_user: true\n    idp_choices:\n      - name: Staff\n      - name: Partner <b>SSO</b>\n        idp_provider_url: {p}\n        idp_client_id: {id}\n        idp_client_secret: {secret}\n",
        p = partners.issuer(),
        id = partners.client_id,
        secret = partners.client_secret,
    );
    let env = Env::with_routes(
        &format!("idp_refresh_claims_interval: 1s\n{extra}"),
        &routes,
    )
    .await;
    let discovered = || env.gw.log().matches("identity provider discovered").count();
    env.gw
        .eventually("both providers discovered", || async { discovered() >= 2 })
        .await;
    env
}

async fn user(b: &Browser, env: &Env, host: &str) -> (u16, serde_json::Value) {
    crate::signin::user_json_at(b, env, host).await
}

#[tokio::test]
async fn a_route_with_its_own_provider_keeps_its_own_sessions() {
    let partners = Idp::start().await;
    partners.login_as("bob-id");
    let probes = crate::support::free_port();
    let env = start_with(
        &partners,
        &format!("health_check_addr: 127.0.0.1:{probes}\n"),
    )
    .await;
    let b = env.browser();
    // /status reports the route's own provider beside the global one.
    env.gw
        .eventually("route providers in /status", || async {
            let body = reqwest::get(format!("http://127.0.0.1:{probes}/status"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            body.contains("route providers: 1 of 1 discovered")
        })
        .await;

    // The global provider signs in to app.
    let (r, _) = b.browse(&env.url("app", "/")).await;
    assert_eq!(r.status, 200);
    assert_eq!(user(&b, &env, "app").await.1["email"], "alice@example.com");

    // The partners route does not take that session: it signs in at the partners provider.
    let (r, hops) = b.browse(&env.url("claim", "/x")).await;
    assert_eq!(r.status, 200, "{hops:#?}");
    assert!(
        hops.iter()
            .any(|h| h.starts_with(&format!("{}/authorize", partners.issuer()))),
        "{hops:#?}"
    );
    assert_eq!(partners.authorize_hits.load(Ordering::SeqCst), 1);
    assert_eq!(user(&b, &env, "claim").await.1["email"], "bob@example.com");
    let jar = b.cookie_for(&env.url("claim", "/")).unwrap_or_default();
    assert!(jar.contains("_pomerium_"), "its own cookie: {jar}");

    // Both sessions live side by side; neither provider is asked again.
    let global_hits = env.idp.authorize_hits.load(Ordering::SeqCst);
    assert_eq!(b.browse(&env.url("app", "/")).await.0.status, 200);
    assert_eq!(b.browse(&env.url("claim", "/")).await.0.status, 200);
    assert_eq!(user(&b, &env, "app").await.1["email"], "alice@example.com");
    assert_eq!(env.idp.authorize_hits.load(Ordering::SeqCst), global_hits);
    assert_eq!(partners.authorize_hits.load(Ordering::SeqCst), 1);

    // Refreshes go to the session's own provider.
    partners.set_groups("bob-id", &["partners"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.gw
        .eventually("partner groups refreshed", || async {
            user(&b, &env, "claim").await.1["groups"] == serde_json::json!(["partners"])
        })
        .await;
    assert_eq!(
        user(&b, &env, "app").await.1["groups"],
        serde_json::json!(["admins", "engineering"])
    );

    // Signing out of the partners route ends the partners session, at the partners provider
    // too; the staff session is another identity and stays.
    let sign_out = env.url("claim", "/.pomerium/sign_out");
    let (page, _) = b.get(&sign_out).await;
    let form = b
        .client
        .post(&sign_out)
        .form(&[("csrf", crate::signin::csrf_field(&page.body))])
        .send()
        .await
        .unwrap();
    let next = form.headers()["location"].to_str().unwrap().to_string();
    let (r, hops) = b
        .browse_until(&next, |u| u.starts_with(&partners.issuer()))
        .await;
    assert_eq!(r.status, 302, "{hops:#?}");
    assert!(
        hops.last()
            .unwrap()
            .starts_with(&format!("{}/logout", partners.issuer())),
        "{hops:#?}"
    );
    assert_eq!(user(&b, &env, "claim").await.0, 401);
    assert_eq!(user(&b, &env, "app").await.1["email"], "alice@example.com");
    let (_, hops) = b
        .browse_until(&env.url("claim", "/"), |u| u.contains("/authorize"))
        .await;
    assert!(
        hops.last().unwrap().starts_with(&partners.issuer()),
        "{hops:#?}"
    );
}

#[tokio::test]
async fn a_session_from_one_provider_never_opens_a_route_of_another() {
    let partners = Idp::start().await;
    let env = start(&partners).await;
    // Signed in with partners only.
    let b = env.browser();
    assert_eq!(b.browse(&env.url("claim", "/")).await.0.status, 200);
    // The global route still asks the global provider.
    let (_, hops) = b
        .browse_until(&env.url("app", "/"), |u| u.contains("/authorize"))
        .await;
    assert!(
        hops.last()
            .unwrap()
            .starts_with(&format!("{}/authorize", env.idp.issuer())),
        "{hops:#?}"
    );
    // A sign-in link that names another provider than the route's own (the parameter is not
    // signed) signs in there, and the route still refuses the result.
    let (r, hops) = b
        .browse_until(&env.url("app", "/"), |u| u.contains("/.pomerium/sign_in"))
        .await;
    assert_eq!(r.status, 302);
    let swapped = format!("{}&idp={}", hops.last().unwrap(), key_in(&b, &env));
    let (_, hops) = b.browse_until(&swapped, |u| u.contains("/authorize")).await;
    // The partners session is handed to the app host (no IdP round trip), the route does not
    // take it, and the browser is sent to the global provider.
    assert!(
        hops.iter()
            .any(|h| h.contains("app.localhost") && h.contains("/.pomerium/callback/")),
        "{hops:#?}"
    );
    assert!(
        hops.last()
            .unwrap()
            .starts_with(&format!("{}/authorize", env.idp.issuer())),
        "{hops:#?}"
    );
    assert_eq!(partners.authorize_hits.load(Ordering::SeqCst), 1);
}

/// The partners provider's key, from the name of its cookie on the claim host.
fn key_in(b: &Browser, env: &Env) -> String {
    let jar = b.cookie_for(&env.url("claim", "/")).unwrap_or_default();
    jar.split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find_map(|(k, _)| k.strip_prefix("_pomerium_"))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_user_chooses_among_the_routes_providers() {
    let partners = Idp::start().await;
    partners.login_as("bob-id");
    let env = start(&partners).await;
    let b = env.browser();
    let (page, hops) = b.browse(&env.url("group", "/")).await;
    assert_eq!(page.status, 200, "{hops:#?}");
    assert!(page.body.contains("Choose how to sign in"), "{}", page.body);
    assert!(page.body.contains(">Staff<"), "{}", page.body);
    assert!(
        page.body.contains("Partner &lt;b&gt;SSO&lt;/b&gt;"),
        "labels are escaped: {}",
        page.body
    );
    let links: Vec<String> = page
        .body
        .split("href=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .filter(|h| h.contains("/.pomerium/sign_in"))
        .map(|h| h.replace("&amp;", "&"))
        .collect();
    assert_eq!(links.len(), 2, "{}", page.body);
    let base = hops.last().unwrap();
    let partners_link = url::Url::parse(base).unwrap().join(&links[1]).unwrap();
    let (r, hops) = b.browse(partners_link.as_str()).await;
    assert_eq!(r.status, 200, "{hops:#?}");
    assert_eq!(user(&b, &env, "group").await.1["email"], "bob@example.com");
    assert_eq!(env.idp.authorize_hits.load(Ordering::SeqCst), 0);

    // Someone already signed in with one of the choices is not asked to choose.
    let staff = env.browser();
    assert_eq!(staff.browse(&env.url("app", "/")).await.0.status, 200);
    let (r, hops) = staff.browse(&env.url("group", "/")).await;
    assert_eq!(r.status, 200, "{hops:#?}");
    assert_eq!(
        user(&staff, &env, "group").await.1["email"],
        "alice@example.com"
    );
    assert_eq!(partners.authorize_hits.load(Ordering::SeqCst), 1);
}
