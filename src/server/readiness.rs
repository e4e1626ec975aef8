//! Whether this node should get traffic: the config is loaded, the identity provider answers
//! (when sign-in is configured) and the session store answers. A background probe keeps the
//! answer current, so `/readyz` goes false during an outage and true again on recovery without
//! the probe request itself waiting on Redis or the IdP.

use crate::authn::AuthState;
use crate::snapshot::SharedSnapshot;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::probes::{Component, Readiness, Report};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// Re-checks every component once a second (the IdP every five), logging each change.
pub struct ReadinessProbe {
    pub runtime: SharedSnapshot,
    pub auth: Arc<AuthState>,
    pub acme: Arc<crate::acme::Acme>,
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
}

const IDP_EVERY: u32 = 5;

impl ReadinessProbe {
    async fn check(&self, idp_previous: Option<Component>, probe_idp: bool) -> Report {
        let snap = self.runtime.load_full();
        let config = Some(Component {
            ready: true,
            detail: format!(
                "checksum {}",
                snap.checksum.get(..12).unwrap_or(&snap.checksum)
            ),
        });
        let certificates = self.certificates(&snap);
        let Some(auth) = &snap.settings.auth else {
            return Report {
                checked: true,
                config,
                idp: None,
                store: None,
                certificates,
            };
        };
        let store = match self.auth.store.ping().await {
            Ok(()) => Component {
                ready: true,
                detail: format!("{} reachable", self.auth.store.backend()),
            },
            Err(e) => Component {
                ready: false,
                detail: e.to_string(),
            },
        };
        let idp = match (&auth.idp, self.auth.idp.global()) {
            (None, _) => None,
            (Some(_), None) => Some(Component {
                ready: false,
                detail: "not discovered yet".into(),
            }),
            (Some(_), Some(client)) if probe_idp || idp_previous.is_none() => {
                Some(match client.probe(Duration::from_secs(2)).await {
                    Ok(()) => Component {
                        ready: true,
                        detail: format!("{} answers", client.settings().issuer),
                    },
                    Err(e) => Component {
                        ready: false,
                        detail: e.to_string(),
                    },
                })
            }
            (Some(_), Some(_)) => idp_previous,
        };
        let idp = self.with_route_providers(&snap, idp);
        Report {
            checked: true,
            config,
            idp,
            store: Some(store),
            certificates,
        }
    }

    /// Routes' own sign-in providers, in the detail: a route's provider that is down fails
    /// that route's sign-ins, not the node, so readiness stays the global provider's.
    fn with_route_providers(
        &self,
        snap: &crate::snapshot::Snapshot,
        idp: Option<Component>,
    ) -> Option<Component> {
        let mut keys: Vec<&str> = snap
            .routes
            .iter()
            .flat_map(|r| r.idps.iter())
            .map(|i| i.key.as_str())
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return idp;
        }
        let found = keys
            .iter()
            .filter(|k| self.auth.idp.get(k).is_some())
            .count();
        let routes = format!("route providers: {found} of {} discovered", keys.len());
        Some(match idp {
            Some(c) => Component {
                ready: c.ready,
                detail: format!("{}; {routes}", c.detail),
            },
            None => Component {
                ready: true,
                detail: routes,
            },
        })
    }

    /// With autocert on: which hosts still lack a certificate, and why.
    fn certificates(&self, snap: &crate::snapshot::Snapshot) -> Option<Component> {
        snap.settings.autocert.as_ref()?;
        let wanted = crate::acme::worker::wanted(snap);
        let missing = self.acme.missing(&wanted);
        let detail = if missing.is_empty() {
            format!(
                "{} of {} hosts have certificates",
                wanted.len(),
                wanted.len()
            )
        } else {
            let list: Vec<String> = missing
                .iter()
                .map(|(h, why)| format!("{h} ({why})"))
                .collect();
            format!("no certificate yet for {}", list.join(", "))
        };
        Some(Component {
            ready: missing.is_empty(),
            detail,
        })
    }
}

#[async_trait]
impl BackgroundService for ReadinessProbe {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = 0u32;
        let mut last = Report::default();
        loop {
            let next = self.check(last.idp.clone(), tick % IDP_EVERY == 0).await;
            for (name, before, after) in [
                ("config", &last.config, &next.config),
                ("identity_provider", &last.idp, &next.idp),
                ("session_store", &last.store, &next.store),
                ("certificates", &last.certificates, &next.certificates),
            ] {
                let ready = after.as_ref().is_none_or(|c| c.ready);
                self.metrics
                    .ready
                    .with_label_values(&[name])
                    .set(i64::from(ready));
                let was = before.as_ref().map(|c| c.ready);
                let is = after.as_ref().map(|c| c.ready);
                if was != is {
                    let detail = after.as_ref().map(|c| c.detail.as_str()).unwrap_or("");
                    if is == Some(false) {
                        tracing::warn!(component = name, detail, "not ready");
                    } else {
                        tracing::info!(component = name, detail, "ready");
                    }
                }
            }
            self.readiness.set(next.clone());
            last = next;
            tick = tick.wrapping_add(1);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
