//! Downstream mTLS: certificates made here (root, intermediate, leaves, a revoked leaf and its
//! CRL, an expired leaf, a rogue CA), presented by a real rustls client, against each
//! enforcement mode, each `client_certificate` matcher, SAN rules, verify depth, the 495 page
//! before any sign-in redirect, and the domain-fronting refusal.

use crate::support::certs::TestCa;
use crate::support::idp::Idp;
use crate::support::{free_port, Gateway, Upstream};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate a client presents: its chain (leaf first) and key.
#[derive(Clone)]
struct ClientId {
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl ClientId {
    fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.chain[0].as_ref()).into()
    }
    fn fingerprint_hex(&self) -> String {
        self.fingerprint()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
    fn fingerprint_colons(&self) -> String {
        self.fingerprint()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
    fn spki_hash(&self) -> String {
        let (_, x) = x509_parser::parse_x509_certificate(self.chain[0].as_ref()).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(x.tbs_certificate.subject_pki.raw))
    }
}

impl Ca {
    fn root(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params(name).self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn intermediate(&self, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params(name)
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn leaf(&self, serial: u64, sans: &[SanType], expired: bool) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, format!("device {serial}"));
        p.subject_alt_names = sans.to_vec();
        p.serial_number = Some(SerialNumber::from(serial));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            p.not_before = rcgen::date_time_ymd(2019, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        (p.signed_by(&key, &self.cert, &self.key).unwrap(), key)
    }

    fn client(&self, serial: u64, sans: &[SanType], expired: bool) -> ClientId {
        let (cert, key) = self.leaf(serial, sans, expired);
        ClientId {
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
        }
    }

    fn crl(&self, revoked: &[u64]) -> String {
        CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2036, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2026, 2, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .pem()
        .unwrap()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn email(s: &str) -> SanType {
    SanType::Rfc822Name(s.try_into().unwrap())
}
fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}
fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

/// The client PKI every test uses.
struct Pki {
    root: Ca,
    /// Trusted: alice@example.com, laptop.corp.example, spiffe://corp.example/laptop.
    good: ClientId,
    /// Trusted, other SANs.
    other: ClientId,
    /// Issued by an intermediate (chain sent: leaf, intermediate).
    deep: ClientId,
    /// Trusted issuer, listed in the CRL.
    revoked: ClientId,
    expired: ClientId,
    /// Same SANs as `good`, issued by a CA nobody trusts.
    rogue: ClientId,
}

const REVOKED_SERIAL: u64 = 666;

impl Pki {
    fn new() -> Pki {
        let root = Ca::root("Corp Device Root");
        let good_sans = [
            email("alice@example.com"),
            dns("laptop.corp.example"),
            uri("spiffe://corp.example/laptop"),
        ];
        let good = root.client(10, &good_sans, false);
        let other = root.client(
            11,
            &[
                email("mallory@evil.test"),
                dns("other.evil.test"),
                uri("https://evil.test/x"),
            ],
            false,
        );
        let inter = root.intermediate("Corp Device Intermediate");
        let mut deep = inter.client(12, &[email("deep@example.com")], false);
        deep.chain.push(inter.cert.der().clone());
        let revoked = root.client(REVOKED_SERIAL, &[email("gone@example.com")], false);
        let expired = root.client(13, &[email("old@example.com")], true);
        let rogue = Ca::root("Rogue Root").client(10, &good_sans, false);
        Pki {
            root,
            good,
            other,
            deep,
            revoked,
            expired,
            rogue,
        }
    }

    /// Writes `clients.pem` and `crl.pem`; returns their paths.
    fn write(&self, dir: &Path) -> (String, String) {
        let ca = dir.join("clients.pem");
        std::fs::write(&ca, self.root.pem()).unwrap();
        let crl = dir.join("crl.pem");
        std::fs::write(&crl, self.root.crl(&[REVOKED_SERIAL])).unwrap();
        (ca.display().to_string(), crl.display().to_string())
    }
}

/// One HTTPS request over a fresh connection with the SNI, `Host` and client certificate given.
/// `Err` when the TLS handshake (or the first read, where TLS 1.3 delivers a client-certificate
/// alert) fails.
async fn fetch(
    port: u16,
    server_ca: &TestCa,
    sni: &str,
    host: &str,
    path: &str,
    id: Option<&ClientId>,
) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(&server_ca.pem) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match id {
        Some(id) => builder
            .with_client_auth_cert(
                id.chain.clone(),
                PrivateKeyDer::try_from(id.key_der.clone()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut buf),
    )
    .await
    .map_err(|_| "read timed out".to_string())?;
    if let Err(e) = read {
        if buf.is_empty() {
            return Err(format!("read: {e}"));
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    Ok((status, text))
}

fn rustls_pemfile_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

const HOSTS: &[&str] = &[
    "open", "need", "fp", "fplist", "spki", "email", "dns", "uri", "app",
];

struct Site {
    gw: Gateway,
    server_ca: TestCa,
    _up: Upstream,
}

impl Site {
    async fn get(&self, host: &str, id: Option<&ClientId>) -> Result<(u16, String), String> {
        let h = format!("{host}.localhost");
        fetch(self.gw.port, &self.server_ca, &h, &h, "/", id).await
    }

    async fn status(&self, host: &str, id: Option<&ClientId>) -> u16 {
        match self.get(host, id).await {
            Ok((s, _)) => s,
            Err(e) => panic!("{host}: {e}\n{}", self.gw.log()),
        }
    }
}

/// A TLS gateway with the `downstream_mtls` block given and one route per matcher.
async fn site(pki: &Pki, mtls: &str, extra: &str, routes: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let (ca, crl) = pki.write(dir.path());
    let server_ca = TestCa::new("Server CA");
    let names: Vec<String> = HOSTS
        .iter()
        .map(|h| format!("{h}.localhost"))
        .chain(["authenticate.localhost".to_string()])
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (cert, key) = server_ca.server(&name_refs).write(dir.path(), "server");
    let up = Upstream::echo("app").await;
    let port = free_port();
    let mtls = mtls.replace("{ca}", &ca).replace("{crl}", &crl);
    let text = format!(
        "address: 127.0.0.1:{port}\ncertificates:\n  - cert: {cert}\n    key: {key}\n{mtls}{extra}routes:\n{routes}",
        cert = cert.display(),
        key = key.display(),
        routes = routes.replace("{u}", &up.url()),
    );
    let gw = Gateway::start_in(dir, port, &text, &[]).await;
    Site {
        gw,
        server_ca,
        _up: up,
    }
}

fn policy_routes(pki: &Pki) -> String {
    let r = |host: &str, policy: &str| {
        format!("  - from: https://{host}.localhost\n    to: {{u}}\n    policy:\n{policy}")
    };
    let allow = |crit: &str| format!("      - allow:\n          and:\n            - {crit}\n");
    [
        "  - from: https://open.localhost\n    to: {u}\n    allow_public_unauthenticated_access: true\n".to_string(),
        r(
            "need",
            "      - allow:\n          and:\n            - accept: true\n        deny:\n          or:\n            - invalid_client_certificate: true\n",
        ) + "    set_request_headers:\n      X-Cert-Fp: ${pomerium.client_cert_fingerprint}\n      X-Cert-Email: ${pomerium.client_cert_san_email}\n      X-Cert-Dns: ${pomerium.client_cert_san_dns}\n",
        r(
            "fp",
            &allow(&format!(
                "client_certificate: {{fingerprint: \"{}\"}}",
                pki.good.fingerprint_colons()
            )),
        ),
        r(
            "fplist",
            &allow(&format!(
                "client_certificate: {{fingerprint: [\"{}\", \"{}\"]}}",
                "00".repeat(32),
                pki.good.fingerprint_hex()
            )),
        ),
        r(
            "spki",
            &allow(&format!(
                "client_certificate: {{spki_hash: \"{}\"}}",
                pki.good.spki_hash()
            )),
        ),
        r(
            "email",
            &allow("client_certificate: {san_email: {ends_with: \"@example.com\"}}"),
        ),
        r(
            "dns",
            &allow("client_certificate: {san_dns: {is: laptop.corp.example}}"),
        ),
        r(
            "uri",
            &allow("client_certificate: {san_uri: {starts_with: \"spiffe://corp.example/\"}}"),
        ),
    ]
    .concat()
}

#[tokio::test]
async fn policy_mode_matchers_and_certificate_states() {
    let pki = Pki::new();
    let s = site(
        &pki,
        "downstream_mtls:\n  ca_file: {ca}\n  crl_file: {crl}\n  enforcement: policy\n",
        "",
        &policy_routes(&pki),
    )
    .await;

    // Policy mode: a route that does not ask for a certificate does not need one.
    assert_eq!(s.status("open", None).await, 200);
    assert_eq!(s.status("open", Some(&pki.rogue)).await, 200);

    // `deny: invalid_client_certificate`: 495 without a trusted certificate, whatever the cause.
    let (st, body) = s.get("need", None).await.unwrap();
    assert_eq!(st, 495, "{body}");
    assert!(body.contains("client-certificate-required"), "{body}");
    for (what, id) in [
        ("rogue CA", &pki.rogue),
        ("revoked (CRL)", &pki.revoked),
        ("expired", &pki.expired),
        ("intermediate beyond max_verify_depth 1", &pki.deep),
    ] {
        let (st, body) = s.get("need", Some(id)).await.unwrap();
        assert_eq!(st, 495, "{what}: {body}");
        assert!(
            body.contains("invalid-client-certificate"),
            "{what}: {body}"
        );
    }
    let (st, body) = s.get("need", Some(&pki.good)).await.unwrap();
    assert_eq!(st, 200, "{body}");
    // Header templates carry the trusted certificate's facts.
    let lower = body.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("\"x-cert-fp\":\"{}\"", pki.good.fingerprint_hex())),
        "{body}"
    );
    assert!(
        lower.contains("\"x-cert-email\":\"alice@example.com\""),
        "{body}"
    );
    assert!(
        lower.contains("\"x-cert-dns\":\"laptop.corp.example\""),
        "{body}"
    );

    // Each matcher: true for the certificate it names, false for another trusted one; an
    // untrusted certificate with the very same SANs never matches.
    for host in ["fp", "fplist", "spki", "email", "dns", "uri"] {
        assert_eq!(s.status(host, Some(&pki.good)).await, 200, "{host} good");
        assert_eq!(s.status(host, Some(&pki.other)).await, 403, "{host} other");
        assert_eq!(s.status(host, None).await, 495, "{host} none");
    }
    assert_eq!(s.status("email", Some(&pki.rogue)).await, 495);
    assert_eq!(s.status("dns", Some(&pki.rogue)).await, 495);
}

/// The PEM a reqwest identity takes: key, then the chain.
fn identity_pem(id: &ClientId) -> Vec<u8> {
    let key = pem_encode("PRIVATE KEY", &id.key_der);
    let certs: String = id
        .chain
        .iter()
        .map(|c| pem_encode("CERTIFICATE", c.as_ref()))
        .collect();
    format!("{key}{certs}").into_bytes()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn the_verdict_reaches_http2_requests_too() {
    let pki = Pki::new();
    let s = site(
        &pki,
        "downstream_mtls:\n  ca_file: {ca}\n  enforcement: policy\n",
        "",
        &policy_routes(&pki),
    )
    .await;
    let port = s.gw.port;
    let client = |id: Option<&ClientId>| {
        let mut b = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(s.server_ca.pem.as_bytes()).unwrap(),
            )
            .resolve(
                "need.localhost",
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            )
            .no_proxy();
        if let Some(id) = id {
            b = b.identity(reqwest::Identity::from_pem(&identity_pem(id)).unwrap());
        }
        b.build().unwrap()
    };
    let url = format!("https://need.localhost:{port}/");
    let r = client(Some(&pki.good)).get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN chose h2");
    assert_eq!(r.status(), 200, "{}", s.gw.log());
    let r = client(None).get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status().as_u16(), 495);
}

#[tokio::test]
async fn verify_depth_and_san_rules() {
    let pki = Pki::new();
    let s = site(
        &pki,
        "downstream_mtls:\n  ca_file: {ca}\n  enforcement: policy\n  max_verify_depth: 2\n  match_subject_alt_names:\n    - email: '.*@example\\.com'\n",
        "",
        &policy_routes(&pki),
    )
    .await;
    // Depth 2 admits a leaf issued by an intermediate the client sends along.
    assert_eq!(s.status("need", Some(&pki.deep)).await, 200);
    assert_eq!(s.status("need", Some(&pki.good)).await, 200);
    // A trusted certificate without an `@example.com` email SAN fails the SAN rule.
    let (st, body) = s.get("need", Some(&pki.other)).await.unwrap();
    assert_eq!(st, 495, "{body}");
    assert!(body.contains("invalid-client-certificate"));
    // No CRL configured here: the revoked leaf is trusted (the CRL is what revokes).
    assert_eq!(s.status("need", Some(&pki.revoked)).await, 200);
}

#[tokio::test]
async fn reject_connection_fails_the_handshake() {
    let pki = Pki::new();
    let s = site(
        &pki,
        "downstream_mtls:\n  ca_file: {ca}\n  crl_file: {crl}\n  enforcement: reject_connection\n",
        "",
        "  - from: https://open.localhost\n    to: {u}\n    allow_public_unauthenticated_access: true\n",
    )
    .await;
    for (what, id) in [
        ("no certificate", None),
        ("rogue CA", Some(&pki.rogue)),
        ("revoked", Some(&pki.revoked)),
        ("expired", Some(&pki.expired)),
    ] {
        let r = s.get("open", id).await;
        assert!(r.is_err(), "{what}: the connection must fail, got {r:?}");
    }
    assert_eq!(s.status("open", Some(&pki.good)).await, 200);
    assert!(
        s.gw.log().contains("listener connection failure"),
        "refused handshakes are logged"
    );
}

#[tokio::test]
async fn default_deny_answers_495_before_any_sign_in_redirect() {
    let pki = Pki::new();
    let idp = Idp::start().await;
    let extra = format!(
        "authenticate_service_url: https://authenticate.localhost:PORT\n{}cookie_secret: 8GIP1sU0aqXJZ8T8XkL1zB0cR2P0kTmYxw0a3DkBwsw=\nshared_secret: Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=\nsignin_rate_limit: 0\n",
        idp.config()
    );
    // The port is only known inside `site`; the authenticate URL's port does not matter here
    // beyond being well formed, since the test never follows the redirect.
    let extra = extra.replace("PORT", "8443");
    let s = site(
        &pki,
        "downstream_mtls:\n  ca_file: {ca}\n",
        &extra,
        "  - from: https://app.localhost\n    to: {u}\n    allow_any_authenticated_user: true\n  - from: https://open.localhost\n    to: {u}\n    allow_public_unauthenticated_access: true\n",
    )
    .await;
    // No certificate: 495, not a redirect to the IdP (signing in cannot fix a missing device).
    let (st, body) = s.get("app", None).await.unwrap();
    assert_eq!(st, 495, "{body}");
    assert!(
        !body.to_ascii_lowercase().contains("\r\nlocation:"),
        "{body}"
    );
    assert!(body.contains("client-certificate-required"));
    let (st, body) = s.get("app", Some(&pki.rogue)).await.unwrap();
    assert_eq!(st, 495, "{body}");
    assert!(body.contains("invalid-client-certificate"));
    // Every user route, public ones included.
    assert_eq!(s.status("open", None).await, 495);
    // A trusted certificate gets as far as signing in.
    let (st, body) = s.get("app", Some(&pki.good)).await.unwrap();
    assert_eq!(st, 302, "{body}");
    assert!(body.contains("authenticate.localhost"), "{body}");
    assert_eq!(s.status("open", Some(&pki.good)).await, 200);
    // Vallum's own pages do not need a certificate (Pomerium's rule): the user page still
    // answers by sending the user to sign in.
    let h = "app.localhost";
    let (st, body) = fetch(s.gw.port, &s.server_ca, h, h, "/.pomerium/", None)
        .await
        .unwrap();
    assert_ne!(st, 495, "{body}");
}

#[tokio::test]
async fn host_cannot_cross_a_client_certificate_boundary_from_another_sni() {
    let pki = Pki::new();
    let s = site(
        &pki,
        "downstream_mtls:\n  ca_file: {ca}\n  enforcement: policy\n",
        "",
        &policy_routes(&pki),
    )
    .await;
    let port = s.gw.port;
    let ca = &s.server_ca;
    // A connection made for a host without a certificate rule asks for one with a rule.
    let (st, body) = fetch(
        port,
        ca,
        "open.localhost",
        "need.localhost",
        "/",
        Some(&pki.good),
    )
    .await
    .unwrap();
    assert_eq!(st, 421, "{body}");
    let (st, _) = fetch(port, ca, "open.localhost", "fp.localhost", "/", None)
        .await
        .unwrap();
    assert_eq!(st, 421);
    // Between two hosts that both look at certificates, or toward one that does not, the
    // connection's own verdict applies.
    let (st, body) = fetch(
        port,
        ca,
        "need.localhost",
        "fp.localhost",
        "/",
        Some(&pki.good),
    )
    .await
    .unwrap();
    assert_eq!(st, 200, "{body}");
    let (st, _) = fetch(port, ca, "need.localhost", "open.localhost", "/", None)
        .await
        .unwrap();
    assert_eq!(st, 200);
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = pki.write(dir.path());
    for (block, key, needle) in [
        (
            "downstream_mtls:\n  enforcement: policy\n",
            "downstream_mtls.ca",
            "ca_file",
        ),
        (
            "downstream_mtls:\n  ca_file: CA\n  enforcement: strict\n",
            "downstream_mtls.enforcement",
            "reject_connection",
        ),
        (
            "downstream_mtls:\n  ca_file: CA\n  match_subject_alt_names:\n    - mail: x\n",
            "downstream_mtls.match_subject_alt_names[0].mail",
            "unknown SAN type",
        ),
        (
            "downstream_mtls:\n  ca_file: CA\n  match_subject_alt_names:\n    - dns: '('\n",
            "downstream_mtls.match_subject_alt_names[0].dns",
            "invalid regex",
        ),
        (
            "downstream_mtls:\n  ca_file: CA\n  crl: bm90IGEgY3Js\n",
            "downstream_mtls.crl",
            "CRL",
        ),
        (
            "downstream_mtls:\n  ca_file: CA\n  ca: abc\n",
            "downstream_mtls.ca",
            "not both",
        ),
        (
            "downstream_mtls:\n  ca_file: CA\n  verify_depth: 2\n",
            "downstream_mtls.verify_depth",
            "unknown",
        ),
    ] {
        let text = format!(
            "insecure_server: false\ncertificates: []\n{}routes: []\n",
            block.replace("CA", &ca)
        );
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new(crate::support::bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{block}");
        assert!(err.contains(key), "{block}: expected {key} in {err}");
        assert!(err.contains(needle), "{block}: expected {needle} in {err}");
    }
}
