//! Host and path matching, direct responses and redirects, deny-by-default.

use crate::support::{Gateway, Upstream};

#[tokio::test]
async fn exact_host_beats_wildcard_and_wildcard_covers_subdomains() {
    let exact = Upstream::echo("exact").await;
    let wild = Upstream::echo("wild").await;
    let any = Upstream::echo("any").await;
    let gw = Gateway::insecure(&format!(
        r#"
routes:
  - from: http://*.example.test
    to: {wild}
    allow_public_unauthenticated_access: true
  - from: http://app.example.test
    to: {exact}
    allow_public_unauthenticated_access: true
  - from: http://*
    to: {any}
    allow_public_unauthenticated_access: true
"#,
        wild = wild.url(),
        exact = exact.url(),
        any = any.url()
    ))
    .await;
    assert_eq!(gw.get("app.example.test", "/").await.echo().server, "exact");
    assert_eq!(
        gw.get("APP.Example.TEST.", "/").await.echo().server,
        "exact",
        "host is case-insensitive, trailing dot ignored"
    );
    assert_eq!(
        gw.get("other.example.test", "/").await.echo().server,
        "wild"
    );
    assert_eq!(gw.get("a.b.example.test", "/").await.echo().server, "wild");
    assert_eq!(
        gw.get("example.test", "/").await.echo().server,
        "any",
        "the bare domain is not covered by *.example.test"
    );
    assert_eq!(gw.get("elsewhere.test", "/").await.echo().server, "any");
}

#[tokio::test]
async fn first_match_in_config_order_and_matchers() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let c = Upstream::echo("c").await;
    let d = Upstream::echo("d").await;
    let gw = Gateway::insecure(&format!(
        r#"
routes:
  - from: http://app.test
    path: /exact
    to: {a}
    allow_public_unauthenticated_access: true
  - from: http://app.test
    regex: "/items/[0-9]+"
    to: {b}
    allow_public_unauthenticated_access: true
  - from: http://app.test
    prefix: /api
    to: {c}
    allow_public_unauthenticated_access: true
  - from: http://app.test
    prefix: /api/v2
    to: {a}
    allow_public_unauthenticated_access: true
  - from: http://app.test
    to: {d}
    allow_public_unauthenticated_access: true
"#,
        a = a.url(),
        b = b.url(),
        c = c.url(),
        d = d.url()
    ))
    .await;
    assert_eq!(gw.get("app.test", "/exact").await.echo().server, "a");
    assert_eq!(
        gw.get("app.test", "/exact/more").await.echo().server,
        "d",
        "path is exact"
    );
    assert_eq!(gw.get("app.test", "/items/42").await.echo().server, "b");
    assert_eq!(
        gw.get("app.test", "/items/42/x").await.echo().server,
        "d",
        "regex is anchored at the end"
    );
    assert_eq!(
        gw.get("app.test", "/x/items/42").await.echo().server,
        "d",
        "regex is anchored at the start"
    );
    assert_eq!(
        gw.get("app.test", "/items/42?q=1").await.echo().server,
        "b",
        "regex never sees the query"
    );
    assert_eq!(
        gw.get("app.test", "/api/v2/x").await.echo().server,
        "c",
        "the earlier /api route wins"
    );
    assert_eq!(
        gw.get("app.test", "/apix").await.echo().server,
        "c",
        "prefix is a string prefix, as in Envoy"
    );
    assert_eq!(gw.get("nothing.test", "/").await.status, 404);
}

#[tokio::test]
async fn port_in_from_is_honoured() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let gw = Gateway::insecure(&format!(
        r#"
routes:
  - from: http://app.test:8443
    to: {a}
    allow_public_unauthenticated_access: true
  - from: http://app.test
    to: {b}
    allow_public_unauthenticated_access: true
"#,
        a = a.url(),
        b = b.url()
    ))
    .await;
    assert_eq!(gw.get("app.test:8443", "/").await.echo().server, "a");
    assert_eq!(gw.get("app.test", "/").await.echo().server, "b");
    assert_eq!(
        gw.get("app.test:9999", "/").await.echo().server,
        "b",
        "no port in from: any port"
    );
}

