//! The last phase: the request's metrics (each route holds its resolved series) and its access
//! line, built only when its level is on.

use super::RequestCtx;
use crate::telemetry::logs::{self, Access};
use crate::telemetry::metrics::Metrics;
use pingora_core::Error;
use pingora_proxy::Session;

pub fn record(metrics: &Metrics, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0);
    let req = session.req_header();
    let (method, status_class) = (logs::method_class(&req.method), logs::status_class(status));
    // One clock read for both durations.
    let now = std::time::Instant::now();
    let elapsed = ctx.started.map(|s| now - s).unwrap_or_default();
    let upstream = ctx.upstream_started.map(|u| (now - u).as_secs_f64());
    let route = match &ctx.route {
        Some(r) => {
            metrics.route_request(
                &r.metrics,
                &r.id,
                method,
                status_class,
                elapsed.as_secs_f64(),
                upstream,
            );
            &*r.id
        }
        None => {
            metrics.unrouted_request(method, status_class, elapsed.as_secs_f64());
            "-"
        }
    };
    if !logs::access_on() {
        return;
    }
    let Some(snap) = ctx.snap.as_ref() else {
        return;
    };
    let [host, user_agent, referer, forwarded_for] = first_values(
        &req.headers,
        [
            &http::header::HOST,
            &http::header::USER_AGENT,
            &http::header::REFERER,
            &super::forward::X_FORWARDED_FOR,
        ],
    );
    let path = ctx
        .target
        .as_ref()
        .map(|t| t.path.as_str())
        .unwrap_or_else(|| req.uri.path());
    let query = ctx
        .target
        .as_ref()
        .and_then(|t| t.query.as_deref())
        .or_else(|| req.uri.query());
    let details = match e {
        Some(e) => e.etype().as_str(),
        None if ctx.upstream_started.is_some() => "via_upstream",
        None => "local_reply",
    };
    Access {
        fields: snap.settings.ops.access_log,
        route,
        method: &req.method,
        authority: host
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or(""),
        path,
        query,
        user_agent,
        referer,
        forwarded_for,
        ip: ctx.client_ip,
        request_id: &ctx.request_id,
        duration: elapsed,
        size: session.body_bytes_sent(),
        status,
        details,
    }
    .log();
}

/// The first value of each named header, as `get` would find it, in one pass over the request's
/// few headers instead of one hashed lookup per name (about 130 instructions each).
fn first_values<'h, const N: usize>(
    headers: &'h http::HeaderMap,
    names: [&http::HeaderName; N],
) -> [Option<&'h str>; N] {
    let mut found: [Option<&http::HeaderValue>; N] = [None; N];
    for (name, value) in headers {
        if let Some(i) = names.iter().position(|n| *n == name) {
            found[i].get_or_insert(value);
        }
    }
    found.map(|v| v.and_then(|v| v.to_str().ok()))
}

/// Passive health (`outlier_detection`): how the picked backend answered this request. A failure
/// on the client's side (it went away) says nothing about the backend and is not counted.
pub fn passive_health(session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let (Some(route), Some(picked)) = (&ctx.route, &ctx.picked) else {
        return;
    };
    let crate::routes::route::Action::Upstream(pool) = &route.action else {
        return;
    };
    if !pool.watches_outliers() {
        return;
    }
    let status = session.response_written().map(|r| r.status.as_u16());
    let upstream_failed = e.is_some_and(|e| *e.esource() == pingora_core::ErrorSource::Upstream);
    if e.is_some() && !upstream_failed && status.is_none() {
        return;
    }
    pool.record(
        &picked.addr.backend(),
        crate::upstream::outlier::Outcome::of(status, upstream_failed),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HOST, REFERER, USER_AGENT};

    #[test]
    fn first_values_find_what_get_finds() {
        let mut h = http::HeaderMap::new();
        h.append(USER_AGENT, "first".parse().unwrap());
        h.append(USER_AGENT, "second".parse().unwrap());
        h.append("x-other", "x".parse().unwrap());
        h.append(
            REFERER,
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        h.append(HOST, "a.example".parse().unwrap());
        let xff = &crate::proxy::forward::X_FORWARDED_FOR;
        let got = first_values(&h, [&HOST, &USER_AGENT, &REFERER, xff]);
        let want =
            [&HOST, &USER_AGENT, &REFERER, xff].map(|n| h.get(n).and_then(|v| v.to_str().ok()));
        assert_eq!(got, want);
        assert_eq!(got, [Some("a.example"), Some("first"), None, None]);
    }
}
