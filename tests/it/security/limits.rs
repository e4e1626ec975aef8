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
