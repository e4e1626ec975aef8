//! Strict HTTP/1 framing: every request whose length or meaning two parsers could disagree on is
//! answered 400 and its connection closed, so nothing after it on the wire is ever read as a
//! second request (request smuggling).

use super::{public_gateway, raw};
use std::sync::atomic::Ordering;

#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let (gw, up) = public_gateway("", "").await;
    // (case, request bytes, source). Each request is followed by a smuggled GET that must
    // never reach the upstream.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let cases: &[(&str, String, &str)] = &[
        (
            "Content-Length and Transfer-Encoding (CL.TE)",
            format!("POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            "RFC 9112 §6.3; Pingora's 2025 smuggling advisories (CVE-2025-4366 class)",
        ),
        (
            "Transfer-Encoding then Content-Length (TE.CL)",
            format!("POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggled}"),
            "RFC 9112 §6.3; classic TE.CL smuggling",
        ),
        (
            "two Content-Length headers",
            format!("POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nContent-Length: 60\r\n\r\n{smuggled}"),
            "RFC 9112 §6.3 (duplicate CL); Envoy and Traefik duplicate-CL advisories",
        ),
        (
            "a Content-Length list",
            format!("POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0, 0\r\n\r\n{smuggled}"),
            "RFC 9110 §8.6 (list form)",
        ),
        (
            "a signed Content-Length",
            format!("POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: +0\r\n\r\n{smuggled}"),
            "RFC 9110 §8.6 (digits only)",
        ),
        (
            "an unknown transfer coding",
            format!("POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            "RFC 9112 §6.1; coding-list smuggling",
        ),
        (
            "a misspelt chunked",
            format!("POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"),
            "TE obfuscation (PortSwigger smuggling research)",
        ),
        (
            "obsolete line folding",
            format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n{smuggled}"),
            "RFC 9112 §5.2 (obs-fold must be rejected or replaced)",
        ),
        (
            "whitespace inside the request target",
            format!("GET /a b HTTP/1.1\r\nHost: app.test\r\n\r\n{smuggled}"),
            "RFC 9112 §3 (method SP request-target SP HTTP-version, exactly)",
        ),
        (
            "a doubled separator in the request line",
            format!("GET  / HTTP/1.1\r\nHost: app.test\r\n\r\n{smuggled}"),
            "RFC 9112 §3; parsers that split on runs of spaces disagree with those that do not",
        ),
        (
            "a tab in the request target",
            format!("GET /\tx HTTP/1.1\r\nHost: app.test\r\n\r\n{smuggled}"),
            "RFC 9112 §3 (no whitespace inside the target)",
        ),
        (
            "an h2c upgrade",
            format!("GET / HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n{smuggled}"),
            "h2c smuggling (Bishop Fox, 2020): never relayed",
        ),
        (
            "a websocket upgrade on a route that does not allow it",
            format!("GET / HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n{smuggled}"),
            "upgrade smuggling past route rules",
        ),
    ];
    for (case, bytes, source) in cases {
        let before = up.hits.load(Ordering::SeqCst);
        let r = raw(gw.addr(), bytes.as_bytes()).await;
        assert_eq!(r.status, 400, "{case} ({source}): {}", r.text);
        assert!(r.closed, "{case}: the connection is closed");
        assert_eq!(r.responses, 1, "{case}: nothing after it is answered");
        assert_eq!(
            up.hits.load(Ordering::SeqCst),
            before,
            "{case}: nothing reached the upstream"
        );
    }
    // The controls: the same smuggled request on its own is served, and so is a target that
    // carries its space percent-encoded, as a client should send it.
    let r = raw(
        gw.addr(),
        b"GET /ok HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = raw(
        gw.addr(),
        b"GET /a%20b?q=%22x%22 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn websockets_check_origin_and_wait_for_the_upstream() {
    let (gw, _up) = public_gateway(
        "",
        "  - from: http://pinned.test\n    to: {u}\n    allow_public_unauthenticated_access: true\n    allow_websockets: true\n    websocket_allowed_origins: [https://pinned.test]\n",
    )
    .await;
    let ws = |host: &str, origin: &str| {
        format!(
            "GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {origin}\r\n\r\n"
        )
    };
    // (case, request, status, source)
    let cases = [
        (
            "a foreign origin",
            ws("pinned.test", "https://evil.example"),
            403,
            "cross-site websocket hijacking",
        ),
        (
            "a look-alike origin",
            ws("pinned.test", "https://pinned.test.evil.example"),
            403,
            "cross-site websocket hijacking (suffix tricks)",
        ),
    ];
    for (case, req, status, source) in cases {
        let r = raw(gw.addr(), req.as_bytes()).await;
        assert_eq!(r.status, status, "{case} ({source}): {}", r.text);
    }
    // The echo upstream answers a websocket handshake with 200, not 101. Bytes the client sent
    // after the handshake must not reach the upstream raw (where its parser would read them as
    // a request Vallum never checked): the smuggled request names a host no route serves, so
    // only the upstream could answer it with its path.
    let r = raw(
        gw.addr(),
        format!(
            "{}GET /smuggled-after-upgrade HTTP/1.1\r\nHost: nowhere.test\r\n\r\n",
            ws("ws.test", "https://ws.test")
        )
        .as_bytes(),
    )
    .await;
    assert!(
        !r.text.contains("smuggled-after-upgrade"),
        "no bytes pass before the upstream's 101: {}",
        r.text
    );
}
