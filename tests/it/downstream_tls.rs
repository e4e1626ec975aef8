//! Downstream TLS: certificates chosen by SNI, HTTP/2 over ALPN, and the HTTP→HTTPS redirect
//! listener.

use crate::support::certs::TestCa;
use crate::support::{free_port, Gateway, Upstream};
use std::time::Duration;

fn tls_client(ca: &TestCa, host: &str, port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn sni_selects_the_certificate_and_h2_is_negotiated() {
    let dir = tempfile::tempdir().unwrap();
    let ca_a = TestCa::new("CA A");
    let ca_b = TestCa::new("CA B");
    let (a_cert, a_key) = ca_a.server(&["a.localhost"]).write(dir.path(), "a");
    let (b_cert, b_key) = ca_b.server(&["*.b.localhost"]).write(dir.path(), "b");
    let up = Upstream::echo("up").await;
    let port = free_port();
    let redirect_port = free_port();
    let text = format!(
        r#"
address: 127.0.0.1:{port}
http_redirect_addr: 127.0.0.1:{redirect_port}
certificates:
  - cert: {a_cert}
    key: {a_key}
  - cert: {b_cert}
    key: {b_key}
routes:
  - from: https://a.localhost
    to: {u}
    allow_public_unauthenticated_access: true
  - from: https://*.b.localhost
    to: {u}
    allow_public_unauthenticated_access: true
"#,
        a_cert = a_cert.display(),
        a_key = a_key.display(),
        b_cert = b_cert.display(),
        b_key = b_key.display(),
        u = up.url(),
    );
    let gw = Gateway::start_in(dir, port, &text, &[]).await;

    let r = tls_client(&ca_a, "a.localhost", port)
        .get(format!("https://a.localhost:{port}/x"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", gw.log()));
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    assert_eq!(
        r.headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap()),
        Some("max-age=31536000; includeSubDomains; preload"),
        "HSTS by default when serving TLS"
    );
    let echo: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    // The wildcard certificate from the other CA is chosen for its names.
    let r = tls_client(&ca_b, "app.b.localhost", port)
        .get(format!("https://app.b.localhost:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A client that trusts only CA B cannot be served a.localhost (it gets CA A's certificate).
    assert!(tls_client(&ca_b, "a.localhost", port)
        .get(format!("https://a.localhost:{port}/"))
        .send()
        .await
        .is_err());

    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{redirect_port}/some/path?q=1"))
        .header("host", "a.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers().get("location").unwrap().to_str().unwrap(),
        format!("https://a.localhost:{port}/some/path?q=1")
    );
}

/// The request head's deadline holds on TLS listeners too: a client that completes the
/// handshake, sends part of a head and waits loses the connection at `timeout_read`.
#[tokio::test]
async fn a_partial_head_over_tls_loses_its_connection() {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("CA");
    let (cert, key) = ca.server(&["a.localhost"]).write(dir.path(), "a");
    let up = Upstream::echo("up").await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ntimeout_read: 1s\ncertificates:\n  - cert: {}\n    key: {}\n\
         routes:\n  - from: https://a.localhost\n    to: {}\n    allow_public_unauthenticated_access: true\n",
        cert.display(),
        key.display(),
        up.url()
    );
    let gw = Gateway::start_in(dir, port, &text, &[]).await;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = ServerName::try_from("a.localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake: {e}\n{}", gw.log()));
    let start = std::time::Instant::now();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: a.localhost\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(8), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => break None,
        }
    };
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(4)),
        "partial head over TLS held {closed:?}"
    );
}

/// TLS on and no certificate configured (Pomerium's own example config does this): the gateway
/// starts, serves a self-signed certificate for its route hosts, and says so at startup.
#[tokio::test]
async fn without_a_certificate_a_self_signed_one_is_served() {
    let up = Upstream::echo("up").await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\nshared_secret: Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=\n\
         routes:\n  - from: https://a.localhost\n    to: {}\n    allow_public_unauthenticated_access: true\n",
        up.url()
    );
    let gw = Gateway::start_in(tempfile::tempdir().unwrap(), port, &text, &[]).await;
    assert!(
        gw.log()
            .contains("serving a self-signed certificate for a.localhost"),
        "{}",
        gw.log()
    );
    // A client that trusts the system roots refuses it; one told to accept it is served.
    let client = |accept_any: bool| {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(accept_any)
            .resolve(
                "a.localhost",
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            )
            .no_proxy()
            .build()
            .unwrap()
    };
    let (strict, lenient) = (client(false), client(true));
    assert!(strict
        .get(format!("https://a.localhost:{port}/"))
        .send()
        .await
        .is_err());
    let r = lenient
        .get(format!("https://a.localhost:{port}/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", gw.log()));
    assert_eq!(r.status(), 200);
}
