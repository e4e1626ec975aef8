//! How a route protects itself from its upstream, Envoy's way as Pomerium exposes it:
//! `circuit_breaker_thresholds` (how much the upstream may be asked at once before the gateway
//! answers 503 itself instead of queueing) and `outlier_detection` (backends that keep failing
//! leave rotation for a while). Plain data; the counting lives in `upstream::breaker` and
//! `upstream::outlier`.

use super::duration::GoDuration;
use super::error::Errors;
use serde::Deserialize;
use std::time::Duration;

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

/// The route's `outlier_detection` as written (Envoy's names); the fields Vallum does not use
/// are accepted so an Envoy-shaped block loads.
#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(default)]
pub struct RawOutlierDetection {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_failure: Option<u32>,
    pub enforcing_consecutive_5xx: Option<u32>,
    pub enforcing_consecutive_gateway_failure: Option<u32>,
    pub interval: Option<GoDuration>,
    pub base_ejection_time: Option<GoDuration>,
    pub max_ejection_time: Option<GoDuration>,
    pub max_ejection_percent: Option<u32>,
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_yaml_ng::Value>,
}

/// The compiled detector settings, with Envoy's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutlierSpec {
    /// Consecutive 5xx that eject (None: this detector is off).
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway: Option<u32>,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejection_percent: u32,
}

impl OutlierSpec {
    /// Envoy's defaults: 5 consecutive 5xx (enforced), gateway failures counted but not enforced,
    /// 30 s base ejection, 300 s at most, 10% of the backends at once.
    pub fn compile(raw: &RawOutlierDetection) -> OutlierSpec {
        let enforced = |n: Option<u32>, enforcing: Option<u32>, default_on: bool| {
            let on = enforcing.map_or(default_on, |e| e > 0);
            on.then(|| n.unwrap_or(5).max(1))
        };
        OutlierSpec {
            consecutive_5xx: enforced(raw.consecutive_5xx, raw.enforcing_consecutive_5xx, true),
            consecutive_gateway: enforced(
                raw.consecutive_gateway_failure,
                raw.enforcing_consecutive_gateway_failure,
                false,
            ),
            base_ejection: raw
                .base_ejection_time
                .map_or(Duration::from_secs(30), |d| d.0),
            max_ejection: raw
                .max_ejection_time
                .map_or(Duration::from_secs(300), |d| d.0),
            max_ejection_percent: raw.max_ejection_percent.unwrap_or(10).min(100),
        }
    }
}
