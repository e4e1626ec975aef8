//! Passive health (`outlier_detection`, Envoy's fields as Pomerium passes them on): a backend
//! that answers with too many consecutive 5xx, or gateway failures (502, 503, 504, no
//! connection), leaves rotation for an ejection time that grows each time it is ejected, and
//! comes back by itself. Beside the active health checks, which it does not replace: a backend
//! must be both healthy and not ejected to be picked.

use super::pool::BackendAddr as SocketAddr;
use crate::config::breaker::OutlierSpec;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
struct Host {
    fives: AtomicU32,
    gateway: AtomicU32,
    ejections: AtomicU32,
    /// Unix milliseconds until which the backend is out; 0: in rotation.
    until: AtomicU64,
}

/// How one answer from a backend went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A 5xx other than a gateway failure.
    ServerError,
    /// 502, 503, 504, or no connection.
    GatewayFailure,
}

impl Outcome {
    pub fn of(status: Option<u16>, failed: bool) -> Outcome {
        match status {
            Some(502..=504) => Outcome::GatewayFailure,
            Some(500..=599) => Outcome::ServerError,
            _ if failed => Outcome::GatewayFailure,
            _ => Outcome::Success,
        }
    }
}

pub struct Outlier {
    spec: OutlierSpec,
    hosts: DashMap<SocketAddr, Host>,
    /// The earliest moment an ejected backend returns (unix ms; u64::MAX: none is out).
    next_return: AtomicU64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Outlier {
    pub fn new(spec: OutlierSpec) -> Outlier {
        Outlier {
            spec,
            hosts: DashMap::new(),
            next_return: AtomicU64::new(u64::MAX),
        }
    }

    /// Records an answer; returns the ejection time when this one ejects the backend. `backends`
    /// is the pool's size, for `max_ejection_percent` (at least one may always be out).
    pub fn record(&self, addr: &SocketAddr, outcome: Outcome, backends: usize) -> Option<Duration> {
        let host = self.hosts.entry(addr.clone()).or_default();
        let (fives, gateway) = match outcome {
            Outcome::Success => {
                host.fives.store(0, Ordering::Relaxed);
                host.gateway.store(0, Ordering::Relaxed);
                return None;
            }
            Outcome::ServerError => (host.fives.fetch_add(1, Ordering::AcqRel) + 1, 0),
            Outcome::GatewayFailure => (
                host.fives.fetch_add(1, Ordering::AcqRel) + 1,
                host.gateway.fetch_add(1, Ordering::AcqRel) + 1,
            ),
        };
        let tripped = self.spec.consecutive_5xx.is_some_and(|n| fives >= n)
            || self.spec.consecutive_gateway.is_some_and(|n| gateway >= n);
        if !tripped || host.until.load(Ordering::Acquire) != 0 {
            return None;
        }
        drop(host);
        let now = now_ms();
        let out = self
            .hosts
            .iter()
            .filter(|h| h.until.load(Ordering::Acquire) > now)
            .count();
        let allowed = (backends * self.spec.max_ejection_percent as usize / 100).max(1);
        if out >= allowed || backends < 2 {
            return None;
        }
        let host = self.hosts.get(addr)?;
        let times = host.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        let time = (self.spec.base_ejection * times)
            .min(self.spec.max_ejection.max(self.spec.base_ejection));
        let until = now + time.as_millis() as u64;
        host.until.store(until, Ordering::Release);
        host.fives.store(0, Ordering::Relaxed);
        host.gateway.store(0, Ordering::Relaxed);
        self.next_return.fetch_min(until, Ordering::AcqRel);
        Some(time)
    }

    /// The backends whose ejection has run out (once each), for the pool to put back. A load
    /// and a compare while none is due.
    pub fn returning(&self) -> Vec<SocketAddr> {
        let now = now_ms();
        if self.next_return.load(Ordering::Acquire) > now {
            return Vec::new();
        }
        let mut back = Vec::new();
        let mut next = u64::MAX;
        for h in self.hosts.iter() {
            let until = h.until.load(Ordering::Acquire);
            if until == 0 {
                continue;
            }
            if until <= now {
                if h.until
                    .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    back.push(h.key().clone());
                }
            } else {
                next = next.min(until);
            }
        }
        self.next_return.store(next, Ordering::Release);
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::breaker::RawOutlierDetection;
    use crate::config::duration::GoDuration;

    fn spec() -> OutlierSpec {
        OutlierSpec::compile(&RawOutlierDetection {
            consecutive_5xx: Some(3),
            base_ejection_time: Some(GoDuration(Duration::from_millis(50))),
            max_ejection_percent: Some(50),
            ..Default::default()
        })
    }

    #[test]
    fn consecutive_failures_eject_and_successes_reset() {
        let o = Outlier::new(spec());
        let a = SocketAddr::Inet("127.0.0.1:1".parse().unwrap());
        let b = SocketAddr::Inet("127.0.0.1:2".parse().unwrap());
        assert_eq!(o.record(&a, Outcome::ServerError, 4), None);
        assert_eq!(o.record(&a, Outcome::ServerError, 4), None);
        assert_eq!(o.record(&a, Outcome::Success, 4), None, "reset");
        assert_eq!(o.record(&a, Outcome::ServerError, 4), None);
        assert_eq!(o.record(&a, Outcome::ServerError, 4), None);
        assert_eq!(
            o.record(&a, Outcome::GatewayFailure, 4),
            Some(Duration::from_millis(50))
        );
        // 50% of 4: a second may go; a lone backend never does.
        for _ in 0..3 {
            o.record(&b, Outcome::ServerError, 4);
        }
        assert!(o.hosts.get(&b).unwrap().until.load(Ordering::Acquire) > 0);
        let lone = Outlier::new(spec());
        for _ in 0..5 {
            assert_eq!(lone.record(&a, Outcome::ServerError, 1), None);
        }
        assert!(o.returning().is_empty(), "not yet");
        std::thread::sleep(Duration::from_millis(60));
        let mut back = o.returning();
        back.sort();
        assert_eq!(back, vec![a, b]);
        assert!(o.returning().is_empty(), "once");
    }

    #[test]
    fn gateway_failures_count_only_when_enforced() {
        let off = OutlierSpec::compile(&RawOutlierDetection::default());
        assert_eq!(
            (off.consecutive_5xx, off.consecutive_gateway),
            (Some(5), None)
        );
        let on = OutlierSpec::compile(&RawOutlierDetection {
            enforcing_consecutive_gateway_failure: Some(100),
            consecutive_gateway_failure: Some(2),
            enforcing_consecutive_5xx: Some(0),
            ..Default::default()
        });
        assert_eq!(
            (on.consecutive_5xx, on.consecutive_gateway),
            (None, Some(2))
        );
        assert_eq!(Outcome::of(Some(503), false), Outcome::GatewayFailure);
        assert_eq!(Outcome::of(Some(500), false), Outcome::ServerError);
        assert_eq!(Outcome::of(None, true), Outcome::GatewayFailure);
        assert_eq!(Outcome::of(Some(404), false), Outcome::Success);
    }
}
