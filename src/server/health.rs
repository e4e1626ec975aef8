//! The health-check loops: one per pool in the live snapshot that asks for checks, started when
//! the pool appears and stopped when a reload drops it. The checks themselves and the health
//! state they update belong to the pool (`upstream`).

use crate::routes::route::Action;
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::telemetry::metrics::Metrics;
use crate::upstream::Pool;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Runs the health checks of every pool in the live snapshot, starting loops for new pools and
/// stopping those whose pool left the snapshot.
pub struct HealthSupervisor {
    runtime: SharedSnapshot,
    metrics: Arc<Metrics>,
}

impl HealthSupervisor {
    pub fn new(runtime: SharedSnapshot, metrics: Arc<Metrics>) -> Self {
        Self { runtime, metrics }
    }

    /// Publishes every checked backend's state as `vallum_upstream_healthy{route, backend}`,
    /// labelled with the first route that uses the pool.
    fn export(&self, snap: &Snapshot) {
        let g = &self.metrics.upstream_healthy;
        g.reset();
        let mut seen = std::collections::HashSet::new();
        for route in snap.routes.iter() {
            let Action::Upstream(pool) = &route.action else {
                continue;
            };
            if pool.health_interval.is_none() || !seen.insert(pool.key.clone()) {
                continue;
            }
            for (addr, up) in pool.health() {
                g.with_label_values(&[&*route.id, &addr.to_string()])
                    .set(i64::from(up));
            }
        }
    }
}

#[async_trait]
impl BackgroundService for HealthSupervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut loops: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            let snap = self.runtime.load_full();
            ticks = ticks.wrapping_add(1);
            if ticks % 5 == 0 {
                self.export(&snap);
            }
            let live: HashMap<&str, &Arc<Pool>> = snap
                .pools
                .iter()
                .filter(|(_, p)| p.health_interval.is_some())
                .map(|(k, p)| (k.as_str(), p))
                .collect();
            loops.retain(|k, h| {
                let keep = live.contains_key(k.as_str());
                if !keep {
                    h.abort();
                }
                keep
            });
            for (k, pool) in live {
                if loops.contains_key(k) {
                    continue;
                }
                let pool = Arc::clone(pool);
                let interval = pool.health_interval.unwrap_or(Duration::from_secs(5));
                loops.insert(
                    k.to_string(),
                    tokio::spawn(async move {
                        loop {
                            pool.run_health_checks().await;
                            tokio::time::sleep(interval).await;
                        }
                    }),
                );
            }
        }
        for (_, h) in loops {
            h.abort();
        }
    }
}
