//! Downstream TLS: server certificates chosen by SNI from the live snapshot.
//!
//! The resolver reads the current snapshot on every handshake, so a certificate renewed on disk
//! is served as soon as the reload that read it is swapped in, with no listener restart.

use crate::runtime::SharedRuntime;
use rustls::server::{ClientHello, ResolvesServerCert};
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
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(c) = self.exact.get(&name) {
                return Some(c.clone());
            }
            // A wildcard covers exactly one label (RFC 6125 §6.4.3).
            if let Some((_, suffix)) = name.split_once('.') {
                if let Some(c) = self.wildcard.get(suffix) {
                    return Some(c.clone());
                }
            }
        }
        self.default.clone()
    }
}

/// rustls hook that looks up the certificate in the current snapshot.
#[derive(Debug)]
pub struct SniResolver {
    runtime: SharedRuntime,
}

impl SniResolver {
    pub fn new(runtime: SharedRuntime) -> Self {
        Self { runtime }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.runtime
            .load()
            .settings
            .certs
            .lookup(hello.server_name())
    }
}
