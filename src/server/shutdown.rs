//! Stopping. `SIGTERM` (what `systemctl stop` and Kubernetes send) stops accepting, lets the
//! requests in flight finish, and exits as soon as none remain; Pingora's grace period
//! (`grace_period_seconds`, 25 s unless the Pingora conf says otherwise) bounds the wait, then its
//! `graceful_shutdown_timeout_seconds` ends what is left. `SIGQUIT` (graceful upgrade) and
//! `SIGINT` keep Pingora's meaning.

use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use pingora_core::server::{
    RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch,
};
use std::sync::Arc;
use std::time::Duration;

/// The grace period when the Pingora conf sets none (Pingora's own default is 5 minutes, longer
/// than any orchestrator waits before `SIGKILL`; Kubernetes waits 30 s).
pub const DEFAULT_GRACE_SECONDS: u64 = 25;

/// A built node, ready to serve until a signal stops it.
pub struct Node {
    pub server: Server,
    pub metrics: Arc<Metrics>,
}

impl Node {
    pub fn run_forever(self) -> ! {
        let signals = Signals {
            metrics: self.metrics,
        };
        self.server.run(RunArgs {
            shutdown_signal: Box::new(signals),
        });
        crate::telemetry::traces::flush_before_exit();
        crate::telemetry::lines::flush_before_exit();
        std::process::exit(0)
    }
}

struct Signals {
    metrics: Arc<Metrics>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let signal = UnixShutdownSignalWatch.recv().await;
        if matches!(signal, ShutdownSignal::GracefulTerminate) {
            exit_when_drained(Arc::clone(&self.metrics));
        }
        signal
    }
}

/// Once the listeners have stopped (Pingora broadcasts the shutdown as `recv` returns), waits
/// until no request has been in flight for two looks in a row, then exits. Pingora's grace
/// period still ends the process if requests never finish.
fn exit_when_drained(metrics: Arc<Metrics>) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let mut idle_looks = 0;
        loop {
            let in_flight = metrics.open_connections.get();
            idle_looks = if in_flight <= 0 { idle_looks + 1 } else { 0 };
            if idle_looks >= 2 {
                tracing::info!("graceful shutdown: no request in flight, exiting");
                crate::telemetry::traces::flush_before_exit();
                crate::telemetry::lines::flush_before_exit();
                std::process::exit(0);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}
