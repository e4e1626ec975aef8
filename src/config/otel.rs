//! OpenTelemetry tracing (`otel_*`), with Pomerium's keys and meanings, which are the standard
//! `OTEL_*` environment variables in lower case (and, as every key, settable through them).
//! Plain data; the exporter lives in `telemetry::traces`.
//!
//! - `otel_traces_exporter`: `otlp` turns tracing on; `none` (the default) leaves it off.
//! - The endpoint: `otel_exporter_otlp_traces_endpoint` as given, else
//!   `otel_exporter_otlp_endpoint` with `/v1/traces` added for HTTP (the OTel rule), else
//!   `localhost:4318` (HTTP) or `localhost:4317` (gRPC).
//! - The protocol: `grpc` or `http/protobuf`; unset, by the endpoint's port (4317 is gRPC) and
//!   otherwise HTTP, as Pomerium does.
//! - Durations are milliseconds (Pomerium's `OtelDurationFunc`); a Go duration string works too.

use super::duration;
use super::error::Errors;
use super::raw::{OneOrMany, RawSettings};
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// `otel_*` durations: an integer count of milliseconds, or a Go duration (`10s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub Duration);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Count(u64),
            Text(String),
        }
        let bad =
            || serde::de::Error::custom("expected milliseconds (e.g. 5000) or a duration (5s)");
        match Repr::deserialize(d).map_err(|_| bad())? {
            Repr::Count(ms) => Ok(Millis(Duration::from_millis(ms))),
            Repr::Text(t) => match t.trim().parse::<u64>() {
                Ok(ms) => Ok(Millis(Duration::from_millis(ms))),
                Err(_) => duration::parse(&t)
                    .map(Millis)
                    .map_err(serde::de::Error::custom),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Whose `traceparent` (and `tracestate`) starts a request's trace (Vallum's
/// `otel_trust_incoming_traceparent`). Anything else starts a new trace: a client must not pick
/// trace ids or force every one of its requests to be sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustParent {
    /// Peers listed in `trusted_proxies` (the default; with none listed, nobody).
    Proxies,
    Always,
    Never,
}

/// Tracing, when on. Fixed for the process: the exporter starts with it (a reload that changes
/// it is reported as needing a restart), except `trust` which each snapshot carries.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelSettings {
    /// The full URL spans are sent to.
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// The share of new traces sampled; a trusted parent's decision is kept (parent-based).
    pub sampler_ratio: f64,
    pub resource: Vec<(String, String)>,
    pub schedule_delay: Duration,
    pub max_batch: usize,
    /// Spans waiting for export at most; past it new ones are dropped and counted.
    pub max_queue: usize,
    pub value_length_limit: Option<usize>,
    /// The level of the exporter's own log lines.
    pub log_level: tracing::Level,
    pub trust: TrustParent,
}

const MIN_SCHEDULE_DELAY: Duration = Duration::from_millis(100);

/// `None` when tracing is off. Every key is checked either way, so a typo is reported before
/// tracing is turned on.
pub fn compile(raw: &RawSettings, errs: &mut Errors) -> Option<OtelSettings> {
    let on = match raw.otel_traces_exporter.as_deref().map(str::trim) {
        None | Some("" | "none") => false,
        Some("otlp") => true,
        Some(other) => {
            errs.push(
                "otel_traces_exporter",
                format!("{other:?} is not an exporter: use otlp or none"),
            );
            false
        }
    };
    let protocol = protocol(raw, errs);
    let endpoint = endpoint(raw, protocol, errs);
    let headers = pairs(
        raw.otel_exporter_otlp_traces_headers
            .as_ref()
            .or(raw.otel_exporter_otlp_headers.as_ref()),
        "otel_exporter_otlp_headers",
        errs,
    );
    let resource = pairs(
        raw.otel_resource_attributes.as_ref(),
        "otel_resource_attributes",
        errs,
    );
    let sampler_ratio = raw.otel_traces_sampler_arg.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sampler_ratio) {
        errs.push("otel_traces_sampler_arg", "must be between 0 and 1");
    }
    let schedule_delay = raw
        .otel_bsp_schedule_delay
        .map_or(Duration::from_secs(5), |m| m.0);
    if schedule_delay < MIN_SCHEDULE_DELAY {
        errs.push("otel_bsp_schedule_delay", "must be at least 100 (ms)");
    }
    let max_batch = positive(
        raw.otel_bsp_max_export_batch_size,
        512,
        "otel_bsp_max_export_batch_size",
        errs,
    );
    let value_length_limit = match raw.otel_attribute_value_length_limit {
        None | Some(-1) => None,
        Some(n) if n >= 0 => Some(n as usize),
        Some(_) => {
            errs.push(
                "otel_attribute_value_length_limit",
                "must be 0 or more (-1: no limit)",
            );
            None
        }
    };
    let log_level = log_level(raw, errs);
    let trust = trust(raw, errs);
    let timeout = raw
        .otel_exporter_otlp_traces_timeout
        .or(raw.otel_exporter_otlp_timeout)
        .map_or(Duration::from_secs(10), |m| m.0);
    if timeout.is_zero() {
        errs.push("otel_exporter_otlp_timeout", "must be more than 0");
    }
    if !on {
        return None;
    }
    Some(OtelSettings {
        endpoint: endpoint?,
        protocol,
        headers,
        timeout,
        sampler_ratio,
        resource,
        schedule_delay,
        max_batch,
        max_queue: 2048.max(max_batch),
        value_length_limit,
        log_level,
        trust,
    })
}

