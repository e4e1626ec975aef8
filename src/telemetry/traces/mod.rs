//! OpenTelemetry tracing: a request's span with its children (the policy decision, session-store
//! and IdP calls, the upstream call), W3C trace context in and out, and the exporter.
//!
//! Spans are ordinary `tracing` spans with the target [`TARGET`], turned into OpenTelemetry spans
//! by the `tracing-opentelemetry` layer; the log output never shows them. When tracing is off
//! (the default) no such layer exists, the callsites are disabled once, and a request pays one
//! relaxed atomic load. When it is on, each request's spans cost a few allocations whether or
//! not the trace is sampled (measured in docs/performance.md).

pub mod export;
mod propagate;

use crate::config::otel::{OtelSettings, TrustParent};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use prometheus::{IntCounterVec, Opts};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of every span meant for the trace exporter (and not the log).
pub const TARGET: &str = "vallum::traces";

/// A span for the trace exporter only: `trace_span!("name", field = value, …)`, with an
/// optional `parent: &span` first. Disabled (and nearly free) when tracing is off.
#[macro_export]
macro_rules! trace_span {
    ($($rest:tt)*) => {
        ::tracing::info_span!(target: "vallum::traces", $($rest)*)
    };
}

/// `result`: exported, failed (the collector refused or did not answer), dropped (the queue
/// was full). One series for the process: tracing is set up once, whatever the registry.
#[allow(clippy::expect_used)] // constant options, valid by construction
pub static SPANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "vallum_trace_spans_total",
            "Finished spans by what became of them: exported, failed (collector error or timeout), dropped (export queue full)",
        ),
        &["result"],
    )
    .expect("a valid metric")
});

static ON: AtomicBool = AtomicBool::new(false);
/// `otel_traces_sampler_arg`, as the bits of an f64.
static RATIO: AtomicU64 = AtomicU64::new(0);
static FLUSHER: OnceLock<export::Flusher> = OnceLock::new();
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether tracing was turned on at start.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Whether a call made now would belong to a traced request. Store and IdP calls made outside
/// one (readiness pings, discovery, sweeps) are not traced: they would each be a trace of one
/// span, every few seconds, on every node.
pub fn in_request() -> bool {
    enabled() && !Span::current().is_none()
}

/// Starts the exporter and returns the layer that turns [`TARGET`] spans into OpenTelemetry
/// spans; the caller adds it to the subscriber with a filter for [`TARGET`].
pub fn layer<S>(
    settings: &OtelSettings,
) -> std::io::Result<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let resource = resource(settings);
    let (processor, flusher) = export::start(settings, resource.clone())?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // The ratio is applied per request in `RequestTrace::start`, before any span exists: an
        // unsampled request then costs no span at all. What reaches the SDK is sampled.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("vallum");
    let _ = PROVIDER.set(provider);
    let _ = FLUSHER.set(flusher);
    RATIO.store(settings.sampler_ratio.to_bits(), Ordering::Relaxed);
    ON.store(true, Ordering::Relaxed);
    // Only what the spans say: no source locations, threads, levels or idle time.
    Ok(tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false))
}

