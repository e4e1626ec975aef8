//! Compiled routes for the steps' unit tests, from the same YAML users write.

use crate::proxy::target::Addressed;
use crate::routes::path::Target;
use crate::routes::route::Route;
use crate::snapshot::Snapshot;
use std::sync::Arc;

/// A snapshot of `routes` (YAML list items under `routes:`), plain HTTP.
pub fn snapshot(routes: &str) -> Snapshot {
    let yaml = format!("insecure_server: true\naddress: 127.0.0.1:0\nroutes:\n{routes}");
    Snapshot::from_str(&yaml, &|_| None, None).unwrap_or_else(|e| panic!("{e}"))
}

/// The route that serves `host` (port 80) and `path` in `snap`.
pub fn route(snap: &Snapshot, host: &str, path: &str) -> Arc<Route> {
    route_on(snap, host, 80, path)
}

/// The route that serves `host`, `port` and `path` in `snap`.
pub fn route_on(snap: &Snapshot, host: &str, port: u16, path: &str) -> Arc<Route> {
    Arc::clone(snap.routes.find(host, port, path).expect("a route matches"))
}

/// Where a plain-HTTP request for `host` (port 80), `path` and `query` is going.
pub fn at(host: &str, path: &str, query: Option<&str>) -> Addressed {
    let target = Target {
        path: path.into(),
        query: query.map(String::from),
    };
    Addressed::new(target, host.into(), None, "http")
}
