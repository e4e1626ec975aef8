//! Downstream mTLS: client certificates, checked once per TLS connection and handed to the policy
//! engine with every request on it.
//!
//! One rustls verifier (`ClientCertGate`) serves every handshake and reads the live snapshot, so a
//! reload that changes the CA, the CRLs or the enforcement mode applies to the next connection
//! without a listener restart. Under `reject_connection` the handshake itself fails; under the
//! policy modes any certificate is let through the handshake (its key possession still proven by
//! the handshake signature) and its verdict, computed once in `HandshakeRecorder`, travels with
//! the connection to `request_filter`, where it becomes the `invalid_client_certificate` and
//! `client_certificate` criteria.

use crate::metrics::Metrics;
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use base64::Engine;
use regex::Regex;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::any::Any;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

/// What happens when a client has no trusted certificate (Pomerium's `enforcement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Every user route denies such a request (495); Vallum's own endpoints do not.
    PolicyWithDefaultDeny,
    /// Only routes whose policy asks for a certificate care.
    Policy,
    /// The TLS handshake fails; nothing reaches HTTP.
    RejectConnection,
}

/// SAN kinds `match_subject_alt_names` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    Dns,
    Email,
    IpAddress,
    Uri,
    UserPrincipalName,
}

impl SanKind {
    pub fn parse(s: &str) -> Option<SanKind> {
        Some(match s {
            "dns" => SanKind::Dns,
            "email" => SanKind::Email,
            "ip_address" => SanKind::IpAddress,
            "uri" => SanKind::Uri,
            "user_principal_name" => SanKind::UserPrincipalName,
            _ => return None,
        })
    }
}

/// The compiled `downstream_mtls` block.
#[derive(Debug)]
pub struct ClientCa {
    pub enforcement: Enforcement,
    verifier: Arc<dyn ClientCertVerifier>,
    /// Subjects (DER) of the trust anchors: where the depth walk stops.
    anchor_subjects: Vec<Vec<u8>>,
    /// Certificates in the verified chain excluding the anchor; `None` = no limit.
    max_depth: Option<usize>,
    /// At least one must match when non-empty (full-string regexes).
    san_rules: Vec<(SanKind, Regex)>,
}

/// Why a client certificate is not trusted (shown in logs, never to the client).
pub type Rejection = String;

impl ClientCa {
    /// `anchors`: the CA bundle; `crls`: revocation lists (leaf revocation only, as in Pomerium).
    pub fn new(
        enforcement: Enforcement,
        anchors: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        max_depth: Option<usize>,
        san_rules: Vec<(SanKind, Regex)>,
    ) -> Result<ClientCa, String> {
        let mut roots = RootCertStore::empty();
        let mut anchor_subjects = Vec::new();
        for a in &anchors {
            roots
                .add(a.clone())
                .map_err(|e| format!("CA certificate is not a usable trust anchor: {e}"))?;
            if let Ok((_, x)) = x509_parser::parse_x509_certificate(a.as_ref()) {
                anchor_subjects.push(x.subject().as_raw().to_vec());
            }
        }
        let has_crls = !crls.is_empty();
        let mut b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
        // A stale CRL fails closed only where a failed check fails the connection, as Pomerium
        // documents for `reject_connection`.
        if has_crls && enforcement == Enforcement::RejectConnection {
            b = b.enforce_revocation_expiration();
        }
        let verifier = b
            .build()
            .map_err(|e| format!("cannot build the client certificate verifier: {e}"))?;
        Ok(ClientCa {
            enforcement,
            verifier,
            anchor_subjects,
            max_depth,
            san_rules,
        })
    }

