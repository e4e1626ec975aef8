//! Header handling: X-Forwarded-*, hop-by-hop, identity-header stripping, underscores, and the
//! route's set/remove/response header options.

use crate::support::{Gateway, Upstream};

#[tokio::test]
async fn request_and_response_header_options() {
    let up = Upstream::echo("up").await;
    let gw = Gateway::insecure(&format!(
        r#"
set_response_headers:
  X-Global: "yes"
routes:
  - from: http://app.test
    to: {u}
    allow_public_unauthenticated_access: true
    set_request_headers:
      X-Custom: hello
      X-Number: 42
      X-Price: "$$5"
    remove_request_headers: [X-Secret]
    set_response_headers:
      X-Route: route
    rewrite_response_headers:
      - header: Location
        prefix: http://internal.svc/
        value: https://app.test/
"#,
        u = up.url()
    ))
    .await;
    let r = gw
        .request(
            reqwest::Method::GET,
            "app.test",
            "/?set_header=Location:http://internal.svc/next",
            &[("x-secret", "s3cr3t"), ("x-custom", "client-value")],
        )
        .await;
    assert_eq!(r.header("x-global"), Some("yes"));
    assert_eq!(r.header("x-route"), Some("route"));
    assert_eq!(
        r.header("x-frame-options"),
        None,
        "an explicit set_response_headers replaces Pomerium's defaults"
    );
    assert_eq!(r.header("location"), Some("https://app.test/next"));
    let e = r.echo();
    assert_eq!(
        e.header("x-custom"),
        Some("hello"),
        "set_request_headers overrides the client"
    );
    assert_eq!(e.header("x-number"), Some("42"));
    assert_eq!(e.header("x-price"), Some("$5"));
    assert_eq!(e.header("x-secret"), None);
}

#[tokio::test]
async fn forwarding_headers_and_hygiene() {
    let up = Upstream::echo("up").await;
    let gw = Gateway::insecure(&format!(
        r#"
routes:
  - from: http://app.test
    to: {u}
    allow_public_unauthenticated_access: true
"#,
        u = up.url()
    ))
    .await;
    let r = gw
        .raw(
            "GET /x HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\
             X-Pomerium-Jwt-Assertion: forged\r\nX-Pomerium-Claim-Email: ceo@example.com\r\n\
             Connection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\r\n",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let e = r.echo();
    assert_eq!(
        e.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "an untrusted client's X-Forwarded-For is replaced, not appended to"
    );
    assert_eq!(
        e.header("x-forwarded-proto"),
        Some("http"),
        "the client cannot claim https"
    );
    assert_eq!(e.header("x-forwarded-host"), Some("app.test"));
    assert_eq!(
        e.header("x-pomerium-jwt-assertion"),
        None,
        "client-sent identity headers never reach the upstream"
    );
    assert_eq!(e.header("x-pomerium-claim-email"), None);
    assert_eq!(
        e.header("x-hop"),
        None,
        "Connection-nominated headers are hop-by-hop"
    );
    assert_eq!(e.header("keep-alive"), None);
    assert_eq!(e.header("te"), None);
}

#[tokio::test]
async fn underscored_header_names_are_rejected_by_default() {
    let up = Upstream::echo("up").await;
    let route = format!(
        "routes:\n  - from: http://app.test\n    to: {}\n    allow_public_unauthenticated_access: true\n",
        up.url()
    );
    let gw = Gateway::insecure(&route).await;
    let r = gw.raw("GET / HTTP/1.1\r\nHost: app.test\r\nX_Pomerium_Jwt_Assertion: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 400);

    let gw = Gateway::insecure(&format!(
        "headers_with_underscores_action: drop_header\n{route}"
    ))
    .await;
    let r = gw
        .raw("GET / HTTP/1.1\r\nHost: app.test\r\nX_Under: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().header("x_under"), None);
}

#[tokio::test]
async fn upstream_timeout_gives_504() {
    let up = Upstream::echo("slow").await;
    let gw = Gateway::insecure(&format!(
        "routes:\n  - from: http://app.test\n    to: {}\n    timeout: 300ms\n    allow_public_unauthenticated_access: true\n",
        up.url()
    ))
    .await;
    assert_eq!(gw.get("app.test", "/?sleep_ms=2000").await.status, 504);
    assert_eq!(gw.get("app.test", "/?sleep_ms=10").await.status, 200);
}

/// An upstream that answers each request with the head it received, byte for byte.
async fn head_mirror() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.write_all(&head).await;
            });
        }
    });
    addr
}

