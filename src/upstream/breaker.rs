//! A route's circuit breaker (`circuit_breaker_thresholds`): counts what the upstream is being
//! asked at once and turns away what is over a limit at once, with a 503, instead of letting it
//! queue until timeouts fire — a struggling upstream is not buried deeper, and clients learn at
//! once. Lock-free on the path where the limits are not reached.

use crate::config::breaker::CircuitLimits;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Breaker {
    limits: CircuitLimits,
    /// One permit per request the upstream may serve at once (`max_connections`).
    serving: Arc<Semaphore>,
    /// Requests waiting for a permit.
    pending: AtomicU32,
    /// Requests admitted and not finished, waiting or served (`max_requests`).
    total: AtomicU32,
}

/// Which limit turned a request away (the metric's `limit` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Requests,
    PendingRequests,
}

impl Overflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Requests => "max_requests",
            Overflow::PendingRequests => "max_pending_requests",
        }
    }
}

/// Held for as long as the request is served; dropping it frees its place.
pub struct Admitted {
    breaker: Arc<Breaker>,
    _serving: Option<OwnedSemaphorePermit>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.breaker.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a waiting request for as long as it waits (a cancelled wait counts down too).
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("limits", &self.limits)
            .field("in_flight", &self.total.load(Ordering::Relaxed))
            .finish()
    }
}

impl Breaker {
    pub fn new(limits: CircuitLimits) -> Arc<Breaker> {
        let permits = limits
            .max_connections
            .map_or(Semaphore::MAX_PERMITS, |n| n as usize);
        Arc::new(Breaker {
            limits,
            serving: Arc::new(Semaphore::new(permits)),
            pending: AtomicU32::new(0),
            total: AtomicU32::new(0),
        })
    }

    pub fn limits(&self) -> CircuitLimits {
        self.limits
    }

    /// Admits a request, after waiting for a free place if the limits allow waiting.
    pub async fn admit(self: &Arc<Self>) -> Result<Admitted, Overflow> {
        let total = self.total.fetch_add(1, Ordering::AcqRel);
        // From here the request counts; `Admitted` (or this guard) counts it down.
        let mut admitted = Admitted {
            breaker: Arc::clone(self),
            _serving: None,
        };
        if self.limits.max_requests.is_some_and(|max| total >= max) {
            return Err(Overflow::Requests);
        }
        if let Ok(p) = Arc::clone(&self.serving).try_acquire_owned() {
            admitted._serving = Some(p);
            return Ok(admitted);
        }
        let waiting = self.pending.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.pending);
        if self
            .limits
            .max_pending_requests
            .is_some_and(|max| waiting >= max)
        {
            return Err(Overflow::PendingRequests);
        }
        match Arc::clone(&self.serving).acquire_owned().await {
            Ok(p) => {
                admitted._serving = Some(p);
                Ok(admitted)
            }
            // The semaphore is never closed; were it, nothing could be served.
            Err(_) => Err(Overflow::Requests),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(conns: Option<u32>, pending: Option<u32>, requests: Option<u32>) -> CircuitLimits {
        CircuitLimits {
            max_connections: conns,
            max_pending_requests: pending,
            max_requests: requests,
        }
    }

    #[tokio::test]
    async fn over_the_limits_is_refused_at_once_and_places_come_back() {
        let b = Breaker::new(limits(Some(1), Some(1), None));
        let first = b.admit().await.unwrap();
        // A second waits for the first; a third finds the waiting room full.
        let b2 = Arc::clone(&b);
        let second = tokio::spawn(async move { b2.admit().await.map(|_| ()) });
        tokio::task::yield_now().await;
        while b.pending.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(b.admit().await.err(), Some(Overflow::PendingRequests));
        drop(first);
        second.await.unwrap().unwrap();
        assert_eq!(b.total.load(Ordering::Acquire), 0, "every place given back");
        assert!(b.admit().await.is_ok());
    }

    #[tokio::test]
    async fn max_requests_counts_waiting_and_served() {
        let b = Breaker::new(limits(None, None, Some(2)));
        let (x, y) = (b.admit().await.unwrap(), b.admit().await.unwrap());
        assert_eq!(b.admit().await.err(), Some(Overflow::Requests));
        drop(x);
        let z = b.admit().await.unwrap();
        drop((y, z));
        assert_eq!(b.total.load(Ordering::Acquire), 0);
    }
}
