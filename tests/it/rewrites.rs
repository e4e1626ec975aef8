//! Path and host rewrites, as the upstream sees them.

use crate::support::{Gateway, Upstream};

#[tokio::test]
async fn path_rewrites() {
    let up = Upstream::echo("up").await;
    let u = up.url();
    let gw = Gateway::insecure(&format!(
        r#"
routes:
  - from: http://app.test
    prefix: /api/
    prefix_rewrite: /v1/
    to: {u}
    allow_public_unauthenticated_access: true
  - from: http://app.test
    regex: "/users/([0-9]+)/profile"
    regex_rewrite_pattern: "^/users/([0-9]+)/profile$"
    regex_rewrite_substitution: "/profiles/\\1"
    to: {u}
    allow_public_unauthenticated_access: true
  - from: http://app.test
    prefix: /base
    to: {u}/mounted/
    allow_public_unauthenticated_access: true
  - from: http://app.test
    to: {u}
    allow_public_unauthenticated_access: true
"#
    ))
    .await;
    assert_eq!(
        gw.get("app.test", "/api/things?x=1").await.echo().uri,
        "/v1/things?x=1"
    );
    assert_eq!(
        gw.get("app.test", "/users/7/profile").await.echo().uri,
        "/profiles/7"
    );
    assert_eq!(
        gw.get("app.test", "/base/page").await.echo().uri,
        "/mounted/base/page",
        "the path of `to` is prepended"
    );
    assert_eq!(
        gw.get("app.test", "/plain/a?b=c").await.echo().uri,
        "/plain/a?b=c"
    );
}

#[tokio::test]
async fn host_header_rewrites() {
    let up = Upstream::echo("up").await;
    let u = up.url();
    let gw = Gateway::insecure(&format!(
        r#"
routes:
  - from: http://auto.test
    to: {u}
    allow_public_unauthenticated_access: true
  - from: http://keep.test
    to: {u}
    preserve_host_header: true
    allow_public_unauthenticated_access: true
  - from: http://fixed.test
    to: {u}
    host_rewrite: internal.svc
    allow_public_unauthenticated_access: true
  - from: http://fromheader.test
    to: {u}
    host_rewrite_header: x-target-host
    allow_public_unauthenticated_access: true
"#
    ))
    .await;
    let e = gw.get("auto.test", "/").await.echo();
    assert_eq!(
        e.header("host"),
        Some(up.addr.to_string().as_str()),
        "default: the `to` host"
    );
    assert_eq!(e.header("x-forwarded-host"), Some("auto.test"));
    assert_eq!(
        gw.get("keep.test", "/").await.echo().header("host"),
        Some("keep.test")
    );
    assert_eq!(
        gw.get("fixed.test", "/").await.echo().header("host"),
        Some("internal.svc")
    );
    let e = gw
        .request(
            reqwest::Method::GET,
            "fromheader.test",
            "/",
            &[("x-target-host", "picked.svc")],
        )
        .await
        .echo();
    assert_eq!(e.header("host"), Some("picked.svc"));
}
