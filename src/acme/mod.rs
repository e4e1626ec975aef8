//! Automatic certificates (`autocert`): an ACME client that orders a certificate for every route
//! host and the authenticate host that no configured certificate covers, answers the CA's
//! HTTP-01 and TLS-ALPN-01 challenges, renews at two thirds of a certificate's lifetime and swaps
//! the new one in for the next handshake. Certificates, keys and the account are kept in
//! `autocert_dir` and in the session store, where a fleet shares them: one node orders (it holds
//! the store's claim on the host), every node serves.
//!
//! Control plane only: the TLS hooks read `Acme::lookup` per handshake (one atomic load and a
//! map lookup), everything else runs on the worker's task.

mod account;
pub mod cert;
mod http;
mod keep;
mod order;
pub mod worker;

use crate::session::SessionStore;
use crate::telemetry::metrics::Metrics;
use arc_swap::ArcSwap;
use cert::Issued;
use dashmap::DashMap;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// HTTP-01 challenge paths (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// What the ACME client has issued and the challenges it is answering, shared by the listeners.
pub struct Acme {
    served: ArcSwap<HashMap<String, Arc<Issued>>>,
    /// HTTP-01: token → key authorization.
    http01: DashMap<String, String>,
    /// TLS-ALPN-01: host → challenge certificate.
    alpn01: DashMap<String, Arc<CertifiedKey>>,
    /// Hosts whose last order failed, with the reason (readiness, logs).
    failing: DashMap<String, String>,
    store: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
}

impl Acme {
    pub fn new(store: Arc<dyn SessionStore>, metrics: Arc<Metrics>) -> Acme {
        Acme {
            served: ArcSwap::default(),
            http01: DashMap::new(),
            alpn01: DashMap::new(),
            failing: DashMap::new(),
            store,
            metrics,
        }
    }

    /// The issued certificate for a handshake's server name.
    pub fn lookup(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let served = self.served.load();
        if served.is_empty() {
            return None;
        }
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        served.get(&name).map(|i| Arc::clone(&i.key))
    }

    /// The key authorization for an HTTP-01 token: this node's, else one a peer published in the
    /// shared store (the CA may ask any node behind the load balancer).
    pub async fn http01(&self, token: &str) -> Option<String> {
        if let Some(ka) = self.http01.get(token) {
            return Some(ka.clone());
        }
        if !keep::safe_name(token) {
            return None;
        }
        let raw = self
            .store
            .get_record(&keep::http01_key(token))
            .await
            .ok()??;
        String::from_utf8(raw).ok()
    }

    /// The TLS-ALPN-01 certificate for `host`: this node's, else built from the digest a peer
    /// published in the shared store.
    pub async fn alpn01(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(ck) = self.alpn01.get(&host) {
            return Some(Arc::clone(&ck));
        }
        if !keep::safe_name(&host) {
            return None;
        }
        let digest = self
            .store
            .get_record(&keep::alpn01_key(&host))
            .await
            .ok()??;
        cert::alpn_challenge(&host, &digest).ok()
    }

    /// Hosts among `wanted` that have no certificate yet, with why (readiness).
    pub fn missing(&self, wanted: &[String]) -> Vec<(String, String)> {
        let served = self.served.load();
        wanted
            .iter()
            .filter(|h| !served.contains_key(*h))
            .map(|h| {
                let why = self
                    .failing
                    .get(h)
                    .map(|e| e.clone())
                    .unwrap_or_else(|| "ordering".into());
                (h.clone(), why)
            })
            .collect()
    }

    fn install(&self, host: &str, issued: Arc<Issued>) {
        self.metrics
            .autocert_expiry
            .with_label_values(&[host])
            .set(issued.expires_unix() as i64);
        self.served.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(host.to_string(), Arc::clone(&issued));
            m
        });
        self.failing.remove(host);
    }

    fn served(&self, host: &str) -> Option<Arc<Issued>> {
        self.served.load().get(host).cloned()
    }

    /// Forgets hosts no longer in the config (their certificates stay on disk).
    fn retain(&self, wanted: &[String]) {
        let served = self.served.load();
        if served.keys().all(|h| wanted.contains(h)) {
            return;
        }
        for h in served.keys().filter(|h| !wanted.contains(h)) {
            let _ = self.metrics.autocert_expiry.remove_label_values(&[h]);
        }
        self.served.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.retain(|h, _| wanted.contains(h));
            m
        });
        self.failing.retain(|h, _| wanted.contains(h));
    }
}
