//! Reading PEM material given inline (base64, as Pomerium's non-`_file` keys take it) or by file,
//! and checking it parses before a snapshot is built: a certificate that only fails at the first
//! handshake is an outage, a refused reload is not.

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// Where a PEM blob came from; files are watched for changes.
#[derive(Clone)]
pub enum PemSource {
    Inline(String),
    File(PathBuf),
}

/// Inline material may be a private key: only its length is shown.
impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemSource::Inline(v) => write!(f, "Inline(<{} bytes, redacted>)", v.len()),
            PemSource::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// Reads PEM bytes: from a file, or from a base64 value of a non-`_file` key (raw PEM text is
/// accepted too, which is friendlier than Pomerium).
pub fn read(src: &PemSource) -> Result<Vec<u8>, String> {
    match src {
        PemSource::File(p) => {
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        }
        PemSource::Inline(v) => {
            let t = v.trim();
            if t.starts_with("-----BEGIN") {
                return Ok(t.as_bytes().to_vec());
            }
            base64::engine::general_purpose::STANDARD
                .decode(t.split_whitespace().collect::<String>())
                .map_err(|e| format!("expected base64-encoded PEM: {e}"))
        }
    }
}

/// A value that may be a path or base64 PEM (Pomerium's `certificates[].cert` accepts both). A
/// value shaped like a path (absolute or relative, or ending in a certificate or key extension)
/// is a path even when the file is missing, so the error says the file is missing rather than
/// that it is not base64 (base64 PEM starts with `LS0t`, never with `/` or `.`).
pub fn path_or_inline(v: &str) -> PemSource {
    let t = v.trim();
    let path_shaped = t.starts_with(['/', '.', '~'])
        || [".pem", ".crt", ".cer", ".key", ".der"]
            .iter()
            .any(|ext| t.to_ascii_lowercase().ends_with(ext));
    if Path::new(v).is_file() || (path_shaped && !t.starts_with("-----BEGIN")) {
        PemSource::File(PathBuf::from(v))
    } else {
        PemSource::Inline(v.to_string())
    }
}

pub fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found in PEM".into());
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|e| format!("certificate does not parse as X.509: {e}"))?;
    }
    Ok(certs)
}

pub fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no usable private key in PEM: {e}"))
}

/// A chain and its private key as rustls serves them, refused unless the key is the leaf's.
pub fn certified_key(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::sign::CertifiedKey, String> {
    let chain = certs(chain_pem)?;
    let key = private_key(key_pem)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let ck = rustls::sign::CertifiedKey::new(chain, signer);
    ck.keys_match()
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(ck)
}

/// The DNS names a certificate is valid for (SANs, else the CN), lower-cased.
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, x)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in x.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_path_is_reported_as_a_missing_file() {
        let src = path_or_inline("/certs/missing.pem");
        assert!(matches!(src, PemSource::File(_)));
        let err = read(&src).unwrap_err();
        assert!(err.contains("cannot read /certs/missing.pem"), "{err}");
        assert!(matches!(path_or_inline("tls.crt"), PemSource::File(_)));
        // Base64 PEM stays inline.
        assert!(matches!(
            path_or_inline("LS0tLS1CRUdJTiBDRVJU"),
            PemSource::Inline(_)
        ));
    }
}
