//! Server certificates indexed by the names they cover (exact, then one-label wildcard, then the
//! default), compiled from the config into the snapshot.

use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Certificates indexed by the names they cover.
#[derive(Debug, Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Served when no name matches (or the client sent no SNI): the first certificate.
    default: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    /// `pairs`: (certified key, DNS names it covers), in config order; the first name wins.
    pub fn new(pairs: Vec<(Arc<CertifiedKey>, Vec<String>)>) -> Self {
        let mut s = CertStore::default();
        for (ck, names) in pairs {
            if s.default.is_none() {
                s.default = Some(ck.clone());
            }
            for n in names {
                match n.strip_prefix("*.") {
                    Some(suffix) => {
                        s.wildcard
                            .entry(suffix.to_string())
                            .or_insert_with(|| ck.clone());
                    }
                    None => {
                        s.exact.entry(n).or_insert_with(|| ck.clone());
                    }
                }
            }
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_none()
    }

    pub fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        sni.and_then(|n| self.covering(n))
            .or_else(|| self.default.clone())
    }

    /// The certificate whose names cover `name` (exact, then one-label wildcard), without falling
    /// back to the default: ACME certificates come between the two.
    pub fn covering(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        // A wildcard covers exactly one label (RFC 6125 §6.4.3).
        let (_, suffix) = name.split_once('.')?;
        self.wildcard.get(suffix).cloned()
    }

    pub fn covers(&self, name: &str) -> bool {
        self.covering(name).is_some()
    }

    pub fn default_cert(&self) -> Option<Arc<CertifiedKey>> {
        self.default.clone()
    }
}
