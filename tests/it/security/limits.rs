//! Bounded everything: header count and size (cookies included), sign-in rate per client,
//! and websockets that end with their session.

use super::{public_gateway, raw};
use crate::signin::Env;

#[tokio::test]
async fn oversized_heads_are_refused() {
    let (gw, _up) = public_gateway(
        "max_request_headers: 30\nmax_request_header_bytes: 8192\n",
        "",
    )
    .await;
    let many: String = (0..40).map(|i| format!("X-N{i}: v\r\n")).collect();
    let cookie = format!(
        "Cookie: {}\r\n",
        (0..200)
            .map(|i| format!("c{i}={}", "v".repeat(40)))
            .collect::<Vec<_>>()
            .join("; ")
    );
    // (case, head, status, source)
    let cases = [
        ("40 headers", many, 431, "header-count floods"),
        ("a 9 KB cookie", cookie, 431, "cookie bombs"),
        (
            "one 9 KB header",
            format!("X-Big: {}\r\n", "b".repeat(9000)),
            431,
            "oversized headers",
        ),
    ];
    for (case, head, status, source) in cases {
        let r = raw(
            gw.addr(),
            format!("GET / HTTP/1.1\r\nHost: app.test\r\n{head}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(r.status, status, "{case} ({source})");
    }
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_client() {
    let env = Env::start("signin_rate_limit: 3\n").await;
    let b = env.browser();
    let (_, hops) = b
        .browse_until(&env.url("app", "/"), |u| u.contains("/.pomerium/sign_in?"))
        .await;
    let link = hops.last().unwrap().clone();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(b.get(&link).await.0.status);
    }
    assert!(statuses.contains(&429), "a flood gets 429: {statuses:?}");
    assert!(
        statuses.iter().take(3).all(|s| *s == 302),
        "the first ones pass: {statuses:?}"
    );
    let r = b.get(&link).await.0;
    assert_eq!(r.header("retry-after"), Some("1"));
}

/// The request head has a deadline (`timeout_read`): a client that sends part of a head and
/// waits, or trickles it a byte at a time, loses the connection when it passes — on a new
/// connection from accept, on a kept-alive one from the next request's first byte.
#[tokio::test]
async fn slow_heads_lose_their_connection_at_the_deadline() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw, _up) = public_gateway("timeout_read: 1s\n", "").await;
    // How long until the gateway closes the connection (`None`: still open after 8 s).
    async fn closed_after(s: &mut tokio::net::TcpStream, start: Instant) -> Option<Duration> {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(8), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                Ok(Ok(_)) => continue,
                Err(_) => return None,
            }
        }
    }
    // Part of a head, then silence.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        .await
        .unwrap();
    let t = closed_after(&mut s, start).await;
    assert!(
        t.is_some_and(|t| t < Duration::from_secs(4)),
        "partial head held {t:?}"
    );

    // A byte every 200 ms: each read is in time, the head is not.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let start = Instant::now();
    let trickle =
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = None;
    for b in trickle {
        if s.write_all(&[*b]).await.is_err() {
            cut = Some(start.elapsed());
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(200), s.read(&mut probe)).await
        {
            cut = Some(start.elapsed());
            break;
        }
    }
    assert!(
        cut.is_some_and(|t| t < Duration::from_secs(4)),
        "trickled head held {cut:?}"
    );

    // Kept alive: the first request is answered, the next head is timed from its first byte.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 8192];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let t = closed_after(&mut s, start).await;
    assert!(
        t.is_some_and(|t| t < Duration::from_secs(4)),
        "kept-alive partial head held {t:?}"
    );

    // A head that arrives in time is served.
    let r = raw(
        gw.addr(),
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
}