fn log_level(raw: &RawSettings, errs: &mut Errors) -> tracing::Level {
    match raw.otel_log_level.as_deref().map(str::trim) {
        None | Some("") => tracing::Level::WARN,
        Some(l) => l.parse().unwrap_or_else(|_| {
            errs.push(
                "otel_log_level",
                format!("{l:?} is not a level: trace, debug, info, warn or error"),
            );
            tracing::Level::WARN
        }),
    }
}

fn trust(raw: &RawSettings, errs: &mut Errors) -> TrustParent {
    match raw
        .otel_trust_incoming_traceparent
        .as_deref()
        .map(str::trim)
    {
        None | Some("proxies") => TrustParent::Proxies,
        Some("always") => TrustParent::Always,
        Some("never") => TrustParent::Never,
        Some(other) => {
            errs.push(
                "otel_trust_incoming_traceparent",
                format!("{other:?}: use proxies (the default), always or never"),
            );
            TrustParent::Proxies
        }
    }
}

fn protocol(raw: &RawSettings, errs: &mut Errors) -> Protocol {
    let (key, given) = match (
        &raw.otel_exporter_otlp_traces_protocol,
        &raw.otel_exporter_otlp_protocol,
    ) {
        (Some(p), _) => ("otel_exporter_otlp_traces_protocol", p.trim()),
        (None, Some(p)) => ("otel_exporter_otlp_protocol", p.trim()),
        (None, None) => ("", ""),
    };
    match given {
        "grpc" => Protocol::Grpc,
        "http/protobuf" => Protocol::HttpProtobuf,
        "" => {
            let url = raw
                .otel_exporter_otlp_traces_endpoint
                .as_deref()
                .or(raw.otel_exporter_otlp_endpoint.as_deref());
            let port = url
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| u.port());
            if port == Some(4317) {
                Protocol::Grpc
            } else {
                Protocol::HttpProtobuf
            }
        }
        other => {
            errs.push(key, format!("{other:?}: use grpc or http/protobuf"));
            Protocol::HttpProtobuf
        }
    }
}

fn endpoint(raw: &RawSettings, protocol: Protocol, errs: &mut Errors) -> Option<String> {
    let (key, url, base) = match (
        &raw.otel_exporter_otlp_traces_endpoint,
        &raw.otel_exporter_otlp_endpoint,
    ) {
        (Some(u), _) => ("otel_exporter_otlp_traces_endpoint", u.trim(), false),
        (None, Some(u)) => ("otel_exporter_otlp_endpoint", u.trim(), true),
        (None, None) => {
            return Some(match protocol {
                Protocol::Grpc => "http://localhost:4317".into(),
                Protocol::HttpProtobuf => "http://localhost:4318/v1/traces".into(),
            })
        }
    };
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if base && protocol == Protocol::HttpProtobuf {
                Some(format!("{}/v1/traces", url.trim_end_matches('/')))
            } else {
                Some(url.to_string())
            }
        }
        _ => {
            errs.push(key, format!("{url:?} is not an http:// or https:// URL"));
            None
        }
    }
}

