//! What Vallum tells operators: the metrics registry, the access and authorize log lines, the
//! readiness state and the listener that serves metrics and probes.
//! Below every layer that counts or logs, above only config (field selections) and policy
//! (decisions).

pub mod lines;
pub mod listener;
pub mod logs;
pub mod metrics;
pub mod probes;
pub mod traces;
