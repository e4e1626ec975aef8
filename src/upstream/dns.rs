//! Upstream host names, resolved when a request needs them and kept for their TTL.
//!
//! A config is never refused because a `to` host does not resolve yet: a compose stack starts
//! in any order, a Kubernetes service may be created after the gateway. The first request to a
//! route resolves its names (one lookup however many requests wait on it); later requests use
//! the kept answer and, once it is stale, refresh it in the background while the old addresses
//! keep serving. A failed lookup keeps the last good addresses, and where there are none the
//! failure is remembered for `dns_failure_refresh_rate` so requests answer 502 at once instead
//! of each waiting on the resolver.

use crate::config::dns::{DnsSettings, LookupFamily};
use arc_swap::ArcSwap;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Shortest time an answer is kept, whatever its TTL: a zero TTL would otherwise mean one
/// lookup per request.
const MIN_KEEP: Duration = Duration::from_secs(1);
/// Longest time an answer is kept without `dns_refresh_rate`: names move, and a lookup a few
/// minutes is nothing.
const MAX_KEEP: Duration = Duration::from_secs(300);

/// The resolver of one snapshot's pools, built on first use (lookups need the runtime, and
/// `check-config` may not look anything up).
pub struct Resolver {
    settings: DnsSettings,
    inner: OnceLock<TokioResolver>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Resolver {
    pub fn new(settings: DnsSettings) -> Resolver {
        Resolver {
            settings,
            inner: OnceLock::new(),
        }
    }

    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    fn resolver(&self) -> &TokioResolver {
        self.inner.get_or_init(|| build(&self.settings))
    }

    /// Every address of `host` (an IP literal is its own answer) and how long to keep them.
    pub async fn lookup(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok((vec![ip], Duration::MAX));
        }
        let found = self
            .resolver()
            .lookup_ip(host)
            .await
            .map_err(|e| plain(&e))?;
        let ttl = found
            .valid_until()
            .saturating_duration_since(Instant::now());
        let ips: Vec<IpAddr> = found.iter().collect();
        if ips.is_empty() {
            return Err(format!("{host} has no address"));
        }
        Ok((ips, ttl))
    }

    /// How long an answer with this TTL is kept.
    fn keep(&self, ttl: Duration) -> Duration {
        let cap = self.settings.refresh_rate.unwrap_or(MAX_KEEP);
        ttl.min(cap).max(MIN_KEEP.min(cap))
    }
}

/// The resolver's error in words an operator reads at a glance (its own text dumps the query).
fn plain(e: &hickory_resolver::ResolveError) -> String {
    let proto = e.proto();
    if e.is_nx_domain() {
        "no such host (NXDOMAIN)".into()
    } else if e.is_no_records_found() {
        "no address records for this name".into()
    } else if proto.is_some_and(|p| matches!(p.kind(), ProtoErrorKind::Timeout)) {
        "the name servers did not answer in time".into()
    } else if proto.is_some_and(|p| p.is_no_connections()) {
        "no name server is configured or reachable".into()
    } else {
        e.to_string()
    }
}

