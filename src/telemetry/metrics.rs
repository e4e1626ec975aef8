//! Every metric Vallum exports, named in one place. One `Metrics` is built at start-up on its own
//! registry and handed to the components that count, so tests can build a private one and read
//! exact values. Labels are bounded: route ids, backends, reasons and classes — never a user, a
//! session id or a raw path.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{Arc, OnceLock};

/// Buckets for request and store latencies: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    /// `route`, `method` (read/write/other), `status` (2xx…5xx).
    pub requests: IntCounterVec,
    /// Downstream request duration by `route`.
    pub request_duration: HistogramVec,
    /// Time spent waiting on the upstream by `route`.
    pub upstream_duration: HistogramVec,
    /// `route`, `decision` (allow/deny/login), `reason`.
    pub authorize: IntCounterVec,
    /// `stage` (started/completed/failed), `reason`.
    pub sign_ins: IntCounterVec,
    /// MCP tool calls by `route`, `tool` and `outcome` (allowed/denied/login).
    pub mcp_calls: IntCounterVec,
    /// Tool names given their own series so far: clients name tools, so the count is capped.
    pub mcp_tool_labels: dashmap::DashSet<String>,
    /// `backend`, `op`.
    pub store_duration: HistogramVec,
    /// `backend`, `op`.
    pub store_errors: IntCounterVec,
    /// `result` (hit/miss/stale).
    pub session_cache: IntCounterVec,
    /// `direction` (sent/received).
    pub revocations: IntCounterVec,
    /// `how` (backchannel_logout/frontchannel_logout/idle): sessions ended other than by the user.
    pub sessions_ended: IntCounterVec,
    /// `result` (accepted/refused): back-channel logout tokens.
    pub logout_tokens: IntCounterVec,
    /// `result` (success/failure).
    pub config_reloads: IntCounterVec,
    pub config_last_reload_success: IntGauge,
    /// Constant 1, labelled with the loaded config's checksum.
    pub config_info: IntGaugeVec,
    /// `route`, `backend`: 1 healthy, 0 not.
    pub upstream_healthy: IntGaugeVec,
    pub open_connections: IntGauge,
    /// Constant 1, labelled with version.
    pub build_info: IntGaugeVec,
    /// `component` (config/idp/store): 1 ready.
    pub ready: IntGaugeVec,
    /// `result` (trusted/untrusted/absent/rejected): client certificates per TLS connection.
    pub client_certificates: IntCounterVec,
    /// `route`: requests refused because no upstream host name of the route resolves.
    pub upstream_unresolved: IntCounterVec,
    /// `route`, `limit`: requests turned away by the route's circuit breaker.
    pub upstream_overflow: IntCounterVec,
    /// `result` (exported/failed/dropped): finished spans (`telemetry::traces::SPANS`).
    pub trace_spans: IntCounterVec,
    /// Access and authorize lines dropped by a log destination that fell behind.
    pub log_lines_dropped: IntCounter,
    /// `host`: when its ACME certificate expires (unix seconds).
    pub autocert_expiry: IntGaugeVec,
    /// ACME orders by `outcome` (issued, failed).
    pub autocert_orders: IntCounterVec,
}

/// Requests refused before reaching the upstream: no address for it, or its circuit breaker.
fn upstream_refusals(r: &Register) -> Result<(IntCounterVec, IntCounterVec), prometheus::Error> {
    Ok((
        r.counter(
            "vallum_upstream_unresolved_total",
            "Requests answered 502 because none of the route's upstream host names resolves, by route",
            &["route"],
        )?,
        r.counter(
            "vallum_upstream_overflow_total",
            "Requests answered 503 at once because the route's circuit_breaker_thresholds were reached, by route and limit",
            &["route", "limit"],
        )?,
    ))
}

/// How sessions end: revocations across the fleet, endings other than sign-out and expiry, and
/// the logout tokens that cause them.
fn lifecycle(
    r: &Register,
) -> Result<(IntCounterVec, IntCounterVec, IntCounterVec), prometheus::Error> {
    Ok((
        r.counter(
            "vallum_session_revocations_total",
            "Session revocations published and received on the fleet channel",
            &["direction"],
        )?,
        r.counter(
            "vallum_sessions_ended_total",
            "Sessions ended by the identity provider (back- and front-channel logout) or for idleness",
            &["how"],
        )?,
        r.counter(
            "vallum_logout_tokens_total",
            "Back-channel logout tokens, accepted or refused",
            &["result"],
        )?,
    ))
}