    /// The whole verdict on a presented chain (leaf first): signature chain to an anchor,
    /// validity dates, revocation, depth and the SAN rules.
    pub fn check(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<(), Rejection> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate".into());
        };
        self.verifier
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|e| e.to_string())?;
        if let Some(max) = self.max_depth {
            let depth = self.depth(chain);
            if depth > max {
                return Err(format!(
                    "chain depth {depth} exceeds max_verify_depth {max}"
                ));
            }
        }
        if !self.san_rules.is_empty() {
            let cert = PeerCert::parse(leaf).ok_or("leaf does not parse")?;
            let ok = self
                .san_rules
                .iter()
                .any(|(kind, re)| cert.sans(*kind).iter().any(|v| re.is_match(v)));
            if !ok {
                return Err("no subject alternative name matches match_subject_alt_names".into());
            }
        }
        Ok(())
    }

    /// Certificates between the leaf (counted) and the first trust anchor (not counted). The
    /// chain's signatures were checked by webpki already; this only follows issuer names.
    fn depth(&self, chain: &[CertificateDer<'_>]) -> usize {
        let parsed: Vec<_> = chain
            .iter()
            .filter_map(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
            .map(|(_, x)| x)
            .collect();
        let Some(mut current) = parsed.first() else {
            return 0;
        };
        let mut depth = 1;
        for _ in 0..parsed.len() {
            let issuer = current.issuer().as_raw();
            if self.anchor_subjects.iter().any(|s| s.as_slice() == issuer) {
                return depth;
            }
            match parsed[1..]
                .iter()
                .find(|c| c.subject().as_raw() == issuer && !std::ptr::eq(*c, current))
            {
                Some(next) => {
                    current = next;
                    depth += 1;
                }
                None => return depth,
            }
        }
        depth
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the policy engine and the header templates may know about a presented certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// SHA-256 of the DER certificate.
    pub fingerprint: [u8; 32],
    /// SHA-256 of the DER SubjectPublicKeyInfo.
    pub spki_hash: [u8; 32],
    pub san_dns: Vec<String>,
    pub san_email: Vec<String>,
    pub san_uri: Vec<String>,
    pub san_ip: Vec<String>,
    pub san_upn: Vec<String>,
}

/// Microsoft's User Principal Name otherName (1.3.6.1.4.1.311.20.2.3).
const UPN_OID: &str = "1.3.6.1.4.1.311.20.2.3";

impl PeerCert {
    pub fn parse(der: &CertificateDer<'_>) -> Option<PeerCert> {
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let mut c = PeerCert {
            fingerprint: Sha256::digest(der.as_ref()).into(),
            spki_hash: Sha256::digest(x.tbs_certificate.subject_pki.raw).into(),
            san_dns: Vec::new(),
            san_email: Vec::new(),
            san_uri: Vec::new(),
            san_ip: Vec::new(),
            san_upn: Vec::new(),
        };
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => c.san_dns.push(d.to_string()),
                    GeneralName::RFC822Name(e) => c.san_email.push(e.to_string()),
                    GeneralName::URI(u) => c.san_uri.push(u.to_string()),
                    GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            _ => None,
                        };
                        c.san_ip.extend(ip.map(|i| i.to_string()));
                    }
                    GeneralName::OtherName(oid, value) if oid.to_id_string() == UPN_OID => {
                        c.san_upn.extend(upn_text(value));
                    }
                    _ => {}
                }
            }
        }
        Some(c)
    }

    pub fn sans(&self, kind: SanKind) -> &[String] {
        match kind {
            SanKind::Dns => &self.san_dns,
            SanKind::Email => &self.san_email,
            SanKind::IpAddress => &self.san_ip,
            SanKind::Uri => &self.san_uri,
            SanKind::UserPrincipalName => &self.san_upn,
        }
    }

    /// Lower-case hex without separators (Envoy's `DOWNSTREAM_PEER_FINGERPRINT_256`).
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn spki_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.spki_hash)
    }
}

/// The UTF8String inside an otherName's explicit `[0]` wrapper.
fn upn_text(value: &[u8]) -> Option<String> {
    use x509_parser::der_parser::ber::parse_ber_any_r;
    let (_, outer) = parse_ber_any_r(value, 8).ok()?;
    let inner = match outer.as_slice() {
        Ok(bytes) => parse_ber_any_r(bytes, 8).ok().map(|(_, o)| o)?,
        Err(_) => outer,
    };
    inner.as_str().ok().map(str::to_string)
}

/// Parses a policy's `fingerprint`: 64 hex digits, with or without `:` between byte pairs.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || (s.contains(':') && s.len() != 95) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Parses a policy's `spki_hash`: base64 of 32 bytes.
pub fn parse_spki_hash(s: &str) -> Option<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    bytes.try_into().ok()
}

/// A connection's client-certificate verdict.
#[derive(Debug, Clone)]
pub enum CertState {
    /// No certificate presented (or mTLS is off).
    Absent,
    /// Presented but not trusted: wrong CA, expired, revoked, too deep, no matching SAN.
    Untrusted(Arc<PeerCert>),
    Trusted(Arc<PeerCert>),
}

