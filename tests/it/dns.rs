//! Upstream host names are looked up when a request needs them, through the `dns_*` settings,
//! against a private DNS server whose answers change while the gateway runs.

use crate::support::dns::DnsServer;
use crate::support::{bin, free_port, Gateway, Upstream};
use std::time::Duration;

const NAME: &str = "app.internal.test";

fn config(dns: &DnsServer, port: u16, other: &str, metrics: u16) -> String {
    format!(
        "dns_resolvers: [\"udp://{}\"]\ndns_failure_refresh_rate: 200ms\nmetrics_address: 127.0.0.1:{metrics}\n\
         routes:\n  - from: http://app.test\n    to: http://{NAME}:{port}\n    allow_public_unauthenticated_access: true\n\
         \x20 - from: http://other.test\n    to: {other}\n    allow_public_unauthenticated_access: true\n",
        dns.addr
    )
}

#[tokio::test]
async fn a_name_that_does_not_resolve_yet_fails_only_its_route_until_it_does() {
    let dns = DnsServer::start().await;
    let port = free_port();
    let a = Upstream::echo_at("a", ([127, 0, 0, 1], port).into()).await;
    let b = Upstream::echo_at("b", ([127, 0, 0, 2], port).into()).await;
    let other = Upstream::echo("other").await;
    // The name is unknown when the gateway starts: it starts anyway.
    let metrics = free_port();
    let gw = Gateway::insecure(&config(&dns, port, &other.url(), metrics)).await;

    let r = gw.get("app.test", "/").await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("does not resolve"), "{}", r.body);
    assert_eq!(
        gw.get("other.test", "/").await.status,
        200,
        "other routes serve"
    );
    assert!(
        gw.log().contains(NAME) && gw.log().contains("NXDOMAIN"),
        "the log names the host and why:\n{}",
        gw.log()
    );
    // Within dns_failure_refresh_rate the failure is remembered: no lookup per request.
    let before = dns.queries.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(gw.get("app.test", "/").await.status, 502);
    }
    let during = dns.queries.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        during <= 2,
        "{during} lookups for 20 requests in the failure window"
    );
    let text = reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("vallum_upstream_unresolved_total{route=\"route-0\"} 21"),
        "{}",
        text.lines()
            .filter(|l| l.contains("unresolved"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The upstream appears in DNS: the route serves once the failure window has passed.
    dns.set(NAME, &[[127, 0, 0, 1]], 1);
    gw.eventually("the route serves from the new name", || async {
        let r = gw.get("app.test", "/").await;
        r.status == 200 && r.echo().server == "a"
    })
    .await;

    // The name moves (TTL 1 s): requests follow it without a reload.
    dns.set(NAME, &[[127, 0, 0, 2]], 1);
    gw.eventually("requests follow the new address", || async {
        gw.get("app.test", "/").await.echo().server == "b"
    })
    .await;

    // Two addresses: both serve.
    dns.set(NAME, &[[127, 0, 0, 1], [127, 0, 0, 2]], 1);
    gw.eventually("both addresses serve", || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10 {
            seen.insert(gw.get("app.test", "/").await.echo().server);
        }
        seen.len() == 2
    })
    .await;

    // The DNS loses the name: the last good addresses keep serving.
    dns.remove(NAME);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for _ in 0..5 {
        assert_eq!(gw.get("app.test", "/").await.status, 200);
    }
    drop((a, b));
}

#[tokio::test]
async fn a_moved_upstream_is_looked_up_again_after_a_failed_connection() {
    let dns = DnsServer::start().await;
    let port = free_port();
    let b = Upstream::echo_at("b", ([127, 0, 0, 2], port).into()).await;
    // A long TTL: only the failed connection makes the gateway ask again.
    dns.set(NAME, &[[127, 0, 0, 1]], 3600);
    let gw = Gateway::insecure(&config(&dns, port, &b.url(), free_port())).await;
    assert_eq!(gw.get("app.test", "/").await.status, 502, "nothing on .1");
    dns.set(NAME, &[[127, 0, 0, 2]], 3600);
    gw.eventually("the moved upstream is found", || async {
        gw.get("app.test", "/").await.status == 200
    })
    .await;
}

#[test]
fn check_config_warns_about_names_and_accepts_the_config() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dns = rt.block_on(DnsServer::start());
    dns.set("known.internal.test", &[[127, 0, 0, 1]], 60);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vallum.yaml");
    std::fs::write(
        &path,
        format!(
            "insecure_server: true\ndns_resolvers: [\"{}\"]\nroutes:\n  - from: http://a.test\n    to: http://known.internal.test:8080\n    allow_public_unauthenticated_access: true\n\
             \x20 - from: http://b.test\n    to: http://{NAME}:8080\n    allow_public_unauthenticated_access: true\n\
             \x20 - from: tcp+http://db.test:5432\n    to: tcp://db.internal.test:5432\n    allow_public_unauthenticated_access: true\n",
            dns.addr
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("warning: cannot resolve"))
        .collect();
    assert_eq!(warnings.len(), 2, "{text}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(NAME) && w.contains("NXDOMAIN")),
        "{text}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("db.internal.test")),
        "{text}"
    );
    assert!(
        !text.contains("cannot resolve known.internal.test"),
        "{text}"
    );
}
