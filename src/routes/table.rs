//! The route table: exact host → wildcard host (longest suffix first) → `*`, then the host's
//! routes in config order, first match wins (Pomerium's file semantics, Envoy's virtual hosts).
//! Lookup is a hash probe per host label, so its cost does not grow with the number of routes.

use super::route::{HostPattern, Route};
use std::collections::HashMap;
use std::sync::Arc;

/// The keys are the config's hosts, never a client's: a client only picks what is looked up, so
/// a fast seeded hash serves (SipHash was a fifth of the lookup).
type Fast = foldhash::fast::RandomState;

#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Vec<Arc<Route>>, Fast>,
    wildcard: HashMap<String, Vec<Arc<Route>>, Fast>,
    /// Config order, for summaries.
    all: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        let mut t = RouteTable {
            all: routes.clone(),
            ..Default::default()
        };
        for r in routes {
            let bucket = match &r.host {
                HostPattern::Exact(h) => t.exact.entry(h.clone()).or_default(),
                HostPattern::Wildcard(s) => t.wildcard.entry(s.clone()).or_default(),
            };
            bucket.push(r);
        }
        t
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Every route, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.all.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// One line per route, in config order: what it matches and what it does.
    pub fn summary(&self) -> Vec<String> {
        self.all.iter().map(|r| r.describe()).collect()
    }

    /// The routes for a host: exact name, else the most specific wildcard. As in Envoy, a host
    /// whose bucket has no matching path does not fall through to a broader wildcard.
    fn bucket(&self, host: &str) -> Option<&[Arc<Route>]> {
        if let Some(b) = self.exact.get(host) {
            return Some(b);
        }
        let mut rest = host;
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(b) = self.wildcard.get(suffix) {
                return Some(b);
            }
            rest = suffix;
        }
        self.wildcard.get("").map(Vec::as_slice)
    }

    /// Whether some route serves `host` (any port, any path): the hosts Vallum answers for. By
    /// name alone, as cookies are scoped: a tunnel route names its service port, yet its host
    /// takes sign-ins on the gateway's.
    pub fn serves_host(&self, host: &str) -> bool {
        self.bucket(host).is_some_and(|b| !b.is_empty())
    }

    /// The routes that may serve `host` (lower-case, without port), any port and path.
    pub fn for_host(&self, host: &str) -> impl Iterator<Item = &Arc<Route>> {
        self.bucket(host).into_iter().flatten()
    }

    /// `host` lower-cased without port; `port` the request's port; `path` normalised.
    pub fn find(&self, host: &str, port: u16, path: &str) -> Option<&Arc<Route>> {
        self.bucket(host)?
            .iter()
            .find(|r| r.port.is_none_or(|p| p == port) && r.path.matches(path))
    }
}