impl CertState {
    pub fn trusted(&self) -> Option<&PeerCert> {
        match self {
            CertState::Trusted(c) => Some(c),
            _ => None,
        }
    }
}

/// Attached to every downstream TLS connection (Pingora's `SslDigest` extension).
#[derive(Debug, Clone)]
pub struct ConnTls {
    /// The SNI name, lower-case, without a trailing dot.
    pub sni: Option<String>,
    pub cert: CertState,
}

/// rustls's client-certificate hook. Reads the snapshot per handshake.
pub struct ClientCertGate {
    runtime: SharedRuntime,
    provider: Arc<CryptoProvider>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ClientCertGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertGate").finish_non_exhaustive()
    }
}

impl ClientCertGate {
    pub fn new(runtime: SharedRuntime, metrics: Arc<Metrics>) -> Self {
        Self {
            runtime,
            provider: provider(),
            metrics,
        }
    }
}

impl ClientCertVerifier for ClientCertGate {
    fn offer_client_auth(&self) -> bool {
        self.runtime.load().settings.client_ca.is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.runtime
            .load()
            .settings
            .client_ca
            .as_ref()
            .is_some_and(|ca| ca.enforcement == Enforcement::RejectConnection)
    }

    /// No hints: the list would have to outlive the snapshot it came from. Browsers then offer
    /// every certificate the user has, which is what they do for most servers anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let snap = self.runtime.load();
        let Some(ca) = &snap.settings.client_ca else {
            return Ok(ClientCertVerified::assertion());
        };
        if ca.enforcement != Enforcement::RejectConnection {
            // Judged in `HandshakeRecorder`, so the verdict reaches the policy engine.
            return Ok(ClientCertVerified::assertion());
        }
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        ca.check(&chain, now).map_err(|reason| {
            tracing::info!(%reason, "listener connection failure: client certificate refused");
            self.metrics
                .client_certificates
                .with_label_values(&["rejected"])
                .inc();
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Records SNI and the certificate verdict once per connection.
pub struct HandshakeRecorder {
    runtime: SharedRuntime,
    metrics: Arc<Metrics>,
}

impl HandshakeRecorder {
    pub fn new(runtime: SharedRuntime, metrics: Arc<Metrics>) -> Self {
        Self { runtime, metrics }
    }
}

#[async_trait]
impl pingora_core::listeners::TlsAccept for HandshakeRecorder {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora_core::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let sni = tls
            .server_name()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let chain = tls.peer_cert_chain_der().unwrap_or_default();
        let cert = match chain.first().and_then(PeerCert::parse) {
            None => CertState::Absent,
            Some(parsed) => {
                let parsed = Arc::new(parsed);
                let snap = self.runtime.load();
                match &snap.settings.client_ca {
                    Some(ca) => match ca.check(chain, UnixTime::now()) {
                        Ok(()) => CertState::Trusted(parsed),
                        Err(reason) => {
                            tracing::debug!(%reason, "client certificate not trusted");
                            CertState::Untrusted(parsed)
                        }
                    },
                    None => CertState::Untrusted(parsed),
                }
            }
        };
        if self.runtime.load().settings.client_ca.is_some() {
            let result = match &cert {
                CertState::Absent => "absent",
                CertState::Untrusted(_) => "untrusted",
                CertState::Trusted(_) => "trusted",
            };
            self.metrics
                .client_certificates
                .with_label_values(&[result])
                .inc();
        }
        Some(Arc::new(ConnTls { sni, cert }))
    }
}

/// The connection facts for a request, when it came over TLS.
pub fn conn_tls(session: &pingora_proxy::Session) -> Option<&ConnTls> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<ConnTls>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_both_forms() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let a = parse_fingerprint(hex).expect("short form");
        let colon: Vec<String> = hex
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let b = parse_fingerprint(&colon.join(":")).expect("colon form");
        assert_eq!(a, b);
        assert_eq!(a[1], 0x11);
        assert!(parse_fingerprint(&hex[..62]).is_none());
        assert!(parse_fingerprint("zz").is_none());
        assert!(parse_fingerprint(&format!("{}:", &hex[..63])).is_none());
    }

    #[test]
    fn spki_hash_must_be_32_bytes() {
        let ok = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(parse_spki_hash(&ok), Some([7u8; 32]));
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 31]);
        assert!(parse_spki_hash(&short).is_none());
        assert!(parse_spki_hash("not base64!").is_none());
    }
}
