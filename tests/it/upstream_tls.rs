//! TLS to upstreams: a private CA, a client certificate, the server name to verify.

use crate::support::certs::TestCa;
use crate::support::{Gateway, Upstream};

#[tokio::test]
async fn custom_ca_client_certificate_and_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("upstream CA");
    let client_ca = TestCa::new("client CA");
    let up = Upstream::echo_tls(
        "tls",
        &server_ca.server(&["upstream.internal"]),
        Some(&client_ca.pem),
    )
    .await;
    let ca_file = server_ca.write(dir.path(), "server-ca");
    let (cert, key) = client_ca.client("vallum").write(dir.path(), "client");
    let to = format!("https://127.0.0.1:{}", up.port());
    let gw = Gateway::insecure(&format!(
        r#"
routes:
  - from: http://good.test
    to: {to}
    tls_upstream_server_name: upstream.internal
    tls_custom_ca_file: {ca}
    tls_client_cert_file: {cert}
    tls_client_key_file: {key}
    allow_public_unauthenticated_access: true
  - from: http://alias.test
    to: {to}
    tls_server_name: upstream.internal
    tls_custom_ca: {ca_b64}
    tls_client_cert_file: {cert}
    tls_client_key_file: {key}
    allow_public_unauthenticated_access: true
  - from: http://nocert.test
    to: {to}
    tls_upstream_server_name: upstream.internal
    tls_custom_ca_file: {ca}
    allow_public_unauthenticated_access: true
  - from: http://noca.test
    to: {to}
    tls_upstream_server_name: upstream.internal
    tls_client_cert_file: {cert}
    tls_client_key_file: {key}
    allow_public_unauthenticated_access: true
  - from: http://wrongname.test
    to: {to}
    tls_upstream_server_name: other.internal
    tls_custom_ca_file: {ca}
    tls_client_cert_file: {cert}
    tls_client_key_file: {key}
    allow_public_unauthenticated_access: true
  - from: http://skip.test
    to: {to}
    tls_skip_verify: true
    tls_client_cert_file: {cert}
    tls_client_key_file: {key}
    allow_public_unauthenticated_access: true
"#,
        ca = ca_file.display(),
        cert = cert.display(),
        key = key.display(),
        ca_b64 = base64_encode(server_ca.pem.as_bytes()),
    ))
    .await;
    let r = gw.get("good.test", "/hello").await;
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.log());
    assert!(
        r.echo().client_cert,
        "the upstream saw Vallum's client certificate"
    );
    assert_eq!(
        gw.get("alias.test", "/").await.status,
        200,
        "tls_server_name and inline base64 CA work too"
    );
    assert_eq!(
        gw.get("nocert.test", "/").await.status,
        502,
        "the upstream demands a client certificate"
    );
    assert_eq!(
        gw.get("noca.test", "/").await.status,
        502,
        "the private CA is not trusted by default"
    );
    assert_eq!(
        gw.get("wrongname.test", "/").await.status,
        502,
        "the certificate must match the server name"
    );
    assert_eq!(
        gw.get("skip.test", "/").await.status,
        200,
        "tls_skip_verify skips verification"
    );
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