/// `key=value` pairs: a YAML list, or one comma-separated string (the environment's form).
fn pairs(raw: Option<&OneOrMany>, key: &str, errs: &mut Errors) -> Vec<(String, String)> {
    let Some(raw) = raw else { return Vec::new() };
    let items: Vec<&str> = match raw.0.as_slice() {
        [one] => one.split(',').collect(),
        many => many.iter().map(String::as_str).collect(),
    };
    let mut out = Vec::new();
    for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                let v = percent_encoding::percent_decode_str(v.trim()).decode_utf8_lossy();
                out.push((k.trim().to_string(), v.into_owned()));
            }
            _ => errs.push(key, format!("{item:?} is not key=value")),
        }
    }
    out
}

fn positive(v: Option<i64>, default: usize, key: &str, errs: &mut Errors) -> usize {
    match v {
        None => default,
        Some(n) if n >= 1 => n as usize,
        Some(_) => {
            errs.push(key, "must be at least 1");
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_yaml(y: &str) -> (Option<OtelSettings>, Vec<String>) {
        let raw: RawSettings = serde_yaml_ng::from_str(y).unwrap();
        let mut errs = Errors::default();
        let s = compile(&raw, &mut errs);
        (s, errs.paths().map(String::from).collect())
    }

    #[test]
    fn off_unless_the_exporter_is_otlp() {
        assert_eq!(compile_yaml("{}").0, None);
        assert_eq!(compile_yaml("otel_traces_exporter: none").0, None);
        let (s, errs) = compile_yaml("otel_traces_exporter: jaeger");
        assert!(s.is_none());
        assert!(errs[0].contains("otel_traces_exporter"), "{errs:?}");
    }

    #[test]
    fn endpoint_and_protocol_follow_the_otel_rules() {
        let s = compile_yaml("otel_traces_exporter: otlp").0.unwrap();
        assert_eq!(s.endpoint, "http://localhost:4318/v1/traces");
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        let s =
            compile_yaml("otel_traces_exporter: otlp\notel_exporter_otlp_endpoint: http://c:4317")
                .0
                .unwrap();
        assert_eq!(
            (s.endpoint.as_str(), s.protocol),
            ("http://c:4317", Protocol::Grpc)
        );
        let s = compile_yaml(
            "otel_traces_exporter: otlp\notel_exporter_otlp_endpoint: https://c/otlp/",
        )
        .0
        .unwrap();
        assert_eq!(s.endpoint, "https://c/otlp/v1/traces");
        let s = compile_yaml(
            "otel_traces_exporter: otlp\notel_exporter_otlp_traces_endpoint: http://c:9/x\notel_exporter_otlp_protocol: grpc",
        )
        .0
        .unwrap();
        assert_eq!(
            (s.endpoint.as_str(), s.protocol),
            ("http://c:9/x", Protocol::Grpc)
        );
    }

    #[test]
    fn pairs_durations_and_limits() {
        let s = compile_yaml(
            "otel_traces_exporter: otlp\notel_exporter_otlp_headers: 'Authorization=Bearer a%20b,X=1'\n\
             otel_resource_attributes: [deployment.environment=prod]\notel_exporter_otlp_timeout: 2500\n\
             otel_bsp_schedule_delay: 1s\notel_traces_sampler_arg: 0.01",
        )
        .0
        .unwrap();
        assert_eq!(
            s.headers,
            vec![
                ("Authorization".into(), "Bearer a b".into()),
                ("X".into(), "1".into())
            ]
        );
        assert_eq!(
            s.resource,
            vec![("deployment.environment".into(), "prod".into())]
        );
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(s.schedule_delay, Duration::from_secs(1));
        assert_eq!(s.sampler_ratio, 0.01);
        for (bad, key) in [
            ("otel_traces_sampler_arg: 2", "otel_traces_sampler_arg"),
            ("otel_bsp_schedule_delay: 5", "otel_bsp_schedule_delay"),
            (
                "otel_exporter_otlp_headers: [novalue]",
                "otel_exporter_otlp_headers",
            ),
            (
                "otel_exporter_otlp_protocol: http/json",
                "otel_exporter_otlp_protocol",
            ),
            (
                "otel_exporter_otlp_endpoint: 'c:4317'",
                "otel_exporter_otlp_endpoint",
            ),
            (
                "otel_trust_incoming_traceparent: sometimes",
                "otel_trust_incoming_traceparent",
            ),
        ] {
            let (_, errs) = compile_yaml(&format!("otel_traces_exporter: otlp\n{bad}"));
            assert!(errs.iter().any(|e| e.contains(key)), "{bad}: {errs:?}");
        }
    }
}
