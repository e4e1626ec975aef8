//! The certificate Vallum serves when TLS is on and none is configured, as Pomerium does:
//! self-signed, covering every route host and the authenticate host, its key derived from
//! `shared_secret` so it stays the same across restarts and reloads (a pinned key keeps
//! working). Browsers will not trust it; a startup warning says so and how to configure one.

use crate::crypto::Key;
use p256::pkcs8::EncodePrivateKey;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The certificate and key for `hosts` (DNS names, `*.` wildcards allowed).
pub fn self_signed(secret: &Key, hosts: &[String]) -> Result<Arc<CertifiedKey>, String> {
    let key = derived_key(secret)?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| format!("cannot encode the fallback key: {e}"))?;
    let pkcs8 = PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot use the fallback key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())
        .map_err(|e| format!("cannot name the fallback certificate: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Vallum self-signed fallback");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    let serial: [u8; 8] = Sha256::digest(hosts.join(",").as_bytes())[..8]
        .try_into()
        .unwrap_or_default();
    params.serial_number = Some(rcgen::SerialNumber::from(serial.to_vec()));
    let cert = params
        .self_signed(&pair)
        .map_err(|e| format!("cannot sign the fallback certificate: {e}"))?;
    let key_der = PrivateKeyDer::Pkcs8(pkcs8);
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("cannot load the fallback key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// A P-256 key from `secret`: the same secret gives the same key on every start.
fn derived_key(secret: &Key) -> Result<p256::SecretKey, String> {
    let mut seed = secret
        .derive("vallum fallback certificate key")
        .bytes()
        .to_vec();
    // A 32-byte string is a valid scalar with overwhelming probability; re-derive if not.
    for _ in 0..8 {
        if let Ok(k) = p256::SecretKey::from_slice(&seed) {
            return Ok(k);
        }
        seed = Sha256::digest(&seed).to_vec();
    }
    Err("cannot derive the fallback certificate key".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spki(ck: &CertifiedKey) -> Vec<u8> {
        let (_, x) = x509_parser::parse_x509_certificate(ck.cert[0].as_ref()).unwrap();
        x.public_key().raw.to_vec()
    }

    #[test]
    fn covers_the_hosts_and_keeps_its_key_for_a_secret() {
        let secret = Key::random();
        let hosts = vec![
            "app.example.com".to_string(),
            "*.apps.example.com".to_string(),
        ];
        let a = self_signed(&secret, &hosts).unwrap();
        let b = self_signed(&secret, &hosts).unwrap();
        assert_eq!(spki(&a), spki(&b), "same secret, same key across restarts");
        assert_ne!(
            spki(&a),
            spki(&self_signed(&Key::random(), &hosts).unwrap())
        );
        assert!(a.keys_match().is_ok());
        let (_, x) = x509_parser::parse_x509_certificate(a.cert[0].as_ref()).unwrap();
        let names: Vec<String> = x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        assert!(
            names.iter().any(|n| n.contains("app.example.com")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.contains("*.apps.example.com")),
            "{names:?}"
        );
    }
}