fn build(s: &DnsSettings) -> TokioResolver {
    let (config, mut opts) = if s.resolvers.is_empty() {
        hickory_resolver::system_conf::read_system_conf().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the system's DNS configuration; only the hosts file resolves names (set dns_resolvers)");
            (ResolverConfig::new(), ResolverOpts::default())
        })
    } else {
        let mut c = ResolverConfig::new();
        let protocol = if s.use_tcp {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        for a in &s.resolvers {
            c.add_name_server(NameServerConfig::new(*a, protocol));
        }
        (c, ResolverOpts::default())
    };
    opts.timeout = s.query_timeout;
    opts.attempts = s.query_tries as usize;
    opts.use_hosts_file = ResolveHosts::Always;
    opts.ip_strategy = match s.family {
        LookupFamily::Auto => LookupIpStrategy::Ipv6thenIpv4,
        LookupFamily::V4Only => LookupIpStrategy::Ipv4Only,
        LookupFamily::V6Only => LookupIpStrategy::Ipv6Only,
        LookupFamily::V4Preferred => LookupIpStrategy::Ipv4thenIpv6,
        LookupFamily::All => LookupIpStrategy::Ipv4AndIpv6,
    };
    // This module keeps answers itself (per pool, with its own refresh and failure rules); a
    // second cache below it would hand a re-lookup after a failed connection the old answer.
    opts.cache_size = 0;
    if s.use_tcp {
        opts.try_tcp_on_error = true;
    }
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

/// What is known about a set of names.
#[derive(Debug, Default)]
pub struct Answer {
    /// Addresses per name, in the order the names were given; empty where a name has never
    /// resolved.
    pub addrs: Vec<Vec<SocketAddr>>,
    /// When the lookup was made, and when to refresh; `None` before the first lookup.
    at: Option<Instant>,
    fresh_until: Option<Instant>,
    /// The last lookup's failures (`host: why`), and when a lookup may be tried again.
    failure: Option<(Vec<String>, Instant)>,
    /// Bumped whenever the set of addresses changes, so a pool knows to rebuild its backends.
    pub generation: u64,
}

impl Answer {
    fn usable(&self) -> bool {
        self.addrs.iter().any(|a| !a.is_empty())
    }

    /// Every address, in name order.
    pub fn all(&self) -> Vec<SocketAddr> {
        self.addrs.iter().flatten().copied().collect()
    }

    /// What the last lookup could not resolve (`host: why`), if anything.
    pub fn failures(&self) -> &[String] {
        self.failure.as_ref().map_or(&[], |(why, _)| why.as_slice())
    }

    fn remembered_failure(&self, now: Instant) -> Option<Unresolved> {
        match &self.failure {
            Some((why, until)) if now < *until => Some(Unresolved(why.join("; "))),
            _ => None,
        }
    }
}

/// Host names (with their ports) resolved lazily and kept.
pub struct Names {
    hosts: Vec<(String, u16)>,
    resolver: Arc<Resolver>,
    answer: ArcSwap<Answer>,
    /// A background refresh is running.
    refreshing: AtomicBool,
    /// A connection to one of the addresses failed: refresh at the next request.
    suspect: AtomicBool,
    /// Serialises foreground lookups, so a burst of first requests costs one lookup.
    first: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names").field("hosts", &self.hosts).finish()
    }
}

/// A name that does not resolve, with the resolver's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved(pub String);

impl Names {
    pub fn new(hosts: Vec<(String, u16)>, resolver: Arc<Resolver>) -> Names {
        Names {
            hosts,
            resolver,
            answer: ArcSwap::from_pointee(Answer::default()),
            refreshing: AtomicBool::new(false),
            suspect: AtomicBool::new(false),
            first: tokio::sync::Mutex::new(()),
        }
    }

    pub fn hosts(&self) -> &[(String, u16)] {
        &self.hosts
    }

    /// The answer as it stands, without looking anything up.
    pub fn peek(&self) -> Arc<Answer> {
        self.answer.load_full()
    }

    /// An answer with at least one address: the kept one (refreshed in the background when
    /// stale), or a fresh lookup when there is none.
    pub async fn current(self: &Arc<Self>) -> Result<Arc<Answer>, Unresolved> {
        let now = Instant::now();
        let a = self.answer.load_full();
        if a.usable() {
            let stale = a.fresh_until.is_some_and(|t| t <= now);
            // After a failed connection, but not more than once a second however many fail.
            let suspect = self.suspect.load(Ordering::Relaxed)
                && a.at.is_some_and(|t| now.duration_since(t) >= MIN_KEEP);
            if stale || suspect {
                self.refresh_in_background();
            }
            return Ok(a);
        }
        if let Some(err) = a.remembered_failure(now) {
            return Err(err);
        }
        let _one_at_a_time = self.first.lock().await;
        let a = self.answer.load_full();
        if a.usable() {
            return Ok(a);
        }
        if let Some(err) = a.remembered_failure(Instant::now()) {
            return Err(err);
        }
        self.refresh().await;
        let a = self.answer.load_full();
        if a.usable() {
            Ok(a)
        } else {
            Err(a
                .remembered_failure(Instant::now())
                .unwrap_or_else(|| Unresolved("no address".into())))
        }
    }

