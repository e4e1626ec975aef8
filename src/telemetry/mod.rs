//! What Vallum tells operators: the metrics registry, the access and authorize log lines, the
//! readiness state and the listener that serves metrics and probes.
//! Below every layer that counts or logs, above only config (field selections) and policy
//! (decisions).

mod escape;
pub mod lines;
pub mod listener;
pub mod logs;
pub mod metrics;
pub mod probes;
pub mod traces;

/// Whether a report of trouble may be written now, at most one a minute per `last`, noting it
/// when it may (the log writer's and the trace exporter's drop and failure lines).
pub(crate) fn once_a_minute(last: &mut Option<std::time::Instant>) -> bool {
    let due = last.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60));
    if due {
        *last = Some(std::time::Instant::now());
    }
    due
}
