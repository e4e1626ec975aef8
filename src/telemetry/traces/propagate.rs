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
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            h.insert("traceparent", http::HeaderValue::from_static(bad));
            assert!(extract(&h).is_none(), "{bad}");
        }
    }
}
