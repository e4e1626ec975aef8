//! Automatic certificates against a real ACME CA (Let's Encrypt's `pebble`, validating the
//! gateway's real listeners): an order over HTTP-01 and over TLS-ALPN-01, the certificate served
//! and kept for the next start, a due certificate renewed, a failed order that keeps the old
//! certificate serving, and a two-node fleet on one Redis that orders each host once.

use crate::ops::sample;
use crate::support::idp::Idp;
use crate::support::pebble::Pebble;
use crate::support::redis::RedisServer;
use crate::support::{free_port, scrape, Gateway, Upstream};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const HOST: &str = "app.acme.test";

/// A client that trusts only `root_pem` and reaches `host` at the gateway's port.
fn trusting(root_pem: &str, host: &str, port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .resolve(host, SocketAddr::from(([127, 0, 0, 1], port)))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The leaf certificate (DER) the gateway serves for `HOST`.
async fn served(port: u16) -> Vec<u8> {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    let r = client
        .get(format!("https://{HOST}:{port}/"))
        .send()
        .await
        .unwrap();
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    info.peer_certificate().unwrap().to_vec()
}

/// Waits (up to 60 s) until a client trusting pebble's root gets through to the upstream.
async fn until_trusted(gw: &Gateway, pebble: &Pebble, port: u16) {
    until_host_trusted(gw, pebble, HOST, port).await
}

async fn until_host_trusted(gw: &Gateway, pebble: &Pebble, host: &str, port: u16) {
    let client = trusting(&pebble.issuing_root().await, host, port);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get(format!("https://{host}:{port}/")).send().await {
            Ok(r) if r.status() == 200 => return,
            other => assert!(
                Instant::now() < deadline,
                "no trusted certificate for {host}: {other:?}\nlog:\n{}",
                gw.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn config(
    pebble: &Pebble,
    keep: &Path,
    tls: u16,
    http: Option<u16>,
    metrics: u16,
    up: &Upstream,
) -> String {
    let redirect = http
        .map(|p| format!("http_redirect_addr: 127.0.0.1:{p}\n"))
        .unwrap_or_default();
    format!(
        "address: 127.0.0.1:{tls}\n{redirect}metrics_address: 127.0.0.1:{metrics}\n{acme}\
         routes:\n  - from: https://{HOST}\n    to: {u}\n    allow_public_unauthenticated_access: true\n",
        acme = pebble.autocert_keys(keep),
        u = up.url()
    )
}

/// One gateway's surroundings: its ports, a CA validating against them (or, `reachable` false,
/// against ports nobody listens on), the upstream, and the directory certificates are kept in.
struct Site {
    tls: u16,
    http: u16,
    metrics: u16,
    pebble: Pebble,
    up: Upstream,
    keep: tempfile::TempDir,
}

impl Site {
    async fn new(reachable: bool) -> Site {
        let (tls, http, metrics) = (free_port(), free_port(), free_port());
        let pebble = match reachable {
            true => Pebble::start(http, tls).await,
            false => Pebble::start(free_port(), free_port()).await,
        };
        let up = Upstream::echo("app").await;
        let keep = tempfile::tempdir().unwrap();
        Site {
            tls,
            http,
            metrics,
            pebble,
            up,
            keep,
        }
    }

    /// `http_listener`: with `http_redirect_addr` (HTTP-01 first), else TLS-ALPN-01 only.
    fn config(&self, http_listener: bool) -> String {
        let http = http_listener.then_some(self.http);
        config(
            &self.pebble,
            self.keep.path(),
            self.tls,
            http,
            self.metrics,
            &self.up,
        )
    }
}

async fn orders(metrics: u16, outcome: &str) -> f64 {
    let (_, text) = scrape(metrics, None).await;
    sample(
        &text,
        &format!("vallum_autocert_orders_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap_or(0.0)
}

/// A self-signed certificate for `HOST` that is 60 days into a 90-day life (so due for
/// renewal), filed where the gateway keeps its certificates. Returns its DER.
fn seed_due_certificate(keep: &Path) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![HOST.to_string()]).unwrap();
    let now = std::time::SystemTime::now();
    p.not_before = (now - Duration::from_secs(60 * 86_400)).into();
    p.not_after = (now + Duration::from_secs(30 * 86_400)).into();
    let cert = p.self_signed(&key).unwrap();
    let dir = keep.join("certificates");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{HOST}.pem")),
        format!("{}{}", cert.pem(), key.serialize_pem()),
    )
    .unwrap();
    cert.der().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_is_ordered_over_http01_served_and_kept_for_the_next_start() {
    let site = Site::new(true).await;
    let (tls, http, metrics, pebble) = (site.tls, site.http, site.metrics, &site.pebble);
    let text = site.config(true);
    let gw = Gateway::start_with(tls, &text, &[]).await;
    until_trusted(&gw, pebble, tls).await;
    assert!(gw.log_has("autocert: certificate issued"), "{}", gw.log());
    assert!(
        gw.log_has("Http01"),
        "HTTP-01 is used when http_redirect_addr is set"
    );
    assert_eq!(orders(metrics, "issued").await, 1.0);
    let (_, text_metrics) = scrape(metrics, None).await;
    let expiry = sample(
        &text_metrics,
        &format!("vallum_autocert_certificate_expiry_timestamp_seconds{{host=\"{HOST}\"}}"),
    )
    .expect("expiry gauge");
    assert!(
        expiry
            > (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 86_400) as f64
    );
    let file = site
        .keep
        .path()
        .join("certificates")
        .join(format!("{HOST}.pem"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The HTTP listener answers only live challenges; everything else still goes to HTTPS.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(format!(
            "http://127.0.0.1:{http}/.well-known/acme-challenge/no-such-token"
        ))
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = plain
        .get(format!("http://127.0.0.1:{http}/x"))
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    let issued = served(tls).await;

    // A restart serves the kept certificate without ordering again.
    drop(gw);
    let gw = Gateway::start_with(tls, &text, &[]).await;
    until_trusted(&gw, pebble, tls).await;
    assert_eq!(served(tls).await, issued);
    assert!(gw.log_has("autocert: certificate loaded"), "{}", gw.log());
    assert_eq!(orders(metrics, "issued").await, 0.0, "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_http_listener_the_tls_alpn_challenge_is_answered_and_reloads_add_hosts() {
    let site = Site::new(true).await;
    let (tls, metrics, pebble, up) = (site.tls, site.metrics, &site.pebble, &site.up);
    let text = site.config(false);
    let gw = Gateway::start_with(tls, &text, &[]).await;
    until_trusted(&gw, pebble, tls).await;
    assert!(gw.log_has("TlsAlpn01"), "{}", gw.log());
    assert_eq!(orders(metrics, "issued").await, 1.0);
    // Readiness re-checks once a second: the host goes from "ordering" to served.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, text) = scrape(metrics, None).await;
        if sample(&text, "vallum_ready{component=\"certificates\"}") == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "certificates never reported ready:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A host added by a reload gets its certificate without a restart.
    let added = "added.acme.test";
    gw.rewrite_config(&format!(
        "{text}  - from: https://{added}\n    to: {u}\n    allow_public_unauthenticated_access: true\n",
        u = up.url()
    ));
    until_host_trusted(&gw, pebble, added, tls).await;
    assert_eq!(orders(metrics, "issued").await, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_due_certificate_is_renewed_and_swapped_in_without_a_restart() {
    let site = Site::new(true).await;
    let (tls, pebble, keep) = (site.tls, &site.pebble, &site.keep);
    let seeded = seed_due_certificate(keep.path());
    let gw = Gateway::start_with(tls, &site.config(true), &[]).await;
    until_trusted(&gw, pebble, tls).await;
    assert_ne!(served(tls).await, seeded);
    assert!(gw.log_has("renewal=true"), "{}", gw.log());
    let on_disk =
        std::fs::read_to_string(keep.path().join("certificates").join(format!("{HOST}.pem")))
            .unwrap();
    assert!(
        !on_disk.contains(&base64_of(&seeded)[..64]),
        "the renewed certificate replaced the old file"
    );
}

fn base64_of(der: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(der)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_order_keeps_the_old_certificate_serving_and_readiness_names_the_host_without_one()
{
    // The validator is sent to ports nobody listens on: every challenge fails.
    let site = Site::new(false).await;
    let (tls, metrics, probes) = (site.tls, site.metrics, free_port());
    let seeded = seed_due_certificate(site.keep.path());
    let fresh = "fresh.acme.test";
    let text = format!(
        "health_check_addr: 127.0.0.1:{probes}\n{}  - from: https://{fresh}\n    to: {u}\n    allow_public_unauthenticated_access: true\n",
        site.config(false),
        u = site.up.url()
    );
    let gw = Gateway::start_with(tls, &text, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while orders(metrics, "failed").await < 2.0 {
        assert!(Instant::now() < deadline, "no failed orders\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        served(tls).await,
        seeded,
        "the old certificate keeps serving"
    );
    assert!(gw.log_has("serving_old_certificate=true"), "{}", gw.log());
    assert!(
        gw.log_has("Failed to connect"),
        "the CA's reason is logged: {}",
        gw.log()
    );
    assert_eq!(orders(metrics, "issued").await, 0.0);
    // The host without any certificate is named, with the reason, and the node stays ready.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let r = reqwest::get(format!("http://127.0.0.1:{probes}/status"))
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let c = body["components"]["certificates"].clone();
        if c["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Failed to connect"))
        {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let detail = status["components"]["certificates"]["detail"]
        .as_str()
        .unwrap();
    assert!(detail.contains(fresh) && !detail.contains(HOST), "{detail}");
    assert_eq!(status["components"]["certificates"]["status"], "not ready");
    assert_eq!(status["ready"], true, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_sharing_redis_order_each_host_once_and_serve_the_same_certificate() {
    let redis = RedisServer::start().await;
    let idp = Idp::start().await;
    let up = Upstream::echo("app").await;
    let (a, a_http, b, b_http) = (free_port(), free_port(), free_port(), free_port());
    // The CA validates against node A's ports, like a load balancer that picked A.
    let pebble = Pebble::start(a_http, a).await;
    let secrets = "cookie_secret: 8GIP1sU0aqXJZ8T8XkL1zB0cR2P0kTmYxw0a3DkBwsw=\nshared_secret: Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=\n";
    let node = |tls: u16, http: u16, metrics: u16| {
        let keep = tempfile::tempdir().unwrap();
        let text = format!(
            "{}authenticate_service_url: https://auth.acme.test\n{secrets}{}\
             databroker_storage_type: redis\ndatabroker_storage_connection_string: {}\n",
            config(&pebble, keep.path(), tls, Some(http), metrics, &up),
            idp.config(),
            redis.url()
        );
        (keep, text)
    };
    let (ma, mb) = (free_port(), free_port());
    let (_ka, ta) = node(a, a_http, ma);
    let (_kb, tb) = node(b, b_http, mb);
    let (ga, gb) = tokio::join!(
        Gateway::start_with(a, &ta, &[]),
        Gateway::start_with(b, &tb, &[])
    );
    until_trusted(&ga, &pebble, a).await;
    until_trusted(&gb, &pebble, b).await;
    // Two hosts (the route's and the authenticate host), each ordered by one node.
    let deadline = Instant::now() + Duration::from_secs(60);
    while orders(ma, "issued").await + orders(mb, "issued").await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "A:\n{}\nB:\n{}",
            ga.log(),
            gb.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        orders(ma, "issued").await + orders(mb, "issued").await,
        2.0,
        "A:\n{}\nB:\n{}",
        ga.log(),
        gb.log()
    );
    assert_eq!(
        served(a).await,
        served(b).await,
        "both nodes serve the one certificate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_certificate_wins_over_autocert_for_the_hosts_it_covers() {
    let site = Site::new(true).await;
    let (tls, http, metrics, pebble, up) =
        (site.tls, site.http, site.metrics, &site.pebble, &site.up);
    let keep = &site.keep;
    let own_ca = crate::support::certs::TestCa::new("own CA");
    let (cert, key) = own_ca.server(&[HOST]).write(keep.path(), "own");
    let other = "other.acme.test";
    let text = format!(
        "address: 127.0.0.1:{tls}\nhttp_redirect_addr: 127.0.0.1:{http}\nmetrics_address: 127.0.0.1:{metrics}\n\
         {acme}certificate_file: {cert}\ncertificate_key_file: {key}\nroutes:\n\
         - from: https://{HOST}\n  to: {u}\n  allow_public_unauthenticated_access: true\n\
         - from: https://{other}\n  to: {u}\n  allow_public_unauthenticated_access: true\n",
        acme = pebble.autocert_keys(keep.path()),
        cert = cert.display(),
        key = key.display(),
        u = up.url()
    );
    let gw = Gateway::start_with(tls, &text, &[]).await;
    until_host_trusted(&gw, pebble, other, tls).await;
    until_host_trusted_by(&gw, &own_ca.pem, HOST, tls).await;
    assert_eq!(
        orders(metrics, "issued").await,
        1.0,
        "only the uncovered host is ordered"
    );
}

async fn until_host_trusted_by(gw: &Gateway, root_pem: &str, host: &str, port: u16) {
    let r = trusting(root_pem, host, port)
        .get(format!("https://{host}:{port}/"))
        .send()
        .await;
    assert!(
        r.as_ref().is_ok_and(|r| r.status() == 200),
        "{host} is not served the configured certificate: {r:?}\n{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn short_lived_certificates_are_renewed_before_they_expire() {
    let (tls, http, metrics) = (free_port(), free_port(), free_port());
    // 30-second certificates: renewal is due after 20 s (less up to 1.5 s of jitter).
    let pebble = Pebble::start_with(
        http,
        tls,
        serde_json::json!({ "certificateValidityPeriod": 30 }),
    )
    .await;
    let up = Upstream::echo("app").await;
    let keep = tempfile::tempdir().unwrap();
    let text = config(&pebble, keep.path(), tls, Some(http), metrics, &up);
    let gw = Gateway::start_with(tls, &text, &[]).await;
    until_trusted(&gw, &pebble, tls).await;
    let first = served(tls).await;
    let deadline = Instant::now() + Duration::from_secs(45);
    while orders(metrics, "issued").await < 2.0 {
        assert!(Instant::now() < deadline, "no renewal\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    until_trusted(&gw, &pebble, tls).await;
    assert_ne!(
        served(tls).await,
        first,
        "the renewed certificate is served"
    );
    assert!(gw.log_has("renewal=true"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_that_requires_external_account_binding_gets_it() {
    let (tls, http, metrics) = (free_port(), free_port(), free_port());
    let mac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let pebble = Pebble::start_with(
        http,
        tls,
        serde_json::json!({
            "externalAccountBindingRequired": true,
            "externalAccountMACKeys": { "kid-1": mac },
        }),
    )
    .await;
    let up = Upstream::echo("app").await;
    // A wrong MAC key: the CA refuses the account, and the log says why.
    let keep = tempfile::tempdir().unwrap();
    let eab = |key: &str| format!("autocert_eab_key_id: kid-1\nautocert_eab_mac_key: {key}\n");
    let wrong = format!(
        "{}{}",
        eab("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        config(&pebble, keep.path(), tls, Some(http), metrics, &up)
    );
    let gw = Gateway::start_with(tls, &wrong, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while orders(metrics, "failed").await < 1.0 {
        assert!(Instant::now() < deadline, "no failure\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(gw.log_has("cannot register with"), "{}", gw.log());
    drop(gw);
    // The right one: registered with the binding, and the certificate issued.
    let keep = tempfile::tempdir().unwrap();
    let right = format!(
        "{}{}",
        eab(mac),
        config(&pebble, keep.path(), tls, Some(http), metrics, &up)
    );
    let gw = Gateway::start_with(tls, &right, &[]).await;
    until_trusted(&gw, &pebble, tls).await;
    assert!(gw.log_has("ACME account registered"), "{}", gw.log());
}