/// The counters of process-wide writers (the trace exporter, the log writer), which exist once
/// whatever the registry: registered on this one too.
fn process_wide(r: &Register) -> prometheus::Result<(IntCounterVec, IntCounter)> {
    let spans = super::traces::SPANS.clone();
    r.0.register(Box::new(spans.clone()))?;
    let dropped = super::lines::DROPPED.clone();
    r.0.register(Box::new(dropped.clone()))?;
    Ok((spans, dropped))
}

/// Config reloads: their outcomes, the last success, and the loaded checksum.
fn config(r: &Register) -> prometheus::Result<(IntCounterVec, IntGauge, IntGaugeVec)> {
    Ok((
        r.counter(
            "vallum_config_reloads_total",
            "Config reloads, by result",
            &["result"],
        )?,
        r.gauge(
            "vallum_config_last_reload_success_timestamp_seconds",
            "When a config was last loaded successfully (unix seconds)",
        )?,
        r.gauges(
            "vallum_config_info",
            "The loaded config's checksum (value is always 1)",
            &["checksum"],
        )?,
    ))
}

/// Automatic certificates: each host's expiry, and orders by outcome.
fn autocert(r: &Register) -> prometheus::Result<(IntGaugeVec, IntCounterVec)> {
    Ok((
        r.gauges(
            "vallum_autocert_certificate_expiry_timestamp_seconds",
            "When each host's ACME certificate expires (unix seconds)",
            &["host"],
        )?,
        r.counter(
            "vallum_autocert_orders_total",
            "ACME certificate orders, by outcome (issued, failed)",
            &["outcome"],
        )?,
    ))
}

impl Metrics {
    /// All metrics, registered on a fresh registry.
    pub fn new() -> Result<Arc<Self>, prometheus::Error> {
        let r = Register(Registry::new());
        let (revocations, sessions_ended, logout_tokens) = lifecycle(&r)?;
        let (upstream_unresolved, upstream_overflow) = upstream_refusals(&r)?;
        let (trace_spans, log_lines_dropped) = process_wide(&r)?;
        let (autocert_expiry, autocert_orders) = autocert(&r)?;
        let (config_reloads, config_last_reload_success, config_info) = config(&r)?;
        let m = Metrics {
            mcp_tool_labels: dashmap::DashSet::new(),
            requests: r.counter(
                "vallum_http_requests_total",
                "Requests answered, by route, method class and status class",
                &["route", "method", "status"],
            )?,
            request_duration: r.histogram(
                "vallum_http_request_duration_seconds",
                "Time from request to the end of the response, by route",
                &["route"],
            )?,
            upstream_duration: r.histogram(
                "vallum_upstream_duration_seconds",
                "Time from sending upstream to the end of the upstream response, by route",
                &["route"],
            )?,
            authorize: r.counter(
                "vallum_authorize_decisions_total",
                "Authorization decisions, by route, decision and reason",
                &["route", "decision", "reason"],
            )?,
            mcp_calls: r.counter(
                "vallum_mcp_tool_calls_total",
                "MCP tool calls, by route, tool (the first 1000 names seen; later ones as other) and outcome",
                &["route", "tool", "outcome"],
            )?,
            sign_ins: r.counter(
                "vallum_sign_ins_total",
                "Sign-ins started, completed and failed (by reason)",
                &["stage", "reason"],
            )?,
            store_duration: r.histogram(
                "vallum_session_store_duration_seconds",
                "Session store call latency, by backend and operation",
                &["backend", "op"],
            )?,
            store_errors: r.counter(
                "vallum_session_store_errors_total",
                "Session store calls that failed or timed out, by backend and operation",
                &["backend", "op"],
            )?,
            session_cache: r.counter(
                "vallum_session_cache_lookups_total",
                "Local session cache lookups: hit, miss, or stale (served during a store outage)",
                &["result"],
            )?,
            revocations,
            sessions_ended,
            logout_tokens,
            config_reloads,
            config_last_reload_success,
            config_info,
            upstream_healthy: r.gauges(
                "vallum_upstream_healthy",
                "Upstream health by route and backend (1 healthy)",
                &["route", "backend"],
            )?,
            open_connections: r.gauge(
                "vallum_downstream_open_requests",
                "Downstream requests in progress",
            )?,
            build_info: r.gauges(
                "vallum_build_info",
                "Build information (value is always 1)",
                &["version"],
            )?,
            ready: r.gauges(
                "vallum_ready",
                "Readiness by component (1 ready)",
                &["component"],
            )?,
            client_certificates: r.counter(
                "vallum_client_certificates_total",
                "Downstream TLS connections by client certificate verdict (trusted, untrusted, absent; rejected = handshake refused)",
                &["result"],
            )?,
            upstream_unresolved,
            upstream_overflow,
            trace_spans,
            log_lines_dropped,
            autocert_expiry,
            autocert_orders,
            registry: r.0.clone(),
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(Arc::new(m))
    }

    /// The name of every metric Vallum registers (for the manual's drift test).
    pub fn names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let all: [&dyn Collector; 26] = [
            &self.requests,
            &self.mcp_calls,
            &self.sessions_ended,
            &self.logout_tokens,
            &self.request_duration,
            &self.upstream_duration,
            &self.authorize,
            &self.sign_ins,
            &self.store_duration,
            &self.store_errors,
            &self.session_cache,
            &self.revocations,
            &self.config_reloads,
            &self.config_last_reload_success,
            &self.config_info,
            &self.upstream_healthy,
            &self.open_connections,
            &self.build_info,
            &self.ready,
            &self.client_certificates,
            &self.upstream_unresolved,
            &self.upstream_overflow,
            &self.trace_spans,
            &self.log_lines_dropped,
            &self.autocert_expiry,
            &self.autocert_orders,
        ];
        all.iter()
            .flat_map(|c| c.desc())
            .map(|d| d.fq_name.clone())
            .collect()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Observes the time since `start` on a histogram.
pub fn observe_since(h: &Histogram, start: std::time::Instant) {
    h.observe(start.elapsed().as_secs_f64());
}

/// Method classes of `vallum_http_requests_total`, in [`RouteSeries`] index order.
pub const METHOD_CLASSES: [&str; 3] = ["read", "write", "other"];
/// Status classes of `vallum_http_requests_total`, in [`RouteSeries`] index order.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// A route's own series, resolved once instead of per request: `with_label_values` hashes the
/// labels and takes the vector's lock, three times a request, where a resolved handle is one
/// atomic add. Each series is created on first use, so an idle route exports nothing, as before.
#[derive(Default)]
pub struct RouteSeries {
    requests: [[OnceLock<IntCounter>; 6]; 3],
    request_duration: OnceLock<Histogram>,
    upstream_duration: OnceLock<Histogram>,
    allowed: OnceLock<IntCounter>,
}

/// Held by each compiled route; the series behind it live in the registry, so a reload that
/// rebuilds the route finds them again.
#[derive(Default)]
pub struct RouteMetrics(OnceLock<Box<RouteSeries>>);

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteMetrics")
    }
}

