//! `circuit_breaker_thresholds` (global, and per route): how much a route's upstream may be asked
//! at once before the gateway answers 503 itself instead of queueing (Envoy's circuit breakers,
//! which Pomerium exposes). Plain data; the counting lives in `upstream::breaker`.

use super::error::Errors;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RawCircuitBreaker {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
    pub max_connection_pools: Option<u32>,
}

/// The compiled limits; `None`: no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitLimits {
    /// Requests being served by the upstream at once (one HTTP/1.1 connection each).
    pub max_connections: Option<u32>,
    /// Requests waiting for one of those while all are busy; past it, 503 at once.
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the upstream at all, waiting or served.
    pub max_requests: Option<u32>,
}

/// The limits `raw` sets, or `None` when it sets none that Vallum enforces. `max_retries` and
/// `max_connection_pools` are accepted with a warning: Vallum does not retry requests and keeps
/// one connection pool per upstream.
pub fn compile(raw: &RawCircuitBreaker, key: &str, errs: &mut Errors) -> Option<CircuitLimits> {
    for (name, v) in [
        ("max_retries", raw.max_retries),
        ("max_connection_pools", raw.max_connection_pools),
    ] {
        if v.is_some() {
            errs.warn(
                format!("{key}.{name}"),
                "has no effect in Vallum (no request retries; one connection pool per upstream)",
            );
        }
    }
    for (name, v) in [
        ("max_connections", raw.max_connections),
        ("max_pending_requests", raw.max_pending_requests),
        ("max_requests", raw.max_requests),
    ] {
        if v == Some(0) && name != "max_pending_requests" {
            errs.push(format!("{key}.{name}"), "must be at least 1");
            return None;
        }
    }
    let limits = CircuitLimits {
        max_connections: raw.max_connections,
        max_pending_requests: raw.max_pending_requests,
        max_requests: raw.max_requests,
    };
    (limits.max_connections.is_some()
        || limits.max_pending_requests.is_some()
        || limits.max_requests.is_some())
    .then_some(limits)
}
