//! Pomerium keys real configs carry, with Pomerium's meaning: `xff_num_trusted_hops`,
//! `proxy_log_level`, and keys Pomerium dropped long ago (accepted with a warning, where a typo
//! stays an error).

use crate::support::{bin, Gateway, Upstream};
use reqwest::Method;

fn public_route(to: &str, extra: &str) -> String {
    format!(
        "routes:\n  - from: http://app.test\n    to: {to}\n    policy:\n      allow:\n        and:\n          - source_ip: 192.0.5.0/24\n{extra}"
    )
}

#[tokio::test]
async fn xff_num_trusted_hops_takes_the_client_from_the_proxy_in_front() {
    let up = Upstream::echo("up").await;
    let behind = Gateway::insecure(&format!(
        "xff_num_trusted_hops: 1\n{}",
        public_route(&up.url(), "")
    ))
    .await;
    let lb = [
        ("x-forwarded-for", "192.0.5.1"),
        ("x-forwarded-proto", "https"),
    ];
    let r = behind.request(Method::GET, "app.test", "/", &lb).await;
    assert_eq!(
        r.status, 200,
        "the load balancer's client is in 192.0.5.0/24"
    );
    let echo = r.echo();
    assert_eq!(echo.header("x-forwarded-for"), Some("192.0.5.1, 127.0.0.1"));
    assert_eq!(
        echo.header("x-forwarded-proto"),
        Some("https"),
        "TLS ended at the load balancer"
    );
    // No forwarded address: the client is the peer, outside the range.
    assert_eq!(behind.get("app.test", "/").await.status, 403);
    // Two entries: the right-most one was written by the proxy; the left one by the client.
    let spoofed = [("x-forwarded-for", "192.0.5.9, 10.9.9.9")];
    let r = behind.request(Method::GET, "app.test", "/", &spoofed).await;
    assert_eq!(r.status, 403, "only the trusted hop's entry counts");

    // Without the key, forwarded headers from a peer prove nothing (Vallum's default).
    let direct = Gateway::insecure(&public_route(&up.url(), "")).await;
    let r = direct.request(Method::GET, "app.test", "/", &lb).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn proxy_log_level_sets_the_access_log_level() {
    let up = Upstream::echo("up").await;
    let route = format!(
        "routes:\n  - from: http://app.test\n    to: {}\n    allow_public_unauthenticated_access: true\n",
        up.url()
    );
    // VALLUM_LOG empty: the config's levels decide.
    let env = [("VALLUM_LOG", "")];
    let quiet = Gateway::start_with_env(&format!("proxy_log_level: error\n{route}"), &env).await;
    let loud = Gateway::start_with_env(&route, &env).await;
    for gw in [&quiet, &loud] {
        assert_eq!(gw.get("app.test", "/").await.status, 200);
    }
    loud.eventually("the access line is written", || async {
        loud.log().contains("http-request")
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = quiet.log();
    assert!(!log.contains("http-request"), "{log}");
    assert!(
        log.contains("starting vallum"),
        "log_level info still applies to Vallum's own lines:\n{log}"
    );
}

#[tokio::test]
async fn keys_pomerium_dropped_warn_and_typos_stay_errors() {
    let up = Upstream::echo("up").await;
    let route = format!(
        "routes:\n  - from: http://app.test\n    to: {}\n    allow_public_unauthenticated_access: true\n",
        up.url()
    );
    let gw = Gateway::insecure(&format!(
        "pomerium_debug: true\nsigning_key_algorithm: ES256\ngrpc_client_dns_roundrobin: false\n{route}"
    ))
    .await;
    assert_eq!(gw.get("app.test", "/").await.status, 200);
    let log = gw.log();
    assert!(
        log.contains("pomerium_debug: removed in Pomerium 0.25"),
        "{log}"
    );
    assert!(
        log.contains("signing_key_algorithm: no longer read by Pomerium"),
        "{log}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(
        &path,
        format!("insecure_server: true\npomerium_debugg: true\n{route}"),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pomerium_debugg: unknown key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pomerium starts with an incomplete identity provider until someone needs to sign in; so does
/// Vallum: a warning while every route is public, the errors once a route needs a user.
#[tokio::test]
async fn idp_keys_are_required_only_when_a_route_needs_sign_in() {
    let up = Upstream::echo("up").await;
    let config = format!(
        "authenticate_service_url: http://auth.test\nidp_provider: oidc\n\
         routes:\n  - from: http://app.test\n    to: {}\n    allow_public_unauthenticated_access: true\n",
        up.url()
    );
    let gw = Gateway::insecure(&config).await;
    assert_eq!(gw.get("app.test", "/").await.status, 200);
    assert!(
        gw.log().contains("idp_client_id: required")
            && gw.log().contains("no route needs a signed-in user"),
        "{}",
        gw.log()
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vallum.yaml");
    std::fs::write(
        &path,
        format!(
            "insecure_server: true\n{config}  - from: http://private.test\n    to: {}\n    allow_any_authenticated_user: true\n",
            up.url()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("idp_client_id: required"), "{err}");
    assert!(err.contains("idp_provider_url: required"), "{err}");
}

/// `host_rewrite_header: true` (a real config has it) names no header: Pomerium reads it as the
/// header `1` and changes nothing; Vallum starts, says so, and keeps its default Host.
#[tokio::test]
async fn a_boolean_host_rewrite_header_changes_nothing_and_says_so() {
    let up = Upstream::echo("up").await;
    let gw = Gateway::insecure(&format!(
        "routes:\n  - from: http://app.test\n    to: {}\n    host_rewrite_header: true\n    allow_public_unauthenticated_access: true\n",
        up.url()
    ))
    .await;
    let r = gw.get("app.test", "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.echo().header("host"),
        Some(format!("127.0.0.1:{}", up.port()).as_str()),
        "the upstream's own Host, as without the key"
    );
    assert!(
        gw.log()
            .contains("routes[0].host_rewrite_header: takes the name of the request header"),
        "{}",
        gw.log()
    );
}