impl RouteMetrics {
    fn series(&self) -> &RouteSeries {
        self.0.get_or_init(Box::default)
    }
}

impl Metrics {
    /// Counts a finished request of `route` (`method`/`status` index [`METHOD_CLASSES`] and
    /// [`STATUS_CLASSES`]) and observes its durations.
    pub fn route_request(
        &self,
        handles: &RouteMetrics,
        route: &str,
        method: usize,
        status: usize,
        duration: f64,
        upstream: Option<f64>,
    ) {
        let s = handles.series();
        if let (Some(slot), Some(m), Some(st)) = (
            s.requests.get(method).and_then(|r| r.get(status)),
            METHOD_CLASSES.get(method),
            STATUS_CLASSES.get(status),
        ) {
            slot.get_or_init(|| self.requests.with_label_values(&[route, m, st]))
                .inc();
        }
        s.request_duration
            .get_or_init(|| self.request_duration.with_label_values(&[route]))
            .observe(duration);
        if let Some(u) = upstream {
            s.upstream_duration
                .get_or_init(|| self.upstream_duration.with_label_values(&[route]))
                .observe(u);
        }
    }

    /// Counts a finished request that matched no route (labelled `-`), uncached: such requests
    /// are refusals, not the hot path.
    pub fn unrouted_request(&self, method: usize, status: usize, duration: f64) {
        let m = METHOD_CLASSES.get(method).copied().unwrap_or("other");
        let st = STATUS_CLASSES.get(status).copied().unwrap_or("none");
        self.requests.with_label_values(&["-", m, st]).inc();
        self.request_duration
            .with_label_values(&["-"])
            .observe(duration);
    }

    /// Counts an allowed request of `route` (the common outcome; denials keep their reasons).
    pub fn route_allowed(&self, handles: &RouteMetrics, route: &str) {
        handles
            .series()
            .allowed
            .get_or_init(|| {
                self.authorize
                    .with_label_values(&[route, "allow", "allowed"])
            })
            .inc();
    }
}

/// Makes each series and registers it, so a metric cannot be defined and forgotten.
struct Register(Registry);

impl Register {
    fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<HistogramVec> {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        let h = HistogramVec::new(opts, labels)?;
        self.0.register(Box::new(h.clone()))?;
        Ok(h)
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(g.clone()))?;
        Ok(g)
    }

    fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        let g = IntGauge::new(name, help)?;
        self.0.register(Box::new(g.clone()))?;
        Ok(g)
    }
}
