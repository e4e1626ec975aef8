//! What a connection's TLS handshake established about the client: the presented certificate,
//! parsed once, and its verdict. Plain data, carried with every request on the connection.

use base64::Engine;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

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
    /// The presented chain (leaf first), kept only while some route has its own client CA
    /// (checked per request against that route's CA).
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl ConnTls {
    /// The presented certificate, trusted or not.
    pub fn presented(&self) -> Option<&Arc<PeerCert>> {
        match &self.cert {
            CertState::Trusted(c) | CertState::Untrusted(c) => Some(c),
            CertState::Absent => None,
        }
    }
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
