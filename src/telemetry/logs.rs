//! What a request leaves behind besides metrics: the access log line and the authorize log line.
//!
//! Both log lines carry Pomerium's field names and honour `access_log_fields` /
//! `authorize_log_fields`: an unselected field is passed as `None`, which `tracing` omits.
//! Secrets never reach them: no header values other than user agent and referer (the latter
//! without its query), no query unless selected, no cookies or tokens in any field.

use crate::config::ops::{FieldSet, ACCESS_FIELDS, AUTHORIZE_FIELDS};
use crate::policy::{Decision, Reason};
use crate::telemetry::metrics::Metrics;
use std::sync::Arc;

/// Counts a request as open for as long as its context lives (dropped when it ends, however).
pub struct OpenRequest(Arc<Metrics>);

impl OpenRequest {
    pub fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.open_connections.inc();
        Self(Arc::clone(metrics))
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

/// Index into [`crate::telemetry::metrics::METHOD_CLASSES`]: read, write, other.
pub fn method_class(m: &http::Method) -> usize {
    match *m {
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS => 0,
        http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE => 1,
        _ => 2,
    }
}

/// Index into [`crate::telemetry::metrics::STATUS_CLASSES`]: 1xx…5xx, then none (no response written).
pub fn status_class(s: u16) -> usize {
    match s {
        100..=599 => usize::from(s / 100) - 1,
        _ => 5,
    }
}

/// Everything the access log line may say about one request.
pub struct Access<'a> {
    pub fields: FieldSet,
    pub route: &'a str,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub forwarded_for: Option<&'a str>,
    /// Formatted only when the line is written (the log level may drop it).
    pub ip: Option<std::net::IpAddr>,
    pub request_id: &'a str,
    pub duration_ms: f64,
    pub size: usize,
    pub status: u16,
    pub details: &'a str,
}

impl Access<'_> {
    pub fn log(&self) {
        let on = |name: &str| self.fields.has(ACCESS_FIELDS, name);
        let referer = self
            .referer
            .map(|r| r.split(['?', '#']).next().unwrap_or(""));
        tracing::info!(
            target: "vallum::access",
            {
            "upstream-cluster" = on("upstream-cluster").then_some(self.route),
            "method" = on("method").then_some(self.method),
            "authority" = on("authority").then_some(self.authority),
            "path" = on("path").then_some(self.path),
            "query" = on("query").then_some(self.query.unwrap_or("")),
            "user-agent" = on("user-agent").then_some(self.user_agent.unwrap_or("")),
            "referer" = on("referer").then_some(referer.unwrap_or("")),
            "forwarded-for" = on("forwarded-for").then_some(self.forwarded_for.unwrap_or("")),
            "ip" = on("ip").then(|| self.ip.map(|i| i.to_string()).unwrap_or_default()),
            "request-id" = on("request-id").then_some(self.request_id),
            "duration" = on("duration").then_some(self.duration_ms),
            "size" = on("size").then_some(self.size as u64),
            "response-code" = on("response-code").then_some(self.status),
            "response-code-details" = on("response-code-details").then_some(self.details),
            },
            "http-request"
        );
    }
}

/// The signed-in user a decision was about, as the authorize line names them.
#[derive(Clone, Copy)]
pub struct Who<'a> {
    pub session_id: &'a str,
    pub user_id: &'a str,
    pub email: Option<&'a str>,
}

/// Everything the authorize log line may say about one decision.
pub struct Authorize<'a> {
    pub fields: FieldSet,
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    /// Formatted only when the line is written (the log level may drop it).
    pub ip: Option<std::net::IpAddr>,
    pub route_id: &'a str,
    pub who: Option<Who<'a>>,
    pub decision: &'a Decision,
}

impl Authorize<'_> {
    /// Logs the decision and counts it by route, outcome and first reason (an allow on the
    /// route's resolved series; the line is built only when it will be written).
    pub fn record(&self, metrics: &Metrics, route: &crate::telemetry::metrics::RouteMetrics) {
        let (allow, reasons, outcome) = match self.decision {
            Decision::Allow => {
                metrics.route_allowed(route, self.route_id);
                (true, &[][..], "allow")
            }
            Decision::Deny { reasons } => (false, reasons.as_slice(), "deny"),
            Decision::NeedLogin => (false, &[Reason::UserUnauthenticated][..], "login"),
        };
        if !allow {
            metrics
                .authorize
                .with_label_values(&[
                    self.route_id,
                    outcome,
                    reasons.first().map_or("denied", |r| r.as_str()),
                ])
                .inc();
        }
        if !tracing::enabled!(target: "vallum::authorize", tracing::Level::INFO) {
            return;
        }
        let on = |name: &str| self.fields.has(AUTHORIZE_FIELDS, name);
        let who = self.who;
        tracing::info!(
            target: "vallum::authorize",
            {
            "request-id" = on("request-id").then_some(self.request_id),
            "method" = on("method").then_some(self.method),
            "path" = on("path").then_some(self.path),
            "host" = on("host").then_some(self.host),
            "ip" = on("ip").then(|| self.ip.map(|i| i.to_string()).unwrap_or_default()),
            "session-id" = on("session-id").then_some(who.map(|s| s.session_id).unwrap_or("")),
            "user" = on("user").then_some(who.map(|s| s.user_id).unwrap_or("")),
            "email" = on("email").then_some(who.and_then(|s| s.email).unwrap_or("")),
            "route-id" = on("route-id").then_some(self.route_id),
            "allow" = on("allow").then_some(allow),
            "deny" = on("deny").then_some(!allow),
            "reasons" = on("reasons").then(|| reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")),
            },
            "authorize"
        );
    }
}
