//! What a request leaves behind besides metrics: the access log line and the authorize log line.
//!
//! Both log lines carry Pomerium's field names and honour `access_log_fields` /
//! `authorize_log_fields`: an unselected field is passed as `None`, which `tracing` omits.
//! Secrets never reach them: no header values other than user agent and referer (the latter
//! without its query), no query unless selected, no cookies or tokens in any field.

use crate::config::ops::{FieldSet, ACCESS_FIELDS, AUTHORIZE_FIELDS};
use crate::policy::{Decision, Reason};
use crate::telemetry::lines::{Key, Line};
use crate::telemetry::metrics::Metrics;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// `(bit, name)` of a log field, the bit found at compile time (a name not in the list fails
/// the build).
macro_rules! field {
    ($all:expr, $name:literal) => {{
        const BIT: u32 = FieldSet::bit($all, $name);
        const _: () = assert!(BIT != 0, "not a log field");
        (BIT, $crate::telemetry::lines::key!($name))
    }};
}

/// Whether the access and authorize lines are on, once [`settle`] has fixed it. `tracing::enabled!`
/// asks the subscriber's filter on every call (a match of the target against its directives,
/// twice a request); the binary's filter never changes once installed, so it settles the answer
/// then. Until it does (tests, library use) every call asks `tracing`. Bits: settled, access,
/// authorize.
static SETTLED: AtomicU8 = AtomicU8::new(0);

/// Fixes whether the two lines are on, from the subscriber installed now. For a filter that
/// stays as it is for the life of the process.
pub fn settle() {
    let access = tracing::enabled!(target: "vallum::access", tracing::Level::INFO);
    let authorize = tracing::enabled!(target: "vallum::authorize", tracing::Level::INFO);
    SETTLED.store(
        1 | u8::from(access) << 1 | u8::from(authorize) << 2,
        Ordering::Relaxed,
    );
}

/// The settled answer for `bit`, if [`settle`] has run.
fn settled(bit: u8) -> Option<bool> {
    match SETTLED.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s & bit != 0),
    }
}

pub fn access_on() -> bool {
    settled(2).unwrap_or_else(|| tracing::enabled!(target: "vallum::access", tracing::Level::INFO))
}

pub fn authorize_on() -> bool {
    settled(4)
        .unwrap_or_else(|| tracing::enabled!(target: "vallum::authorize", tracing::Level::INFO))
}

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
    pub method: &'a http::Method,
    pub authority: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub forwarded_for: Option<&'a str>,
    /// Formatted only when the line is written (the log level may drop it).
    pub ip: Option<std::net::IpAddr>,
    pub request_id: &'a str,
    pub duration: std::time::Duration,
    pub size: usize,
    pub status: u16,
    pub details: &'a str,
}

