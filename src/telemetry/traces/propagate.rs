//! W3C trace context (`traceparent`, `tracestate`) read from a request and written on the
//! upstream's.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The caller's context, when its `traceparent` is well-formed.
pub fn extract(headers: &http::HeaderMap) -> Option<opentelemetry::Context> {
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Whether the caller sampled its trace.
pub fn sampled(cx: &opentelemetry::Context) -> bool {
    cx.span().span_context().is_sampled()
}

/// What an unsampled request tells its upstream: the caller's trace (or a new one) and a new
/// span id, not sampled, so the upstream's logs still correlate and it does not record either.
pub struct Unsampled {
    traceparent: String,
    tracestate: Option<String>,
}

impl Unsampled {
    pub fn new(parent: Option<&opentelemetry::Context>) -> Self {
        let parent = parent.map(|cx| cx.span().span_context().clone());
        let trace = parent.as_ref().map_or_else(
            || opentelemetry::trace::TraceId::from(rand::random::<u128>().max(1)),
            |p| p.trace_id(),
        );
        let span = opentelemetry::trace::SpanId::from(rand::random::<u64>().max(1));
        Unsampled {
            traceparent: format!("00-{trace}-{span}-00"),
            tracestate: parent
                .map(|p| p.trace_state().header())
                .filter(|s| !s.is_empty()),
        }
    }

    pub fn headers(&self) -> impl Iterator<Item = (http::HeaderName, http::HeaderValue)> + '_ {
        let traceparent = http::HeaderValue::from_str(&self.traceparent)
            .ok()
            .map(|v| (http::HeaderName::from_static("traceparent"), v));
        let tracestate = self
            .tracestate
            .as_deref()
            .and_then(|s| http::HeaderValue::from_str(s).ok())
            .map(|v| (http::HeaderName::from_static("tracestate"), v));
        traceparent.into_iter().chain(tracestate)
    }
}

/// The headers that carry `cx` to the next hop.
pub fn inject(cx: &opentelemetry::Context) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out = http::HeaderMap::new();
    TraceContextPropagator::new()
        .inject_context(cx, &mut opentelemetry_http::HeaderInjector(&mut out));
    // An empty `tracestate` says nothing and is not sent.
    out.into_iter()
        .filter_map(|(name, value)| Some((name?, value)))
        .filter(|(_, value)| !value.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_read_and_written_back() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let cx = extract(&h).unwrap();
        let out = inject(&cx);
        assert_eq!(out[0].0, "traceparent");
        assert_eq!(
            out[0].1,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        // Not sampled by the caller: the same trace, a new span, still not sampled.
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
        );
        h.insert("tracestate", http::HeaderValue::from_static("v=1"));
        let cx = extract(&h).unwrap();
        assert!(!sampled(&cx));
        let u = Unsampled::new(Some(&cx));
        let out: Vec<_> = u.headers().collect();
        let tp = out[0].1.to_str().unwrap();
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-00"),
            "{tp}"
        );
        assert!(!tp.contains("00f067aa0ba902b7"), "a new span id");
        assert_eq!(out[1].1, "v=1");
        let fresh: Vec<_> = Unsampled::new(None).headers().collect();
        assert_eq!(fresh.len(), 1, "no tracestate of its own");
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            h.insert("traceparent", http::HeaderValue::from_static(bad));
            assert!(extract(&h).is_none(), "{bad}");
        }
    }
}