/// `service.name` is `vallum` unless `otel_resource_attributes` says otherwise.
fn resource(settings: &OtelSettings) -> Resource {
    let mut attrs = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    attrs.extend(
        settings
            .resource
            .iter()
            .filter(|(k, _)| k != "service.name")
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    let name = settings
        .resource
        .iter()
        .find(|(k, _)| k == "service.name")
        .map_or_else(|| "vallum".to_string(), |(_, v)| v.clone());
    Resource::builder_empty()
        .with_service_name(name)
        .with_attributes(attrs)
        .build()
}

/// Sends the spans still queued before the process exits (shutdown, graceful upgrade); a
/// bounded wait, from a plain thread.
pub fn flush_before_exit() {
    if let Some(f) = FLUSHER.get() {
        f.flush();
    }
}

/// One request's spans: the request itself, and the upstream call while it lasts. An unsampled
/// request has none, only the trace context its upstream receives.
///
/// Boxed, and absent when tracing is off: every request's context carries it, and Pingora
/// moves that context with the request's futures.
#[derive(Default)]
pub struct RequestTrace(Option<Box<Traced>>);

#[derive(Default)]
struct Traced {
    request: Option<Span>,
    upstream: Option<Span>,
    unsampled: Option<propagate::Unsampled>,
}

impl RequestTrace {
    /// The request's span, continuing the caller's trace when `traceparent` comes from a peer
    /// `trust` accepts (`trusted_peer`: the peer is a listed proxy).
    pub fn start(
        req: &pingora_http::RequestHeader,
        trust: TrustParent,
        trusted_peer: bool,
    ) -> Self {
        if !enabled() {
            return Self::default();
        }
        let believed = match trust {
            TrustParent::Always => true,
            TrustParent::Proxies => trusted_peer,
            TrustParent::Never => false,
        };
        let parent = believed.then(|| propagate::extract(&req.headers)).flatten();
        // Parent-based, else the ratio: Pomerium's sampler, decided once per request.
        let sampled = match &parent {
            Some(cx) => propagate::sampled(cx),
            None => rand::random::<f64>() < f64::from_bits(RATIO.load(Ordering::Relaxed)),
        };
        if !sampled {
            return Self(Some(Box::new(Traced {
                unsampled: Some(propagate::Unsampled::new(parent.as_ref())),
                ..Traced::default()
            })));
        }
        let method = req.method.as_str();
        let span = trace_span!(
            parent: None,
            "request",
            otel.name = method,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            url.path = req.uri.path(),
            server.address = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            vallum.route_id = tracing::field::Empty,
            vallum.request_id = tracing::field::Empty,
        );
        if let Some(parent) = parent {
            let _ = span.set_parent(parent);
        }
        Self(Some(Box::new(Traced {
            request: Some(span),
            ..Traced::default()
        })))
    }

    /// The request's span (a disabled one when tracing is off), to instrument a phase with or
    /// to parent a child span.
    pub fn span(&self) -> Span {
        self.recording().cloned().unwrap_or_else(Span::none)
    }

    /// The request's span when this request is traced (sampled, tracing on): the parent its
    /// children name explicitly.
    pub fn recording(&self) -> Option<&Span> {
        self.0.as_ref()?.request.as_ref()
    }

    /// Names the request after its route once it is known: `GET route-3`.
    pub fn routed(&self, method: &str, route_id: &str, host: &str, request_id: &str) {
        if let Some(s) = self.recording() {
            s.record("otel.name", format!("{method} {route_id}"));
            s.record("vallum.route_id", route_id);
            s.record("server.address", host);
            s.record("vallum.request_id", request_id);
        }
    }

    /// The upstream call begins: its span, whose context the upstream receives.
    pub fn upstream(&mut self, peer: &str) {
        let Some(t) = self.0.as_deref_mut() else {
            return;
        };
        if let Some(parent) = &t.request {
            t.upstream = Some(trace_span!(
                parent: parent,
                "upstream",
                otel.kind = "client",
                server.address = peer,
                http.response.status_code = tracing::field::Empty,
            ));
        }
    }

    /// Writes `traceparent` (and drops any `tracestate` the client sent that was not believed)
    /// on the upstream request. Nothing changes when tracing is off.
    pub fn inject(&self, req: &mut pingora_http::RequestHeader) -> pingora_core::Result<()> {
        let Some(t) = self.0.as_deref() else {
            return Ok(());
        };
        if let Some(unsampled) = &t.unsampled {
            req.remove_header("tracestate");
            for (name, value) in unsampled.headers() {
                req.insert_header(name, value)?;
            }
            return Ok(());
        }
        let Some(span) = t.upstream.as_ref().or(t.request.as_ref()) else {
            return Ok(());
        };
        req.remove_header("tracestate");
        for (name, value) in propagate::inject(&span.context()) {
            req.insert_header(name, value)?;
        }
        Ok(())
    }

    /// The request ended with `status` (0: no response was written).
    pub fn finish(&mut self, status: u16) {
        let Some(t) = self.0.as_deref_mut() else {
            return;
        };
        if let Some(up) = t.upstream.take() {
            if status > 0 {
                up.record("http.response.status_code", status);
            }
        }
        if let Some(s) = t.request.take() {
            if status > 0 {
                s.record("http.response.status_code", status);
            }
            if status >= 500 || status == 0 {
                s.record("otel.status_code", "ERROR");
            }
        }
    }
}
