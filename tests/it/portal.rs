//! The routes portal through the running gateway: `/.pomerium/routes` and
//! `/.pomerium/api/v1/routes` list the routes the signed-in user's policies allow, and nothing
//! else; anonymous visitors are sent to sign in; `runtime_flags.routes_portal: false` turns it off.

use crate::signin::Env;
use crate::support::status_and_json;

const ROUTES: &str = "  - from: http://group.localhost\n    to: {u}\n    name: admin-console\n    description: \"Where admins <administer>\"\n    logo_url: https://logos.example/admin.svg\n    policy:\n      allow:\n        or:\n          - groups: {has: admins}\n\
\x20 - from: http://deny.localhost\n    to: {u}\n    allowed_users: [nobody@example.com]\n\
\x20 - from: http://claim.localhost\n    to: {u}\n    policy:\n      allow:\n        and:\n          - groups: {has: finance}\n";

#[tokio::test]
async fn the_portal_lists_what_the_user_may_open_and_nothing_else() {
    let env = Env::with_routes("", ROUTES).await;
    let b = env.browser();
    assert_eq!(b.browse(&env.url("app", "/")).await.0.status, 200);

    let r = b
        .client
        .get(env.url("app", "/.pomerium/api/v1/routes"))
        .send()
        .await
        .unwrap();
    let (status, v) = status_and_json(r).await;
    assert_eq!(status, 200);
    let routes = v["routes"].as_array().unwrap();
    let ids: Vec<&str> = routes.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["route-0", "route-1", "route-2", "admin-console"],
        "app, app2, public and the admins' route; not the routes alice's groups or address do not open"
    );
    let admin = &routes[3];
    assert_eq!(admin["name"], "admin-console");
    assert_eq!(admin["type"], "http");
    assert_eq!(admin["from"], "http://group.localhost");
    assert_eq!(admin["description"], "Where admins <administer>");
    assert_eq!(admin["logo_url"], "https://logos.example/admin.svg");

    let (page, _) = b.get(&env.url("app", "/.pomerium/routes")).await;
    assert_eq!(page.status, 200);
    assert!(page
        .body
        .contains("<a href=\"http://group.localhost\">admin-console</a>"));
    assert!(
        page.body.contains("Where admins &lt;administer&gt;"),
        "escaped"
    );
    assert!(!page.body.contains("deny.localhost") && !page.body.contains("claim.localhost"));
}

#[tokio::test]
async fn anonymous_visitors_sign_in_first_and_the_flag_turns_it_off() {
    let env = Env::start("").await;
    let b = env.browser();
    let (r, _) = b.get(&env.url("app", "/.pomerium/routes")).await;
    assert_eq!(r.status, 302);
    assert!(r.header("location").unwrap().contains("/.pomerium/sign_in"));
    let r = b
        .client
        .get(env.url("app", "/.pomerium/api/v1/routes"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let off = Env::start("runtime_flags:\n  routes_portal: false\n").await;
    let b = off.browser();
    assert_eq!(b.browse(&off.url("app", "/")).await.0.status, 200);
    let (r, _) = b.get(&off.url("app", "/.pomerium/routes")).await;
    assert_eq!(r.status, 404);
}
