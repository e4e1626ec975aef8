//! Keeps the identity provider clients in step with the config (the global one and each route's
//! own): discovers at start, again when their settings change, and retries with backoff while the IdP is unreachable (requests
//! that need sign-in get 503 meanwhile; sessions already made keep working).

use super::AuthState;
use crate::config::idp::IdpSettings;
use crate::identity::Provider;
use crate::snapshot::SharedSnapshot;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

pub struct IdpWatcher {
    runtime: SharedSnapshot,
    state: Arc<AuthState>,
}

impl IdpWatcher {
    pub fn new(runtime: SharedSnapshot, state: Arc<AuthState>) -> Self {
        Self { runtime, state }
    }
}

/// The providers the snapshot signs in with, by key: the global one (empty key) and every
/// route's own.
fn wanted(snap: &crate::snapshot::Snapshot) -> BTreeMap<String, (IdpSettings, String)> {
    let mut out = BTreeMap::new();
    let Some(auth) = snap.settings.auth.as_ref() else {
        return out;
    };
    let fingerprint = |i: &IdpSettings| {
        use sha2::Digest;
        // The secret itself is redacted from Debug; its hash still marks a rotation.
        let secret = sha2::Sha256::digest(i.client_secret.as_bytes());
        format!("{i:?}|{secret:x}|{}", auth.authenticate_url)
    };
    if let Some(i) = &auth.idp {
        out.insert(String::new(), (i.clone(), fingerprint(i)));
    }
    for route in snap.routes.iter() {
        for idp in route.idps.iter().filter(|i| !i.key.is_empty()) {
            let s = IdpSettings::clone(&idp.settings);
            let f = fingerprint(&s);
            out.entry(idp.key.clone()).or_insert((s, f));
        }
    }
    out
}

#[async_trait]
impl BackgroundService for IdpWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Key → the fingerprint of the settings its provider was discovered with.
        let mut current: HashMap<String, String> = HashMap::new();
        let mut backoff = Duration::from_millis(250);
        loop {
            let snap = self.runtime.load_full();
            let wanted = wanted(&snap);
            for key in self.state.idp.keys() {
                if !wanted.contains_key(&key) {
                    self.state.idp.set(&key, None);
                    current.remove(&key);
                }
            }
            let mut wait = Duration::from_secs(1);
            let redirect = snap.settings.auth.as_ref().map(|a| {
                let mut r = a.authenticate_url.clone();
                r.set_path("/oauth2/callback");
                r
            });
            for (key, (idp, fingerprint)) in &wanted {
                let (Some(redirect), true) = (&redirect, current.get(key) != Some(fingerprint))
                else {
                    continue;
                };
                match Provider::discover(idp.clone(), redirect.clone()).await {
                    Ok(client) => {
                        tracing::info!(issuer = %idp.issuer, client_id = %idp.client_id, "identity provider discovered");
                        self.state.idp.set(key, Some(Arc::new(client)));
                        current.insert(key.clone(), fingerprint.clone());
                        backoff = Duration::from_millis(250);
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %idp.issuer, error = %e, retry_in = ?backoff, "identity provider not reachable");
                        wait = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
