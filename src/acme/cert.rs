//! Certificate material for ACME: the key and CSR of an order, the TLS-ALPN-01 challenge
//! certificate (RFC 8737), and an issued chain and key read back into what rustls serves, with
//! the validity window that schedules its renewal.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `id-pe-tlsfeature` (RFC 7633) with `status_request`: OCSP must-staple.
const TLS_FEATURE_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 24];
const MUST_STAPLE: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x05];

/// A certificate ready to serve, with its validity window.
#[derive(Debug)]
pub struct Issued {
    pub key: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Chain then key, PEM: what is written to disk and to the shared store.
    pub pem: String,
}

impl Issued {
    /// Reads a PEM bundle (chain, then the PKCS#8 key).
    pub fn from_pem(pem: &str) -> Result<Issued, String> {
        let key = crate::config::pem::certified_key(pem.as_bytes(), pem.as_bytes())?;
        let leaf = key.cert.first().ok_or("no certificate in the bundle")?;
        let (not_before, not_after) = validity(leaf)?;
        Ok(Issued {
            key: Arc::new(key),
            not_before,
            not_after,
            pem: pem.to_string(),
        })
    }

    /// Two thirds into the lifetime, less up to a twentieth of it chosen by `jitter` (0..1), so
    /// a fleet's or a batch's renewals spread out.
    pub fn renew_at(&self, jitter: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let early = life.mul_f64(jitter.clamp(0.0, 1.0) / 20.0);
        self.not_before + life * 2 / 3 - early
    }

    pub fn expires_unix(&self) -> f64 {
        self.not_after
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    }

    /// Whether the leaf names `host` (a stored bundle must be for the host it is filed under).
    pub fn covers(&self, host: &str) -> bool {
        self.key
            .cert
            .first()
            .is_some_and(|c| crate::config::pem::dns_names(c).iter().any(|n| n == host))
    }
}

fn validity(leaf: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), String> {
    let (_, x) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("certificate: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp().max(0) as u64;
        UNIX_EPOCH + Duration::from_secs(secs)
    };
    Ok((at(x.validity().not_before), at(x.validity().not_after)))
}

/// A fresh P-256 key and a CSR for `host` signed with it: (CSR DER, key PEM).
pub fn csr(host: &str, must_staple: bool) -> Result<(Vec<u8>, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_string()]).map_err(|e| format!("{e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if must_staple {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                TLS_FEATURE_OID,
                MUST_STAPLE.to_vec(),
            ));
    }
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("CSR: {e}"))?;
    Ok((
        csr.der().to_vec(),
        pem_block("PRIVATE KEY", &key.serialize_der()),
    ))
}

/// PEM armour (RFC 7468): base64 in 64-column lines.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The self-signed certificate that answers a TLS-ALPN-01 challenge: `host` as its only name and
/// the SHA-256 of the key authorization in the critical `acmeIdentifier` extension.
pub fn alpn_challenge(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_string()]).map_err(|e| format!("{e}"))?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("challenge certificate: {e}"))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("challenge key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed bundle valid for the 90 days from 2025-01-01 to 2025-04-01.
    fn bundle(host: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2025, 4, 1);
        let cert = p.self_signed(&key).unwrap();
        format!("{}{}", cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_bundle_reads_back_with_its_window_and_name() {
        let issued = Issued::from_pem(&bundle("app.example.com")).unwrap();
        assert!(issued.covers("app.example.com"));
        assert!(!issued.covers("other.example.com"));
        let life = issued.not_after.duration_since(issued.not_before).unwrap();
        assert_eq!(life.as_secs() / 86_400, 90);
        // Renewal at day 60, up to 4.5 days earlier with full jitter.
        let at = |j| {
            issued
                .renew_at(j)
                .duration_since(issued.not_before)
                .unwrap()
                .as_secs()
        };
        assert_eq!(at(0.0) / 86_400, 60);
        assert_eq!(at(1.0), 60 * 86_400 - 90 * 86_400 / 20);
    }

    #[test]
    fn a_bundle_without_a_key_is_refused() {
        let pem = bundle("a.example.com");
        let chain_only = &pem[..pem.find("-----BEGIN PRIVATE KEY").unwrap()];
        assert!(Issued::from_pem(chain_only)
            .unwrap_err()
            .contains("private key"));
    }

    #[test]
    fn the_challenge_certificate_carries_the_digest_in_a_critical_extension() {
        let digest = [7u8; 32];
        let ck = alpn_challenge("app.example.com", &digest).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(ck.cert[0].as_ref()).unwrap();
        let ext = x
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        assert!(ext.value.ends_with(&digest));
    }

    #[test]
    fn must_staple_goes_into_the_csr() {
        let (with, _) = csr("a.example.com", true).unwrap();
        let (without, key) = csr("a.example.com", false).unwrap();
        let has = |der: &[u8]| der.windows(MUST_STAPLE.len()).any(|w| w == MUST_STAPLE);
        assert!(has(&with) && !has(&without));
        assert!(key.contains("PRIVATE KEY"));
    }
}
