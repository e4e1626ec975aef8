//! Pomerium's deprecated per-route client CA (`tls_downstream_client_ca_file`, in its own
//! acceptance config): the route answers 495 unless the connection presented a certificate that
//! CA issued; other routes on the listener are untouched.

use crate::support::certs::{Leaf, TestCa};
use crate::support::{free_port, Gateway, Upstream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTPS GET on a fresh connection; the status, or why there was none.
async fn status(
    port: u16,
    server_ca: &TestCa,
    host: &str,
    id: Option<&Leaf>,
) -> Result<u16, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(server_ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match id {
        Some(leaf) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut buf),
    )
    .await;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no response: {:?}", String::from_utf8_lossy(&buf)))
}

#[tokio::test]
async fn a_route_with_its_own_client_ca_wants_a_certificate_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("server");
    let (cert, key) = server_ca
        .server(&["mtls.localhost", "open.localhost"])
        .write(dir.path(), "server");
    let corp = TestCa::new("corp devices");
    let corp_file = corp.write(dir.path(), "corp-ca");
    let rogue = TestCa::new("rogue");
    let up = Upstream::echo("app").await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ncertificates:\n  - cert: {}\n    key: {}\n\
         routes:\n  - from: https://mtls.localhost\n    to: {u}\n    tls_downstream_client_ca_file: {}\n    allow_public_unauthenticated_access: true\n\
         \x20 - from: https://open.localhost\n    to: {u}\n    allow_public_unauthenticated_access: true\n",
        cert.display(),
        key.display(),
        corp_file.display(),
        u = up.url(),
    );
    let gw = Gateway::start_with(port, &text, &[]).await;
    let device = corp.client("laptop-1");
    let stranger = rogue.client("laptop-2");
    let ca = &server_ca;
    let ok = |r: Result<u16, String>| r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ok(status(port, ca, "mtls.localhost", Some(&device)).await),
        200
    );
    assert_eq!(ok(status(port, ca, "mtls.localhost", None).await), 495);
    assert_eq!(
        ok(status(port, ca, "mtls.localhost", Some(&stranger)).await),
        495
    );
    assert_eq!(
        ok(status(port, ca, "open.localhost", None).await),
        200,
        "other routes ask nothing"
    );
    assert_eq!(
        ok(status(port, ca, "open.localhost", Some(&stranger)).await),
        200
    );
    assert!(
        gw.log()
            .contains("tls_downstream_client_ca_file: deprecated in Pomerium"),
        "{}",
        gw.log()
    );
}
