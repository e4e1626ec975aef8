//! Hot reload: the config file and every file it references are watched (content hash, checked
//! twice a second, which also catches editors that replace files by rename) and SIGHUP forces a
//! check. A new snapshot is built off the request path and swapped in whole; an invalid config
//! is refused, logged with every error, and the old snapshot keeps serving.

use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct Reloader {
    config: PathBuf,
    runtime: SharedSnapshot,
    metrics: Arc<Metrics>,
    /// The watched files as they were when the node was built: a change made before the
    /// watcher's first look (while the services start) is still a change.
    baseline: [u8; 32],
}

impl Reloader {
    pub fn new(config: PathBuf, runtime: SharedSnapshot, metrics: Arc<Metrics>) -> Self {
        record_loaded(&metrics, &runtime.load().checksum);
        let baseline = fingerprint(&runtime.load().files);
        Self {
            config,
            runtime,
            metrics,
            baseline,
        }
    }
}

/// Marks `checksum` as the loaded config in the metrics.
fn record_loaded(metrics: &Metrics, checksum: &str) {
    metrics.config_info.reset();
    metrics.config_info.with_label_values(&[checksum]).set(1);
    metrics
        .config_last_reload_success
        .set(crate::clock::unix_now() as i64);
}

/// Hash of the watched files' contents; a missing file hashes as empty (and will fail the build).
fn fingerprint(files: &[PathBuf]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(std::fs::read(f).unwrap_or_default());
        h.update([0]);
    }
    h.finalize().into()
}

/// Builds a snapshot from `path` and swaps it in, or logs why not. Returns whether it swapped.
pub fn reload_now(path: &Path, runtime: &SharedSnapshot, metrics: &Metrics) -> bool {
    let started = std::time::Instant::now();
    let current = runtime.load_full();
    match Snapshot::from_file(path, Some(&current)) {
        Ok(next) => {
            if next.settings.address != current.settings.address
                || next.settings.insecure_server != current.settings.insecure_server
                || next.settings.http_redirect_addr != current.settings.http_redirect_addr
            {
                tracing::warn!(
                    "listener settings (address, insecure_server, http_redirect_addr) changed; they take \
                     effect after a restart or a graceful upgrade (`vallum run -u`)"
                );
            }
            // The exporter starts with the process; only whose traceparent is believed follows
            // a reload.
            let exporter = |o: &Option<crate::config::otel::OtelSettings>| {
                o.as_ref().map(|o| crate::config::otel::OtelSettings {
                    trust: crate::config::otel::TrustParent::Never,
                    ..o.clone()
                })
            };
            if exporter(&next.settings.otel) != exporter(&current.settings.otel) {
                tracing::warn!(
                    "tracing settings (otel_*) changed; they take effect after a restart or a \
                     graceful upgrade (`vallum run -u`)"
                );
            }
            for w in &next.warnings {
                tracing::warn!("{w}");
            }
            tracing::info!(
                config = %path.display(),
                checksum = %next.checksum,
                routes = next.routes.len(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "config reloaded"
            );
            record_loaded(metrics, &next.checksum);
            metrics.config_reloads.with_label_values(&["success"]).inc();
            runtime.store(Arc::new(next));
            true
        }
        Err(errors) => {
            metrics.config_reloads.with_label_values(&["failure"]).inc();
            let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            tracing::error!(
                config = %path.display(),
                errors = ?list,
                "config reload refused; still serving the previous config"
            );
            false
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; file watching still works");
                None
            }
        };
        let mut watched = self.runtime.load().files.clone();
        let mut last = self.baseline;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let forced = tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let files = watched.clone();
            let now = match tokio::task::spawn_blocking(move || fingerprint(&files)).await {
                Ok(f) => f,
                Err(_) => continue,
            };
            if !forced && now == last {
                continue;
            }
            if forced {
                tracing::info!("SIGHUP: reloading config");
            }
            last = now;
            let (path, runtime, metrics) = (
                self.config.clone(),
                Arc::clone(&self.runtime),
                Arc::clone(&self.metrics),
            );
            let swapped =
                tokio::task::spawn_blocking(move || reload_now(&path, &runtime, &metrics))
                    .await
                    .unwrap_or(false);
            if swapped {
                watched = self.runtime.load().files.clone();
                last = fingerprint(&watched);
            }
        }
    }
}
