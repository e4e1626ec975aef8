//! One path truth through the running gateway: what routes is what goes upstream.

use crate::support::{Gateway, Upstream};

async fn setup(extra: &str) -> (Gateway, Upstream, Upstream) {
    let public = Upstream::echo("public").await;
    let admin = Upstream::echo("admin").await;
    let gw = Gateway::insecure(&format!(
        r#"{extra}
routes:
  - from: http://app.test
    prefix: /admin
    to: {admin}
    allow_public_unauthenticated_access: true
  - from: http://app.test
    to: {public}
    allow_public_unauthenticated_access: true
"#,
        admin = admin.url(),
        public = public.url()
    ))
    .await;
    (gw, public, admin)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn dot_segments_and_slashes_are_resolved_before_routing() {
    let (gw, _p, _a) = setup("").await;
    for (raw, server, upstream_path) in [
        ("/public/../admin/panel", "admin", "/admin/panel"),
        ("/public/%2e%2e/admin", "admin", "/admin"),
        ("//admin//x", "admin", "/admin/x"),
        ("/%61dmin", "admin", "/admin"),
        ("/./a/./b/../c?q=/../x", "public", "/a/c?q=/../x"),
    ] {
        let r = gw.raw(&get(raw)).await;
        assert_eq!(r.status, 200, "{raw}: {r:?}");
        let e = r.echo();
        assert_eq!(
            (e.server.as_str(), e.uri.as_str()),
            (server, upstream_path),
            "{raw}"
        );
    }
}

#[tokio::test]
async fn encoded_slashes_and_bad_targets_are_refused() {
    let (gw, public, admin) = setup("").await;
    for raw in ["/public/..%2Fadmin", "/a%2fb", "/a%5Cb", "/a%zz", "/a#frag"] {
        assert_eq!(gw.raw(&get(raw)).await.status, 400, "{raw}");
    }
    let total = public.hits.load(std::sync::atomic::Ordering::SeqCst)
        + admin.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(total, 0, "refused requests never reach an upstream");
}

#[tokio::test]
async fn escaped_slash_actions_are_configurable() {
    let (gw, _p, _a) = setup("path_with_escaped_slashes_action: unescape_and_redirect").await;
    let r = gw.raw(&get("/public/..%2Fadmin?x=1")).await;
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some("/admin?x=1"));

    let (gw, _p, _a) = setup("path_with_escaped_slashes_action: unescape_and_forward").await;
    let e = gw.raw(&get("/public/..%2Fadmin")).await.echo();
    assert_eq!((e.server.as_str(), e.uri.as_str()), ("admin", "/admin"));

    let (gw, _p, _a) = setup("path_with_escaped_slashes_action: keep_unchanged").await;
    let e = gw.raw(&get("/public/..%2Fadmin")).await.echo();
    assert_eq!(
        e.server, "public",
        "kept encoded, the path is one segment under /public"
    );
    assert_eq!(e.uri, "/public/..%2Fadmin");
}
