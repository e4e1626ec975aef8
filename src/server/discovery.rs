//! Keeps the identity provider client in step with the config: discovers at start, again when
//! the `idp_*` settings change, and retries with backoff while the IdP is unreachable (requests
//! that need sign-in get 503 meanwhile; sessions already made keep working).

use super::AuthState;
use crate::identity::Provider;
use crate::snapshot::SharedSnapshot;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
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

#[async_trait]
impl BackgroundService for IdpWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut current: Option<String> = None;
        let mut backoff = Duration::from_millis(250);
        loop {
            let snap = self.runtime.load_full();
            let wanted = snap
                .settings
                .auth
                .as_ref()
                .and_then(|a| a.idp.as_ref().map(|i| (a, i)));
            let fingerprint = wanted.map(|(a, i)| {
                use sha2::Digest;
                // The secret itself is redacted from Debug; its hash still marks a rotation.
                let secret = sha2::Sha256::digest(i.client_secret.as_bytes());
                format!("{i:?}|{secret:x}|{}", a.authenticate_url)
            });
            let mut wait = Duration::from_secs(1);
            if fingerprint != current {
                match wanted {
                    None => {
                        self.state.idp.store(None);
                        current = None;
                    }
                    Some((auth, idp)) => {
                        let mut redirect = auth.authenticate_url.clone();
                        redirect.set_path("/oauth2/callback");
                        match Provider::discover(idp.clone(), redirect).await {
                            Ok(client) => {
                                tracing::info!(issuer = %idp.issuer, "identity provider discovered");
                                self.state.idp.store(Some(Arc::new(client)));
                                current = fingerprint;
                                backoff = Duration::from_millis(250);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, retry_in = ?backoff, "identity provider not reachable");
                                wait = backoff;
                                backoff = (backoff * 2).min(Duration::from_secs(30));
                            }
                        }
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
