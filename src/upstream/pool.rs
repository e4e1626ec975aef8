//! A pool is built once per distinct upstream definition and reused across reloads when that
//! definition is unchanged, so health state survives a config edit that did not touch it.
//!
//! A pool whose `to` names hosts keeps its backends in step with their DNS answer
//! ([`super::dns::Names`]): the balancer's discovery reads the kept answer, and a request that
//! finds a newer answer than the balancer was built from rebuilds it first (Pingora keeps the
//! health of backends that stay).

use super::dns::{Names, Resolver, Unresolved};
use super::health::{build_check, HealthSpec};
use async_trait::async_trait;
use futures_util::FutureExt;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{CertKey, WrappedX509};
use pingora_load_balancing::discovery::{ServiceDiscovery, Static};
use pingora_load_balancing::selection::{Consistent, Random, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::{BTreeSet, HashMap};

/// The HTTP version spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamCodec {
    /// HTTP/1.1 in clear; over TLS, HTTP/2 when the upstream offers it by ALPN.
    #[default]
    Auto,
    Http1,
    /// HTTP/2 only: by ALPN over TLS, with prior knowledge (h2c) in clear.
    Http2,
}

/// A backend's address: IP and port, or a Unix socket path (`unix://`).
pub type BackendAddr = pingora_core::protocols::l4::socket::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// One `to` URL.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// The address when the URL gives an IP or a socket path; `None`: `host` is a name,
    /// resolved lazily.
    pub literal: Option<BackendAddr>,
    pub port: u16,
    pub tls: bool,
    /// Which HTTP version the upstream gets (`h2c://`, the route's `codec_type`).
    pub codec: UpstreamCodec,
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

impl UpstreamTls {
    /// Makes `peer` (a TLS peer to `host`) present and check what the route asks: SNI
    /// (`tls_upstream_server_name`, else the host), verification, trusted CAs, a client
    /// certificate. One place for the proxy's peers and the health checks' alike.
    pub fn secure(&self, peer: &mut HttpPeer, host: &str) {
        peer.sni = self.server_name.clone().unwrap_or_else(|| host.to_string());
        peer.options.verify_cert = !self.skip_verify;
        peer.options.verify_hostname = !self.skip_verify;
        peer.options.ca = self.ca.clone();
        peer.client_cert_key = self.client_cert.clone();
    }
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
    /// Looks up the targets that name hosts.
    pub resolver: Arc<Resolver>,
    /// `outlier_detection`: backends that keep failing leave rotation for a while.
    pub outlier: Option<crate::config::breaker::OutlierSpec>,
    /// `healthy_panic_threshold` (percent; 0: off): below this share of backends in rotation,
    /// every backend is picked from, health aside.
    pub panic_threshold: u32,
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
    pub addr: PickedAddr,
    in_flight: Option<InFlight>,
}

/// Where a picked backend is: an address and port inline; a Unix socket (rare, and four times
/// the size) boxed. Every request's context holds one, and the context is moved with the
/// request's future, so its size is paid on every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PickedAddr {
    Inet(std::net::SocketAddr),
    Unix(Box<BackendAddr>),
}

impl PickedAddr {
    fn of(addr: &BackendAddr) -> Self {
        match addr {
            BackendAddr::Inet(a) => PickedAddr::Inet(*a),
            other => PickedAddr::Unix(Box::new(other.clone())),
        }
    }

    pub fn backend(&self) -> BackendAddr {
        match self {
            PickedAddr::Inet(a) => BackendAddr::Inet(*a),
            PickedAddr::Unix(b) => (**b).clone(),
        }
    }
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
    sole: Option<BackendAddr>,
    /// The targets' host names, when any target names one.
    names: Option<Arc<Names>>,
    /// Generation of the DNS answer the balancer's backends were built from.
    applied: Arc<AtomicU64>,
    /// One balancer rebuild at a time (Pingora's update must not overlap itself).
    rebuilding: tokio::sync::Mutex<()>,
    outlier: Option<super::outlier::Outlier>,
    panic_threshold: u32,
}

/// Backends from the kept DNS answer: one per address, with its target's weight.
struct FromNames {
    names: Arc<Names>,
    weights: Vec<usize>,
    applied: Arc<AtomicU64>,
}

#[async_trait]
impl ServiceDiscovery for FromNames {
    async fn discover(&self) -> pingora_core::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let answer = self.names.peek();
        self.applied.store(answer.generation, Ordering::Release);
        let mut set = BTreeSet::new();
        for (i, addrs) in answer.addrs.iter().enumerate() {
            for a in addrs {
                set.insert(backend(
                    BackendAddr::Inet(*a),
                    self.weights.get(i).copied().unwrap_or(1),
                    i,
                ));
            }
        }
        Ok((set, HashMap::new()))
    }
}

