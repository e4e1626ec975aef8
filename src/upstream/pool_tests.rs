//! The pool's balancing, health and outlier behaviour, on literal backends.

use super::*;

fn target(port: u16) -> UpstreamTarget {
    UpstreamTarget {
        literal: Some(BackendAddr::Inet(([127, 0, 0, 1], port).into())),
        port,
        tls: false,
        codec: UpstreamCodec::Auto,
        authority: format!("127.0.0.1:{port}"),
        host_value: None,
        host: "127.0.0.1".into(),
        path_prefix: String::new(),
        weight: 1,
    }
}

#[test]
fn hash_policy_is_sticky_per_key() {
    let pool = pool_of(&[1001, 1002, 1003], LbPolicy::Hash);
    let first = pool.pick(b"10.0.0.1").unwrap().target;
    for _ in 0..20 {
        assert_eq!(pool.pick(b"10.0.0.1").unwrap().target, first);
    }
    let spread: std::collections::HashSet<usize> = (0..50)
        .map(|i| pool.pick(format!("10.0.0.{i}").as_bytes()).unwrap().target)
        .collect();
    assert!(spread.len() > 1, "different keys spread over backends");
}

#[test]
fn least_request_counts_in_flight() {
    let pool = pool_of(&[1001, 1002], LbPolicy::LeastRequest);
    let busy = pool.pick(b"").unwrap();
    for _ in 0..5 {
        assert_ne!(pool.pick(b"").unwrap().target, busy.target);
    }
    let busy_target = busy.target;
    drop(busy);
    let a = pool.pick(b"").unwrap();
    let b = pool.pick(b"").unwrap();
    assert_ne!(a.target, b.target, "with one in flight each, both are used");
    let _ = busy_target;
}

#[test]
fn done_releases_the_backend_once() {
    let pool = pool_of(&[1001, 1002], LbPolicy::LeastRequest);
    let mut first = pool.pick(b"").unwrap();
    assert_ne!(pool.pick(b"").unwrap().target, first.target, "busy");
    first.done();
    first.done();
    // Released once, not twice (a count below zero would wrap and shun that backend), and
    // dropping it afterwards releases nothing more.
    drop(first);
    let again = pool.pick(b"").unwrap();
    let other = pool.pick(b"").unwrap();
    assert_ne!(again.target, other.target, "both idle again");
    let third = pool.pick(b"").unwrap();
    let fourth = pool.pick(b"").unwrap();
    assert_ne!(
        third.target, fourth.target,
        "one each in flight: still alternating"
    );
}

fn checked(ports: &[u16], policy: LbPolicy, health: Vec<super::super::health::HealthSpec>) -> Pool {
    Pool::new(PoolSpec {
        key: "k".into(),
        targets: ports.iter().map(|p| target(*p)).collect(),
        tls: UpstreamTls::default(),
        policy,
        health,
        resolver: Arc::new(Resolver::new(Default::default())),
        outlier: None,
        panic_threshold: 0,
    })
}

fn pool_of(ports: &[u16], policy: LbPolicy) -> Pool {
    checked(ports, policy, Vec::new())
}

fn single(policy: LbPolicy, health: Vec<super::super::health::HealthSpec>) -> Pool {
    checked(&[1], policy, health)
}

#[test]
fn one_unchecked_backend_is_picked_without_a_key() {
    let pool = single(LbPolicy::Hash, Vec::new());
    assert!(
        !pool.uses_key(),
        "one backend: the hash key changes nothing"
    );
    assert_eq!(
        Some(pool.pick(b"").unwrap().addr.backend()),
        target(1).literal
    );
    let two = pool_of(&[1001, 1002], LbPolicy::Hash);
    assert!(two.uses_key());
}

#[tokio::test]
async fn one_checked_backend_still_leaves_rotation_when_it_fails() {
    use super::super::health::{HealthKind, HealthSpec};
    // Port 1 on loopback refuses connections: the check fails at once.
    let pool = single(
        LbPolicy::RoundRobin,
        vec![HealthSpec {
            kind: HealthKind::Tcp {
                send: Vec::new(),
                receive: Vec::new(),
            },
            timeout: Duration::from_millis(200),
            interval: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            log_success: false,
            log_failures: false,
        }],
    );
    assert!(
        pool.pick(b"").is_some(),
        "healthy until a check says otherwise"
    );
    pool.run_health_checks().await;
    assert!(
        pool.pick(b"").is_none(),
        "the fast path must not skip the health state"
    );
}