impl Access<'_> {
    pub fn log(&self) {
        if !access_on() {
            return;
        }
        let on = |bit: u32| self.fields.has_bit(bit);
        // A field's key comes from the `field!` that checked its name: never spelt twice.
        let chosen = |(bit, key): (u32, Key)| on(bit).then_some(key);
        let mut l = Line::info("vallum::access", "http-request");
        if let Some(k) = chosen(field!(ACCESS_FIELDS, "upstream-cluster")) {
            l.str(k, self.route);
        }
        if let Some(k) = chosen(field!(ACCESS_FIELDS, "method")) {
            l.method(k, self.method);
        }
        for ((bit, name), value) in [
            (field!(ACCESS_FIELDS, "authority"), Some(self.authority)),
            (field!(ACCESS_FIELDS, "path"), Some(self.path)),
            (
                field!(ACCESS_FIELDS, "query"),
                Some(self.query.unwrap_or("")),
            ),
            (
                field!(ACCESS_FIELDS, "user-agent"),
                Some(self.user_agent.unwrap_or("")),
            ),
            (
                field!(ACCESS_FIELDS, "referer"),
                Some(
                    self.referer
                        .and_then(|r| r.split(['?', '#']).next())
                        .unwrap_or(""),
                ),
            ),
            (
                field!(ACCESS_FIELDS, "forwarded-for"),
                Some(self.forwarded_for.unwrap_or("")),
            ),
            (field!(ACCESS_FIELDS, "ip"), None),
            (field!(ACCESS_FIELDS, "request-id"), Some(self.request_id)),
        ] {
            if !on(bit) {
                continue;
            }
            match value {
                Some(v) => l.str(name, v),
                None => l.ip(name, self.ip),
            }
        }
        if let Some(k) = chosen(field!(ACCESS_FIELDS, "duration")) {
            l.millis(k, self.duration);
        }
        if let Some(k) = chosen(field!(ACCESS_FIELDS, "size")) {
            l.num(k, self.size);
        }
        if let Some(k) = chosen(field!(ACCESS_FIELDS, "response-code")) {
            l.num(k, self.status);
        }
        if let Some(k) = chosen(field!(ACCESS_FIELDS, "response-code-details")) {
            l.str(k, self.details);
        }
        l.emit();
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
    pub method: &'a http::Method,
    pub path: &'a str,
    pub host: &'a str,
    /// Formatted only when the line is written (the log level may drop it).
    pub ip: Option<std::net::IpAddr>,
    pub route_id: &'a str,
    pub who: Option<Who<'a>>,
    /// The JSON-RPC message decided on (MCP routes).
    pub mcp: Option<&'a crate::policy::mcp::McpMessage>,
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
        if !authorize_on() {
            return;
        }
        let on = |bit: u32| self.fields.has_bit(bit);
        // A field's key comes from the `field!` that checked its name: never spelt twice.
        let chosen = |(bit, key): (u32, Key)| on(bit).then_some(key);
        let who = self.who;
        let mut l = Line::info("vallum::authorize", "authorize");
        if let Some(k) = chosen(field!(AUTHORIZE_FIELDS, "request-id")) {
            l.str(k, self.request_id);
        }
        if let Some(k) = chosen(field!(AUTHORIZE_FIELDS, "method")) {
            l.method(k, self.method);
        }
        for ((bit, name), value) in [
            (field!(AUTHORIZE_FIELDS, "path"), self.path),
            (field!(AUTHORIZE_FIELDS, "host"), self.host),
        ] {
            if on(bit) {
                l.str(name, value);
            }
        }
        if let Some(k) = chosen(field!(AUTHORIZE_FIELDS, "ip")) {
            l.ip(k, self.ip);
        }
        for ((bit, name), value) in [
            (
                field!(AUTHORIZE_FIELDS, "session-id"),
                who.map(|s| s.session_id),
            ),
            (field!(AUTHORIZE_FIELDS, "user"), who.map(|s| s.user_id)),
            (field!(AUTHORIZE_FIELDS, "email"), who.and_then(|s| s.email)),
            (field!(AUTHORIZE_FIELDS, "route-id"), Some(self.route_id)),
        ] {
            if on(bit) {
                l.str(name, value.unwrap_or(""));
            }
        }
        if let Some(m) = self.mcp {
            if let Some(k) = chosen(field!(AUTHORIZE_FIELDS, "mcp-method")) {
                l.str(k, &m.method);
            }
            if let Some(k) = chosen(field!(AUTHORIZE_FIELDS, "mcp-tool")) {
                l.str(k, m.tool.as_deref().unwrap_or(""));
            }
            if let Some(k) = chosen(field!(AUTHORIZE_FIELDS, "mcp-tool-parameters")) {
                let args = m
                    .arguments
                    .as_ref()
                    .map(|a| serde_json::Value::Object(a.clone()));
                l.str(k, &args.map(|a| a.to_string()).unwrap_or_default());
            }
        }
        if let Some(k) = chosen(field!(AUTHORIZE_FIELDS, "allow")) {
            l.bool(k, allow);
        }
        if let Some(k) = chosen(field!(AUTHORIZE_FIELDS, "deny")) {
            l.bool(k, !allow);
        }
        if let Some(k) = chosen(field!(AUTHORIZE_FIELDS, "reasons")) {
            l.joined(k, reasons.iter().map(|r| r.as_str()));
        }
        l.emit();
    }
}