fn backend(addr: BackendAddr, weight: usize, target: usize) -> Backend {
    let mut b = Backend {
        addr,
        weight,
        ext: Default::default(),
    };
    b.ext.insert(TargetIdx(target));
    b.ext.insert(InFlight::default());
    b
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("key", &self.key)
            .field("targets", &self.targets)
            .finish()
    }
}

type Discovery = Box<dyn ServiceDiscovery + Send + Sync>;

fn lb<S>(discovery: Discovery, spec: &PoolSpec) -> LoadBalancer<S>
where
    S: pingora_load_balancing::selection::BackendSelection + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
{
    let mut backends = Backends::new(discovery);
    if let Some(check) = build_check(spec) {
        backends.set_health_check(check);
    }
    let lb = LoadBalancer::from_backends(backends);
    // Both discoveries read what they hold without awaiting anything.
    let _ = lb.update().now_or_never();
    lb
}

impl Pool {
    pub fn new(spec: PoolSpec) -> Pool {
        let applied = Arc::new(AtomicU64::new(0));
        let literals: Option<Vec<BackendAddr>> =
            spec.targets.iter().map(|t| t.literal.clone()).collect();
        let names = match &literals {
            Some(_) => None,
            None => Some(Arc::new(Names::new(
                spec.targets
                    .iter()
                    .map(|t| (t.host.clone(), t.port))
                    .collect(),
                Arc::clone(&spec.resolver),
            ))),
        };
        let discovery = || -> Discovery {
            match (&literals, &names) {
                (Some(addrs), _) => Static::new(
                    addrs
                        .iter()
                        .zip(&spec.targets)
                        .enumerate()
                        .map(|(i, (a, t))| backend(a.clone(), t.weight, i))
                        .collect(),
                ),
                (None, Some(n)) => Box::new(FromNames {
                    names: Arc::clone(n),
                    weights: spec.targets.iter().map(|t| t.weight).collect(),
                    applied: Arc::clone(&applied),
                }),
                (None, None) => Static::new(BTreeSet::new()),
            }
        };
        let balancer = match spec.policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin(lb(discovery(), &spec)),
            LbPolicy::Random => Balancer::Random(lb(discovery(), &spec)),
            LbPolicy::Hash => Balancer::Hash(lb(discovery(), &spec)),
            LbPolicy::LeastRequest => Balancer::LeastRequest(lb(discovery(), &spec)),
        };
        let group_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            spec.key.hash(&mut h);
            h.finish()
        };
        let sole = match literals.as_deref() {
            Some([only]) if spec.health.is_empty() => Some(only.clone()),
            _ => None,
        };
        Pool {
            group_key,
            sole,
            names,
            applied,
            rebuilding: tokio::sync::Mutex::new(()),
            outlier: spec.outlier.map(super::outlier::Outlier::new),
            panic_threshold: spec.panic_threshold,
            health_interval: spec.health.iter().map(|h| h.interval).min(),
            key: spec.key,
            targets: spec.targets,
            tls: spec.tls,
            balancer,
        }
    }

    /// The targets' host names, when any target names one.
    pub fn names(&self) -> Option<&Arc<Names>> {
        self.names.as_ref()
    }

    /// Makes sure the balancer holds addresses for the targets' host names: resolves them when
    /// nothing is known yet, and rebuilds the backends when the kept answer has changed.
    /// A no-op (one branch) for pools of IP addresses.
    pub async fn prepare(&self) -> Result<(), Unresolved> {
        let Some(names) = &self.names else {
            return Ok(());
        };
        let answer = names.current().await?;
        if answer.generation != self.applied.load(Ordering::Acquire) {
            let _one = self.rebuilding.lock().await;
            if names.peek().generation != self.applied.load(Ordering::Acquire) {
                let updated = match &self.balancer {
                    Balancer::RoundRobin(l) | Balancer::LeastRequest(l) => l.update().await,
                    Balancer::Random(l) => l.update().await,
                    Balancer::Hash(l) => l.update().await,
                };
                if let Err(e) = updated {
                    tracing::warn!(pool = %self.key, error = %e, "cannot rebuild the upstream backends");
                }
            }
        }
        Ok(())
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
        self.readmit();
        if let Some(addr) = &self.sole {
            return Some(Picked {
                target: 0,
                addr: PickedAddr::of(addr),
                in_flight: None,
            });
        }
        const MAX_ITER: usize = 256;
        // Panic mode (Envoy's): too few backends in rotation to carry the load, so all share it.
        let panic = self.panic_threshold > 0 && self.in_panic();
        let accept = |_: &Backend, ready: bool| ready || panic;
        let backend = match &self.balancer {
            Balancer::RoundRobin(l) => l.select_with(key, MAX_ITER, accept),
            Balancer::Random(l) => l.select_with(key, MAX_ITER, accept),
            Balancer::Hash(l) => l.select_with(key, MAX_ITER, accept),
            Balancer::LeastRequest(l) => {
                // Weighted least-request: fewest in flight per unit of weight among the healthy.
                let all = l.backends().get_backend();
                all.iter()
                    .filter(|b| panic || l.backends().ready(b))
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
        let addr = PickedAddr::of(&backend.addr);
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

    /// Whether the share of backends in rotation is below `healthy_panic_threshold`.
    fn in_panic(&self) -> bool {
        let backends = self.backends();
        let all = backends.get_backend();
        let ready = all.iter().filter(|b| backends.ready(b)).count();
        (ready as u64) * 100 < u64::from(self.panic_threshold) * all.len() as u64
    }

    /// Whether `outlier_detection` is on (callers skip working out an outcome otherwise).
    pub fn watches_outliers(&self) -> bool {
        self.outlier.is_some()
    }

    /// Passive health: how an answer from `addr` went (`outlier_detection`); a backend that
    /// trips the detector leaves rotation. A no-op for pools without it.
    pub fn record(&self, addr: &BackendAddr, outcome: super::outlier::Outcome) {
        let Some(outlier) = &self.outlier else {
            return;
        };
        let backends = self.backends().get_backend().len();
        if let Some(time) = outlier.record(addr, outcome, backends) {
            self.set_enabled(addr, false);
            tracing::warn!(pool = %self.key, backend = %addr, ejected_for = ?time, "upstream backend ejected after consecutive failures");
        }
    }

    /// Puts back the backends whose ejection has run out.
    fn readmit(&self) {
        if let Some(outlier) = &self.outlier {
            for addr in outlier.returning() {
                self.set_enabled(&addr, true);
                tracing::info!(pool = %self.key, backend = %addr, "upstream backend back in rotation");
            }
        }
    }

    fn set_enabled(&self, addr: &BackendAddr, enabled: bool) {
        let backends = self.backends();
        for b in backends.get_backend().iter() {
            if &b.addr == addr {
                backends.set_enable(b, enabled);
            }
        }
    }

    /// Each backend's address and whether it is in rotation.
    pub fn health(&self) -> Vec<(BackendAddr, bool)> {
        let b = self.backends();
        b.get_backend()
            .iter()
            .map(|x| (x.addr.clone(), b.ready(x)))
            .collect()
    }

    pub async fn run_health_checks(&self) {
        // Names are resolved for the checks too, so a pool nobody has used yet is checked.
        let _ = self.prepare().await;
        self.backends().run_health_check(true).await;
    }

    /// Concurrent streams on one HTTP/2 connection to an upstream before another is opened.
    const H2_STREAMS: usize = 100;

    /// The peer to connect to for a picked backend.
    pub fn peer(&self, picked: &Picked) -> Option<HttpPeer> {
        let t = self.targets.get(picked.target)?;
        let mut peer = match &picked.addr {
            PickedAddr::Inet(a) => HttpPeer::new(*a, t.tls, String::new()),
            PickedAddr::Unix(unix) => {
                let mut p = HttpPeer::new(("0.0.0.0", 0), t.tls, String::new());
                p._address = (**unix).clone();
                p
            }
        };
        if t.tls {
            self.tls.secure(&mut peer, &t.host);
        }
        // HTTP/2 where the upstream speaks it: always on h2c:// (and `codec_type: http2`), by
        // ALPN on https:// (Pomerium's `auto`); multiplexed, up to 100 streams a connection.
        peer.options.alpn = match (t.codec, t.tls) {
            (UpstreamCodec::Http2, _) => ALPN::H2,
            (UpstreamCodec::Auto, true) => ALPN::H2H1,
            _ => ALPN::H1,
        };
        peer.options.max_h2_streams = Self::H2_STREAMS;
        // Connections are pooled per peer hash, which ignores the CA: keep each pool's
        // connections to itself so a route never reuses one verified under another's trust.
        peer.group_key = self.group_key;
        Some(peer)
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
