//! The compiled `downstream_mtls` block: which client certificates are trusted (webpki chain,
//! dates, CRLs, depth, SAN rules). Plain data the snapshot holds; the rustls hooks that consult it
//! per handshake live in `server::tls_hooks`.

use super::peer::{PeerCert, SanKind};
use regex::Regex;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::sync::Arc;

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

/// The crypto provider every Vallum TLS verifier uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