/// A gateway whose public route `app.test` forwards to a fresh `head_mirror`.
async fn gateway_to_head_mirror() -> Gateway {
    let mirror = head_mirror().await;
    Gateway::insecure(&format!(
        "routes:\n  - from: http://app.test\n    to: http://{mirror}\n    allow_public_unauthenticated_access: true\n"
    ))
    .await
}

#[tokio::test]
async fn the_upstream_receives_lower_case_header_names_as_from_pomerium() {
    let gw = gateway_to_head_mirror().await;
    for (case, target) in [
        ("origin-form", "/a/b?q=1"),
        ("absolute-form", "http://app.test/a/b?q=1"),
    ] {
        let r = crate::support::raw_request(
            gw.addr(),
            &format!(
                "GET {target} HTTP/1.1\r\nHost: app.test\r\nX-Client-Header: kept\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{case}: {}", r.body);
        let head = &r.body;
        assert!(
            head.starts_with("GET /a/b?q=1 HTTP/1.1\r\n"),
            "{case}: {head}"
        );
        assert!(
            head.contains("\r\nx-client-header: kept\r\n"),
            "{case}: {head}"
        );
        assert!(head.contains("\r\nuser-agent: t\r\n"), "{case}: {head}");
        assert!(
            head.contains("\r\nx-forwarded-proto: http\r\n"),
            "{case}: {head}"
        );
        assert!(!head.contains("X-Client-Header"), "{case}: {head}");
    }
}

/// The client gets the upstream's answer with lower-case header names (standard ones
/// title-cased), as from Pomerium's Envoy, beside Vallum's own response headers; a reason phrase
/// of the upstream's own goes through as it was.
#[tokio::test]
async fn the_client_receives_lower_case_response_header_names() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let reply = "HTTP/1.1 200 Fine Thanks\r\nX-Upstream-Case: v\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    let gw = Gateway::insecure(&format!(
        "routes:\n  - from: http://app.test\n    to: http://{up}\n    allow_public_unauthenticated_access: true\n    set_response_headers:\n      X-Route-Set: r\n"
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut raw)).await;
    let raw = String::from_utf8_lossy(&raw);
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 200 Fine Thanks\r\n"), "{head}");
    assert!(head.contains("\r\nx-upstream-case: v"), "{head}");
    assert!(head.contains("\r\nx-route-set: r"), "{head}");
    assert!(head.contains("\r\nx-request-id: "), "{head}");
    assert!(head.contains("\r\nContent-Length: 2"), "{head}");
    assert!(!head.contains("X-Upstream-Case"), "{head}");
    assert!(raw.ends_with("\r\n\r\nok"), "{raw}");
}

/// Hop-by-hop headers a client sends never reach the upstream, whichever layer strips them
/// (Vallum's filter, or the engine's pass over the names the request has).
#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_gateway() {
    let gw = gateway_to_head_mirror().await;
    let r = crate::support::raw_request(
        gw.addr(),
        "GET /h HTTP/1.1\r\nHost: app.test\r\nProxy-Authenticate: Basic\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nKeep-Alive: timeout=5\r\nTrailer: x-t\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let head = r.body.to_ascii_lowercase();
    assert!(head.contains("\r\nx-kept: yes\r\n"), "{head}");
    for gone in [
        "proxy-authenticate",
        "http2-settings",
        "keep-alive:",
        "trailer",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(!head.contains(gone), "{gone} reached the upstream: {head}");
    }
}
