//! A pool is built once per distinct upstream definition and reused across reloads when that
//! definition is unchanged, so health state survives a config edit that did not touch it.

use super::health::{build_check, HealthSpec};
use futures_util::FutureExt;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{CertKey, WrappedX509};
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::{Consistent, Random, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `load_balancing_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    Random,
    LeastRequest,
    /// `RING_HASH` and `MAGLEV`: both consistent hashing (Ketama) keyed by session, else client IP.
    Hash,
}

/// One `to` URL, resolved.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub addr: SocketAddr,
    pub tls: bool,
    /// `host[:port]` as the `to` URL spells it, for the auto host rewrite.
    pub authority: String,
    /// `authority` as a ready `Host` value (validated once, not per request).
    pub host_value: Option<http::HeaderValue>,
    pub host: String,
    /// Path of the `to` URL without its trailing `/`, prepended to the forwarded path.
    pub path_prefix: String,
    pub weight: usize,
}

#[derive(Clone, Default)]
pub struct UpstreamTls {
    pub skip_verify: bool,
    pub server_name: Option<String>,
    pub ca: Option<Arc<[WrappedX509]>>,
    pub client_cert: Option<Arc<CertKey>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("skip_verify", &self.skip_verify)
            .field("server_name", &self.server_name)
            .field("custom_ca", &self.ca.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

/// Everything that defines a pool; `key` identifies it across reloads.
#[derive(Debug)]
pub struct PoolSpec {
    pub key: String,
    pub targets: Vec<UpstreamTarget>,
    pub tls: UpstreamTls,
    pub policy: LbPolicy,
    pub health: Vec<HealthSpec>,
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Hash(LoadBalancer<Consistent>),
    LeastRequest(LoadBalancer<RoundRobin>),
}

/// Index of the target a backend came from, carried in the backend's extensions.
#[derive(Clone, Copy)]
struct TargetIdx(usize);

/// Requests in flight to one backend (for `LEAST_REQUEST`).
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for Picked {
    fn drop(&mut self) {
        if let Some(f) = &self.in_flight {
            f.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A chosen backend; holding it counts as one request in flight until [`Picked::done`] or drop.
pub struct Picked {
    pub target: usize,
    pub addr: SocketAddr,
    in_flight: Option<InFlight>,
}

impl Picked {
    /// The backend has finished answering: stop counting this request against it, even though
    /// the client may still be reading the response (and the request is not yet logged).
    pub fn done(&mut self) {
        if let Some(f) = self.in_flight.take() {
            f.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

pub struct Pool {
    pub key: String,
    pub targets: Vec<UpstreamTarget>,
    pub tls: UpstreamTls,
    pub health_interval: Option<Duration>,
    group_key: u64,
    balancer: Balancer,
    /// The only backend, when there is one and nothing checks its health: every pick is this
    /// one, so the balancer (its health map, its iterator) is skipped on the hot path.
    sole: Option<SocketAddr>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("key", &self.key)
            .field("targets", &self.targets)
            .finish()
    }
}

fn lb<S>(set: &BTreeSet<Backend>, spec: &PoolSpec) -> LoadBalancer<S>
where
    S: pingora_load_balancing::selection::BackendSelection + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
{
    let mut backends = Backends::new(Static::new(set.clone()));
    if let Some(check) = build_check(spec) {
        backends.set_health_check(check);
    }
    let lb = LoadBalancer::from_backends(backends);
    // Static discovery completes without awaiting anything.
    let _ = lb.update().now_or_never();
    lb
}

impl Pool {
    pub fn new(spec: PoolSpec) -> Pool {
        let mut set = BTreeSet::new();
        for (i, t) in spec.targets.iter().enumerate() {
            let mut b = Backend {
                addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(t.addr),
                weight: t.weight,
                ext: Default::default(),
            };
            b.ext.insert(TargetIdx(i));
            b.ext.insert(InFlight::default());
            set.insert(b);
        }
        let balancer = match spec.policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin(lb(&set, &spec)),
            LbPolicy::Random => Balancer::Random(lb(&set, &spec)),
            LbPolicy::Hash => Balancer::Hash(lb(&set, &spec)),
            LbPolicy::LeastRequest => Balancer::LeastRequest(lb(&set, &spec)),
        };
        let group_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            spec.key.hash(&mut h);
            h.finish()
        };
        let sole = match spec.targets.as_slice() {
            [only] if spec.health.is_empty() => Some(only.addr),
            _ => None,
        };
        Pool {
            group_key,
            sole,
            health_interval: spec.health.iter().map(|h| h.interval).min(),
            key: spec.key,
            targets: spec.targets,
            tls: spec.tls,
            balancer,
        }
    }

    fn backends(&self) -> &Backends {
        match &self.balancer {
            Balancer::RoundRobin(l) | Balancer::LeastRequest(l) => l.backends(),
            Balancer::Random(l) => l.backends(),
            Balancer::Hash(l) => l.backends(),
        }
    }

    /// Whether `pick` reads its key (the hash policies over more than one backend), so callers
    /// build one only when it counts.
    pub fn uses_key(&self) -> bool {
        self.sole.is_none() && matches!(self.balancer, Balancer::Hash(_))
    }

    /// Picks a healthy backend; `key` feeds the hash policies. `None`: none is healthy.
    pub fn pick(&self, key: &[u8]) -> Option<Picked> {
        if let Some(addr) = self.sole {
            return Some(Picked {
                target: 0,
                addr,
                in_flight: None,
            });
        }
        const MAX_ITER: usize = 256;
        let backend = match &self.balancer {
            Balancer::RoundRobin(l) => l.select(key, MAX_ITER),
            Balancer::Random(l) => l.select(key, MAX_ITER),
            Balancer::Hash(l) => l.select(key, MAX_ITER),
            Balancer::LeastRequest(l) => {
                // Weighted least-request: fewest in flight per unit of weight among the healthy.
                let all = l.backends().get_backend();
                all.iter()
                    .filter(|b| l.backends().ready(b))
                    .min_by_key(|b| {
                        let n = b
                            .ext
                            .get::<InFlight>()
                            .map(|f| f.0.load(Ordering::Relaxed))
                            .unwrap_or(0);
                        (n * 1000) / b.weight.max(1)
                    })
                    .cloned()
            }
        }?;
        let target = backend.ext.get::<TargetIdx>().map(|t| t.0)?;
        let addr = *backend.addr.as_inet()?;
        let in_flight = backend.ext.get::<InFlight>().cloned();
        if let Some(f) = &in_flight {
            f.0.fetch_add(1, Ordering::Relaxed);
        }
        Some(Picked {
            target,
            addr,
            in_flight,
        })
    }

    /// Each backend's address and whether it is in rotation.
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        let b = self.backends();
        b.get_backend()
            .iter()
            .filter_map(|x| Some((*x.addr.as_inet()?, b.ready(x))))
            .collect()
    }

    pub async fn run_health_checks(&self) {
        self.backends().run_health_check(true).await;
    }

    /// The peer to connect to for a picked backend.
    pub fn peer(&self, picked: &Picked) -> Option<HttpPeer> {
        let t = self.targets.get(picked.target)?;
        let sni = if t.tls {
            self.tls
                .server_name
                .clone()
                .unwrap_or_else(|| t.host.clone())
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(picked.addr, t.tls, sni);
        // Connections are pooled per peer hash, which ignores the CA: keep each pool's
        // connections to itself so a route never reuses one verified under another's trust.
        peer.group_key = self.group_key;
        if t.tls {
            peer.options.verify_cert = !self.tls.skip_verify;
            peer.options.verify_hostname = !self.tls.skip_verify;
            peer.options.ca = self.tls.ca.clone();
            peer.client_cert_key = self.tls.client_cert.clone();
        }
        Some(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(port: u16) -> UpstreamTarget {
        UpstreamTarget {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: false,
            authority: format!("127.0.0.1:{port}"),
            host_value: None,
            host: "127.0.0.1".into(),
            path_prefix: String::new(),
            weight: 1,
        }
    }

    #[test]
    fn hash_policy_is_sticky_per_key() {
        let pool = pool_of(&[1001, 1002, 1003], LbPolicy::Hash);
        let first = pool.pick(b"10.0.0.1").unwrap().target;
        for _ in 0..20 {
            assert_eq!(pool.pick(b"10.0.0.1").unwrap().target, first);
        }
        let spread: std::collections::HashSet<usize> = (0..50)
            .map(|i| pool.pick(format!("10.0.0.{i}").as_bytes()).unwrap().target)
            .collect();
        assert!(spread.len() > 1, "different keys spread over backends");
    }

    #[test]
    fn least_request_counts_in_flight() {
        let pool = pool_of(&[1001, 1002], LbPolicy::LeastRequest);
        let busy = pool.pick(b"").unwrap();
        for _ in 0..5 {
            assert_ne!(pool.pick(b"").unwrap().target, busy.target);
        }
        let busy_target = busy.target;
        drop(busy);
        let a = pool.pick(b"").unwrap();
        let b = pool.pick(b"").unwrap();
        assert_ne!(a.target, b.target, "with one in flight each, both are used");
        let _ = busy_target;
    }

    #[test]
    fn done_releases_the_backend_once() {
        let pool = pool_of(&[1001, 1002], LbPolicy::LeastRequest);
        let mut first = pool.pick(b"").unwrap();
        assert_ne!(pool.pick(b"").unwrap().target, first.target, "busy");
        first.done();
        first.done();
        // Released once, not twice (a count below zero would wrap and shun that backend), and
        // dropping it afterwards releases nothing more.
        drop(first);
        let again = pool.pick(b"").unwrap();
        let other = pool.pick(b"").unwrap();
        assert_ne!(again.target, other.target, "both idle again");
        let third = pool.pick(b"").unwrap();
        let fourth = pool.pick(b"").unwrap();
        assert_ne!(
            third.target, fourth.target,
            "one each in flight: still alternating"
        );
    }

    fn checked(
        ports: &[u16],
        policy: LbPolicy,
        health: Vec<super::super::health::HealthSpec>,
    ) -> Pool {
        Pool::new(PoolSpec {
            key: "k".into(),
            targets: ports.iter().map(|p| target(*p)).collect(),
            tls: UpstreamTls::default(),
            policy,
            health,
        })
    }

    fn pool_of(ports: &[u16], policy: LbPolicy) -> Pool {
        checked(ports, policy, Vec::new())
    }

    fn single(policy: LbPolicy, health: Vec<super::super::health::HealthSpec>) -> Pool {
        checked(&[1], policy, health)
    }

    #[test]
    fn one_unchecked_backend_is_picked_without_a_key() {
        let pool = single(LbPolicy::Hash, Vec::new());
        assert!(
            !pool.uses_key(),
            "one backend: the hash key changes nothing"
        );
        assert_eq!(pool.pick(b"").unwrap().addr, target(1).addr);
        let two = pool_of(&[1001, 1002], LbPolicy::Hash);
        assert!(two.uses_key());
    }

    #[tokio::test]
    async fn one_checked_backend_still_leaves_rotation_when_it_fails() {
        use super::super::health::{HealthKind, HealthSpec};
        // Port 1 on loopback refuses connections: the check fails at once.
        let pool = single(
            LbPolicy::RoundRobin,
            vec![HealthSpec {
                kind: HealthKind::Tcp {
                    send: Vec::new(),
                    receive: Vec::new(),
                },
                timeout: Duration::from_millis(200),
                interval: Duration::from_secs(1),
                healthy_threshold: 1,
                unhealthy_threshold: 1,
            }],
        );
        assert!(
            pool.pick(b"").is_some(),
            "healthy until a check says otherwise"
        );
        pool.run_health_checks().await;
        assert!(
            pool.pick(b"").is_none(),
            "the fast path must not skip the health state"
        );
    }
}
