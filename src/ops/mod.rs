//! What operators see: readiness, and the metrics and probe listeners.

pub mod listener;
pub mod readiness;
