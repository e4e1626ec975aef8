//! Load balancing over real backends: weights, policies, and health checks taking a backend out
//! and putting it back.

use crate::support::{Gateway, Upstream};
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn route(to: &str, extra: &str) -> String {
    format!("routes:\n  - from: http://app.test\n    to: {to}\n    allow_public_unauthenticated_access: true\n{extra}")
}

#[tokio::test]
async fn weighted_round_robin() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let gw = Gateway::insecure(&route(
        &format!("[\"{},3\", \"{},1\"]", a.url(), b.url()),
        "",
    ))
    .await;
    for _ in 0..200 {
        assert_eq!(gw.get("app.test", "/").await.status, 200);
    }
    let (ha, hb) = (a.hits.load(Ordering::SeqCst), b.hits.load(Ordering::SeqCst));
    assert_eq!(ha + hb, 200);
    assert!(
        (130..=170).contains(&ha),
        "weight 3:1 should give a ~150:50 split, got {ha}:{hb}"
    );
}

#[tokio::test]
async fn random_spreads_and_ring_hash_sticks() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let to = format!("[{}, {}]", a.url(), b.url());
    let gw = Gateway::insecure(&route(&to, "    load_balancing_policy: RANDOM\n")).await;
    for _ in 0..100 {
        gw.get("app.test", "/").await;
    }
    assert!(a.hits.load(Ordering::SeqCst) > 10 && b.hits.load(Ordering::SeqCst) > 10);

    let c = Upstream::echo("c").await;
    let d = Upstream::echo("d").await;
    let to = format!("[{}, {}]", c.url(), d.url());
    let gw = Gateway::insecure(&route(&to, "    load_balancing_policy: RING_HASH\n")).await;
    let first = gw.get("app.test", "/").await.echo().server;
    for _ in 0..30 {
        assert_eq!(
            gw.get("app.test", "/").await.echo().server,
            first,
            "one client IP maps to one backend"
        );
    }
}

#[tokio::test]
async fn least_request_avoids_the_busy_backend() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let gw = Arc::new(
        Gateway::insecure(&route(
            &format!("[{}, {}]", a.url(), b.url()),
            "    load_balancing_policy: LEAST_REQUEST\n",
        ))
        .await,
    );
    let slow_gw = Arc::clone(&gw);
    let slow = tokio::spawn(async move {
        slow_gw
            .get("app.test", "/?sleep_ms=6000")
            .await
            .echo()
            .server
    });
    // Wait until the slow request is in flight at one backend.
    gw.eventually("slow request in flight", || async {
        a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst) == 1
    })
    .await;
    let busy = if a.hits.load(Ordering::SeqCst) == 1 {
        "a"
    } else {
        "b"
    };
    for _ in 0..3 {
        assert_ne!(gw.get("app.test", "/").await.echo().server, busy);
    }
    assert_eq!(slow.await.unwrap(), busy);
}

#[tokio::test]
async fn health_checks_take_a_backend_out_and_back() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let gw = Gateway::insecure(&route(
        &format!("[{}, {}]", a.url(), b.url()),
        r#"    health_checks:
      - interval: 100ms
        timeout: 1s
        healthy_threshold: 1
        unhealthy_threshold: 1
        http_health_check:
          path: /health
          expected_statuses: [{start: 200, end: 300}]
"#,
    ))
    .await;
    a.healthy.store(false, Ordering::SeqCst);
    gw.eventually("a taken out", || async {
        let before = a.hits.load(Ordering::SeqCst);
        for _ in 0..10 {
            gw.get("app.test", "/").await;
        }
        a.hits.load(Ordering::SeqCst) == before
    })
    .await;
    a.healthy.store(true, Ordering::SeqCst);
    gw.eventually("a back in", || async {
        let before = a.hits.load(Ordering::SeqCst);
        for _ in 0..4 {
            gw.get("app.test", "/").await;
        }
        a.hits.load(Ordering::SeqCst) > before
    })
    .await;
}

#[tokio::test]
async fn a_downed_backend_leaves_rotation_and_returns_when_it_recovers() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let gw = Gateway::insecure(&route(
        &format!("[{}, {}]", a.url(), b.url()),
        "    health_checks:\n      - interval: 100ms\n        timeout: 500ms\n        tcp_health_check: {}\n",
    ))
    .await;
    let a_addr = a.addr;
    a.stop();
    drop(a);
    gw.eventually("every request served by b", || async {
        let mut all_b = true;
        for _ in 0..6 {
            let r = gw.get("app.test", "/").await;
            all_b &= r.status == 200 && r.echo().server == "b";
        }
        all_b
    })
    .await;
    let a = Upstream::echo_at("a", a_addr).await;
    gw.eventually("a back in rotation", || async {
        gw.get("app.test", "/").await;
        a.hits.load(Ordering::SeqCst) > 0
    })
    .await;
}

#[tokio::test]
async fn tcp_health_check_and_no_healthy_upstream() {
    let a = Upstream::echo("a").await;
    // A port nothing listens on: the TCP check fails and the only backend goes out.
    let dead = crate::support::free_port();
    let gw = Gateway::insecure(&route(
        &format!("[{}, http://127.0.0.1:{dead}]", a.url()),
        "    health_checks:\n      - interval: 100ms\n        tcp_health_check: {}\n",
    ))
    .await;
    gw.eventually("dead backend out", || async {
        let mut all_ok = true;
        for _ in 0..6 {
            all_ok &= gw.get("app.test", "/").await.status == 200;
        }
        all_ok
    })
    .await;

    let gw = Gateway::insecure(&route(
        &format!("http://127.0.0.1:{dead}"),
        "    health_checks:\n      - interval: 100ms\n        tcp_health_check: {}\n",
    ))
    .await;
    gw.eventually("503 once the only backend is unhealthy", || async {
        gw.get("app.test", "/").await.status == 503
    })
    .await;
}

/// Envoy's `always_log_health_check_failures` / `_success` (real configs carry them): every
/// check's result is logged, not only the change between healthy and unhealthy.
#[tokio::test]
async fn health_check_logging_fields_log_every_result() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let checks = |extra: &str| {
        format!("    health_checks:\n      - interval: 100ms\n        timeout: 500ms\n        tcp_health_check: {{}}\n{extra}")
    };
    let to = format!("[{}, {}]", a.url(), b.url());
    let chatty = Gateway::insecure(&route(
        &to,
        &checks("        always_log_health_check_failures: true\n        always_log_health_check_success: true\n"),
    ))
    .await;
    let quiet = Gateway::insecure(&route(&to, &checks(""))).await;
    a.stop();
    let count = |log: &str, what: &str| log.lines().filter(|l| l.contains(what)).count();
    chatty
        .eventually("several failed checks logged", || async {
            count(&chatty.log(), "upstream health check failed") >= 3
                && count(&chatty.log(), "upstream health check passed") >= 3
        })
        .await;
    quiet
        .eventually("the backend marked unhealthy", || async {
            quiet.log().contains("upstream backend is unhealthy")
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let log = quiet.log();
    assert_eq!(count(&log, "upstream health check failed"), 0, "{log}");
    assert_eq!(count(&log, "upstream backend is unhealthy"), 1, "{log}");
}
