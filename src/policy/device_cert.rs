//! The `client_certificate` and `device` matchers: what a trusted client certificate or a
//! proven WebAuthn device must be for those criteria to hold.

use super::matchers::StringMatcher;
use crate::tls::peer::PeerCert;

/// `client_certificate`: every field that is set must match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CertMatcher {
    /// Any of these SHA-256 certificate fingerprints.
    pub fingerprints: Vec<[u8; 32]>,
    /// Any of these SHA-256 SPKI hashes.
    pub spki_hashes: Vec<[u8; 32]>,
    /// Some SAN of the kind matches.
    pub san_dns: Option<StringMatcher>,
    pub san_email: Option<StringMatcher>,
    pub san_uri: Option<StringMatcher>,
}

impl CertMatcher {
    pub fn matches(&self, c: &PeerCert) -> bool {
        let any_san = |m: &Option<StringMatcher>, values: &[String]| {
            m.as_ref()
                .is_none_or(|m| values.iter().any(|v| m.matches(v)))
        };
        (self.fingerprints.is_empty() || self.fingerprints.contains(&c.fingerprint))
            && (self.spki_hashes.is_empty() || self.spki_hashes.contains(&c.spki_hash))
            && any_san(&self.san_dns, &c.san_dns)
            && any_san(&self.san_email, &c.san_email)
            && any_san(&self.san_uri, &c.san_uri)
    }
}

/// `device`: every field that is set must match one proven device.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceMatcher {
    /// Credential id (base64url).
    pub is: Option<StringMatcher>,
    /// Approved by an administrator (`vallum devices approve`).
    pub approved: Option<bool>,
    /// Device type id (`any`, `enclave_only`, or one from `device_types`).
    pub type_id: Option<String>,
}

/// A device the user proved (WebAuthn assertion) during this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenDevice<'a> {
    pub id: &'a str,
    pub type_id: &'a str,
    pub approved: bool,
}

impl DeviceMatcher {
    pub fn matches(&self, d: &ProvenDevice<'_>) -> bool {
        self.is.as_ref().is_none_or(|m| m.matches(d.id))
            && self.approved.is_none_or(|a| a == d.approved)
            && self.type_id.as_deref().is_none_or(|t| t == d.type_id)
    }
}