#[tokio::test]
async fn direct_response_and_redirect_routes() {
    let gw = Gateway::insecure(
        r#"
routes:
  - from: http://app.test
    path: /hello
    response: {status: 202, body: "hi there"}
    allow_public_unauthenticated_access: true
  - from: http://app.test
    prefix: /old/
    redirect: {prefix_rewrite: /new/, response_code: 308}
    allow_public_unauthenticated_access: true
  - from: http://app.test
    path: /secure
    redirect: {https_redirect: true}
    allow_public_unauthenticated_access: true
  - from: http://app.test
    path: /moved
    redirect: {host_redirect: other.test, port_redirect: 8080, path_redirect: /landing, strip_query: true, response_code: FOUND}
    allow_public_unauthenticated_access: true
"#,
    )
    .await;
    let r = gw.get("app.test", "/hello").await;
    assert_eq!((r.status, r.body.as_str()), (202, "hi there"));
    assert_eq!(
        r.header("x-frame-options"),
        Some("SAMEORIGIN"),
        "global response headers apply to direct responses"
    );

    let r = gw.get("app.test", "/old/page?x=1").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("http://app.test/new/page?x=1"));

    let r = gw.get("app.test", "/secure?a=b").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://app.test/secure?a=b"));

    let r = gw.get("app.test", "/moved?drop=me").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://other.test:8080/landing"));
}

#[tokio::test]
async fn deny_by_default_and_policies_without_identity() {
    let up = Upstream::echo("up").await;
    let gw = Gateway::insecure(&format!(
        r#"
routes:
  - from: http://bare.test
    to: {u}
  - from: http://office.test
    to: {u}
    policy:
      allow:
        or:
          - source_ip: [192.0.2.0/24, "2001:db8::/32"]
  - from: http://open.test
    to: {u}
    allow_public_unauthenticated_access: true
    policy:
      - deny:
          or:
            - http_method: {{is: POST}}
  - from: http://loopback.test
    to: {u}
    policy:
      - allow:
          and:
            - source_ip: 127.0.0.0/8
            - http_method: {{in: [GET, HEAD]}}
      - deny:
          or:
            - http_path: {{starts_with: /admin}}
"#,
        u = up.url()
    ))
    .await;
    assert_eq!(
        gw.get("bare.test", "/").await.status,
        403,
        "a route with no access rule is closed"
    );
    let json = gw
        .request(
            reqwest::Method::GET,
            "office.test",
            "/",
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(json.status, 403);
    let body: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(
        body["reasons"],
        serde_json::json!(["source-ip-unauthorized"])
    );
    assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    // A browser gets the page; a client that accepts anything is an API client and gets JSON.
    let html = gw
        .request(
            reqwest::Method::GET,
            "office.test",
            "/",
            &[("accept", "text/html")],
        )
        .await;
    assert!(
        html.body.contains("403") && html.body.contains("/.pomerium/"),
        "{}",
        html.body
    );
    let any = gw.get("office.test", "/").await;
    assert!(any.body.starts_with('{'), "*/* gets JSON: {}", any.body);
    assert_eq!(
        up.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
    // Public with a policy, as Pomerium allows: open to anyone, except what its deny rules say.
    assert_eq!(gw.get("open.test", "/").await.status, 200);
    let post = gw
        .request(reqwest::Method::POST, "open.test", "/", &[])
        .await;
    assert_eq!(post.status, 403, "{}", post.body);

    assert_eq!(gw.get("loopback.test", "/x").await.status, 200);
    assert_eq!(
        gw.request(reqwest::Method::POST, "loopback.test", "/x", &[])
            .await
            .status,
        403,
        "method rule"
    );
    assert_eq!(
        gw.get("loopback.test", "/admin/x").await.status,
        403,
        "deny wins"
    );
    assert_eq!(
        gw.get("loopback.test", "/%61dmin/x").await.status,
        403,
        "the policy sees the normalised path"
    );
}

#[tokio::test]
async fn probes_answer_on_every_host() {
    let gw = Gateway::insecure("routes: []\n").await;
    for host in ["anything.test", "x"] {
        for path in ["/ping", "/healthz"] {
            let r = gw.get(host, path).await;
            assert_eq!((r.status, r.body.as_str()), (200, "OK"), "{host}{path}");
        }
    }
}