    /// A connection to one of the addresses failed: the next request refreshes the answer (in
    /// the background), in case the name has moved.
    pub fn connect_failed(&self) {
        self.suspect.store(true, Ordering::Relaxed);
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            me.refresh().await;
            me.refreshing.store(false, Ordering::Release);
        });
    }

    /// Looks every name up and stores the answer. A name that fails keeps its last addresses.
    pub async fn refresh(&self) {
        self.suspect.store(false, Ordering::Relaxed);
        let lookups = self.hosts.iter().map(|(h, _)| self.resolver.lookup(h));
        let results = futures_util::future::join_all(lookups).await;
        let old = self.answer.load_full();
        let now = Instant::now();
        let mut addrs = Vec::with_capacity(self.hosts.len());
        let mut keep = Duration::MAX;
        let mut errors = Vec::new();
        for (i, ((host, port), r)) in self.hosts.iter().zip(results).enumerate() {
            match r {
                Ok((ips, ttl)) => {
                    keep = keep.min(self.resolver.keep(ttl));
                    addrs.push(
                        ips.into_iter()
                            .map(|ip| SocketAddr::new(ip, *port))
                            .collect(),
                    );
                }
                Err(e) => {
                    tracing::warn!(host = %host, error = %e, "upstream host name does not resolve");
                    errors.push(format!("{host}: {e}"));
                    addrs.push(old.addrs.get(i).cloned().unwrap_or_default());
                }
            }
        }
        let retry = self.resolver.settings.failure_refresh_rate;
        if !errors.is_empty() {
            keep = keep.min(retry);
        }
        let changed = !same_sets(&old.addrs, &addrs);
        if changed && old.fresh_until.is_some() {
            tracing::info!(hosts = ?self.hosts.iter().map(|h| &h.0).collect::<Vec<_>>(), addresses = ?addrs, "upstream addresses changed");
        }
        self.answer.store(Arc::new(Answer {
            addrs,
            at: Some(now),
            fresh_until: Some(now.checked_add(keep).unwrap_or(now + MAX_KEEP)),
            failure: (!errors.is_empty()).then(|| (errors, now + retry)),
            generation: old.generation + u64::from(changed),
        }));
    }
}

/// Whether two answers hold the same addresses per name, in any order (a resolver rotating
/// its records is not a change).
fn same_sets(a: &[Vec<SocketAddr>], b: &[Vec<SocketAddr>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let mut x = x.clone();
            let mut y = y.clone();
            x.sort();
            y.sort();
            x == y
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(refresh: Option<Duration>) -> Arc<Resolver> {
        Arc::new(Resolver::new(DnsSettings {
            refresh_rate: refresh,
            ..DnsSettings::default()
        }))
    }

    #[test]
    fn ttl_is_kept_within_bounds() {
        let r = resolver(None);
        assert_eq!(r.keep(Duration::ZERO), MIN_KEEP);
        assert_eq!(r.keep(Duration::from_secs(30)), Duration::from_secs(30));
        assert_eq!(r.keep(Duration::from_secs(86400)), MAX_KEEP);
        let capped = resolver(Some(Duration::from_millis(200)));
        assert_eq!(
            capped.keep(Duration::from_secs(30)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn rotation_is_not_a_change() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert!(same_sets(&[vec![a, b]], &[vec![b, a]]));
        assert!(!same_sets(&[vec![a]], &[vec![b]]));
        assert!(!same_sets(&[vec![a]], &[vec![a], vec![b]]));
    }

    #[tokio::test]
    async fn literals_resolve_without_a_resolver_and_failures_are_remembered() {
        let names = Arc::new(Names::new(
            vec![("127.0.0.1".into(), 80), ("::1".into(), 81)],
            resolver(None),
        ));
        let a = names.current().await.unwrap();
        assert_eq!(
            a.all(),
            vec![
                "127.0.0.1:80".parse::<SocketAddr>().unwrap(),
                "[::1]:81".parse().unwrap()
            ]
        );
        assert_eq!(a.generation, 1);

        // A name under the reserved `.invalid` TLD never resolves (RFC 6761).
        let r = Arc::new(Resolver::new(DnsSettings {
            failure_refresh_rate: Duration::from_secs(60),
            query_timeout: Duration::from_millis(300),
            query_tries: 1,
            ..DnsSettings::default()
        }));
        let bad = Arc::new(Names::new(vec![("nothing.invalid".into(), 80)], r));
        let first = bad.current().await.unwrap_err();
        assert!(first.0.contains("nothing.invalid"), "{first:?}");
        let t = Instant::now();
        assert_eq!(bad.current().await.unwrap_err(), first, "remembered");
        assert!(t.elapsed() < Duration::from_millis(50), "no second lookup");
    }
}
