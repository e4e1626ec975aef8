//! `circuit_breaker_thresholds`: past a route's limits the gateway answers 503 at once instead of
//! queueing behind a slow upstream, counts it, and serves again when places free up.

use crate::support::{free_port, scrape, Gateway, Upstream};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_slow_upstream_trips_the_breaker_and_recovers() {
    let up = Upstream::echo("slow").await;
    let mport = free_port();
    // Global limits (one served, none waiting); the second route sets its own (one waiting).
    let gw = Gateway::insecure(&format!(
        "metrics_address: 127.0.0.1:{mport}\n\
         circuit_breaker_thresholds: {{max_connections: 1, max_pending_requests: 0}}\n\
         routes:\n  - from: http://app.test\n    to: {u}\n    allow_public_unauthenticated_access: true\n\
         \x20 - from: http://queue.test\n    to: {u}\n    allow_public_unauthenticated_access: true\n\
         \x20   circuit_breaker_thresholds: {{max_connections: 1, max_pending_requests: 1}}\n",
        u = up.url()
    ))
    .await;
    let gw = std::sync::Arc::new(gw);
    let slow = |host: &'static str| {
        let gw = std::sync::Arc::clone(&gw);
        tokio::spawn(async move {
            let started = Instant::now();
            let status = gw.get(host, "/?sleep_ms=1500").await.status;
            (status, started.elapsed())
        })
    };

    // One request fills the upstream; the next is turned away at once, not queued.
    let first = slow("app.test");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = gw.get("app.test", "/").await;
    assert_eq!(r.status, 503, "over the limit");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "at once: {:?}",
        started.elapsed()
    );
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(
        gw.get("app.test", "/").await.status,
        200,
        "a place is free again"
    );

    // With one place to wait in: the second waits its turn, the third is turned away.
    let first = slow("queue.test");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = slow("queue.test");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.get("queue.test", "/").await.status, 503);
    assert_eq!(first.await.unwrap().0, 200);
    let (status, waited) = second.await.unwrap();
    assert_eq!(status, 200, "the waiting request is served");
    assert!(
        waited > Duration::from_millis(1500),
        "after the first: {waited:?}"
    );

    let metrics = scrape(mport, None).await.1;
    assert!(
        metrics.contains(
            "vallum_upstream_overflow_total{limit=\"max_pending_requests\",route=\"route-0\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "vallum_upstream_overflow_total{limit=\"max_pending_requests\",route=\"route-1\"} 1"
        ),
        "{metrics}"
    );
    assert!(gw
        .log()
        .contains("request refused: upstream at its circuit breaker limit"));
}

#[test]
fn thresholds_are_checked() {
    let check = |yaml: &str| {
        vallum::snapshot::Snapshot::from_str(
            &format!("insecure_server: true\n{yaml}routes:\n  - from: http://a.test\n    to: http://127.0.0.1:1\n    allow_public_unauthenticated_access: true\n"),
            &|_| None,
            None,
        )
        .map(|s| s.routes.len())
        .map_err(|e| e.to_string())
    };
    let e = check("circuit_breaker_thresholds: {max_connections: 0}\n").unwrap_err();
    assert!(
        e.contains("circuit_breaker_thresholds.max_connections") && e.contains("at least 1"),
        "{e}"
    );
    let e = check("circuit_breaker_thresholds: {max_conections: 5}\n").unwrap_err();
    assert!(e.contains("max_conections"), "{e}");
    check("circuit_breaker_thresholds: {max_requests: 100, max_retries: 3}\n").unwrap();
}

/// `outlier_detection`: a backend answering 5xx in a row leaves rotation (the other takes every
/// request), and comes back when its ejection time is over.
#[tokio::test]
async fn a_failing_backend_is_ejected_and_comes_back() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let gw = Gateway::insecure(&format!(
        "routes:\n  - from: http://app.test\n    to: [{}, {}]\n    allow_public_unauthenticated_access: true\n\
         \x20   outlier_detection: {{consecutive_5xx: 3, base_ejection_time: 1s, max_ejection_percent: 50, interval: 10s}}\n",
        a.url(),
        b.url()
    ))
    .await;
    a.healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut failures = 0;
    let mut last = Vec::new();
    for _ in 0..20 {
        let r = gw.get("app.test", "/flaky").await;
        if r.status == 500 {
            failures += 1;
        }
        last.push(r.status);
    }
    assert_eq!(failures, 3, "ejected after three in a row: {last:?}");
    assert!(last[10..].iter().all(|s| *s == 200), "{last:?}");
    assert!(gw
        .log()
        .contains("upstream backend ejected after consecutive failures"));

    // Healthy again, and the ejection over: back in rotation.
    a.healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = a.hits.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..6 {
        assert_eq!(gw.get("app.test", "/").await.status, 200);
    }
    assert!(
        a.hits.load(std::sync::atomic::Ordering::SeqCst) > before,
        "a serves again"
    );
    assert!(gw.log_has("upstream backend back in rotation"));
}

/// `healthy_panic_threshold`: when too few backends pass their health checks, a route with a
/// threshold spreads requests over all of them (Envoy's panic mode) instead of answering 503.
#[tokio::test]
async fn below_the_panic_threshold_every_backend_serves() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let checks = "    health_checks:\n      - interval: 100ms\n        timeout: 1s\n        healthy_threshold: 1\n        unhealthy_threshold: 1\n        http_health_check: {path: /health}\n";
    let gw = Gateway::insecure(&format!(
        "routes:\n  - from: http://panic.test\n    to: [{a}, {b}]\n    allow_public_unauthenticated_access: true\n    healthy_panic_threshold: 50\n{checks}\
         \x20 - from: http://strict.test\n    to: [{a}, {b}]\n    allow_public_unauthenticated_access: true\n{checks}",
        a = a.url(),
        b = b.url()
    ))
    .await;
    a.healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    b.healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    gw.eventually("no backend passes its checks", || async {
        gw.get("strict.test", "/").await.status == 503
    })
    .await;
    // Five more check intervals: the panic route's own checker has seen them fail too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..6 {
        assert_eq!(
            gw.get("panic.test", "/").await.status,
            200,
            "panic mode serves"
        );
    }
    assert_eq!(
        gw.get("strict.test", "/").await.status,
        503,
        "no threshold: none healthy, 503"
    );
    let e = vallum::snapshot::Snapshot::from_str(
        "insecure_server: true\nroutes:\n  - from: http://a.test\n    to: http://127.0.0.1:1\n    allow_public_unauthenticated_access: true\n    healthy_panic_threshold: 150\n",
        &|_| None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("healthy_panic_threshold"), "{e}");
}
