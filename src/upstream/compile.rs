//! `to`, `load_balancing_policy`, `health_checks` and the upstream TLS keys of a route → a pool,
//! reused from the previous snapshot when its definition did not change.

use super::pool::{BackendAddr, UpstreamCodec};
use crate::config::error::Errors;
use crate::config::pem::{self, PemSource};
use crate::config::raw::{RawHealthCheck, RawRoute};
use crate::config::settings::Settings;
use crate::upstream::dns::Resolver;
use crate::upstream::{
    HealthKind, HealthSpec, LbPolicy, Pool, PoolSpec, UpstreamTarget, UpstreamTls,
};
use base64::Engine;
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Inputs shared by every route of one config: the settings, the pools built so far (and the
/// previous snapshot's, to reuse), and what the snapshot will watch and warn about.
pub struct Ctx<'a> {
    pub settings: &'a Settings,
    /// Pools of the snapshot being replaced, reused when their definition is unchanged.
    pub previous_pools: &'a HashMap<String, Arc<Pool>>,
    pub pools: HashMap<String, Arc<Pool>>,
    pub files: Vec<PathBuf>,
    pub warnings: Vec<String>,
    /// Looks up the `to` hosts that are names (when a request needs them, not here).
    pub resolver: Arc<Resolver>,
    /// Some route's policy needs a signed-in user (so the sign-in settings must be complete).
    pub needs_sign_in: bool,
}

pub(crate) fn pool(
    raw: &RawRoute,
    to: &[String],
    base: &str,
    ctx: &mut Ctx<'_>,
    e: &mut Errors,
) -> Option<Arc<Pool>> {
    let p = |k: &str| format!("{base}.{k}");
    if to.is_empty() {
        e.push(p("to"), "needs at least one URL");
        return None;
    }
    let mut targets = Vec::new();
    for (i, spec) in to.iter().enumerate() {
        let path = if to.len() > 1 {
            format!("{}[{i}]", p("to"))
        } else {
            p("to")
        };
        match parse_to(spec) {
            Ok(t) => targets.push(t),
            Err(m) => e.push(path, m),
        }
    }
    route_codec(raw, &mut targets, &p, e);
    let policy = match raw
        .load_balancing_policy
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
        Some("RANDOM") => LbPolicy::Random,
        Some("LEAST_REQUEST") => LbPolicy::LeastRequest,
        Some("RING_HASH") | Some("MAGLEV") => LbPolicy::Hash,
        Some(other) => {
            e.push(p("load_balancing_policy"), format!("unknown policy {other:?}; expected ROUND_ROBIN, RANDOM, LEAST_REQUEST, RING_HASH or MAGLEV"));
            LbPolicy::RoundRobin
        }
    };
    let mut health = Vec::new();
    for (i, hc) in raw.health_checks.iter().enumerate() {
        if let Some(h) = compile_health(hc, &format!("{}[{i}]", p("health_checks")), e) {
            health.push(h);
        }
    }
    let panic_threshold = raw.healthy_panic_threshold.unwrap_or(0);
    if panic_threshold > 100 {
        e.push(p("healthy_panic_threshold"), "a percentage: 0 to 100");
    }
    let tls = compile_upstream_tls(raw, base, &mut ctx.files, e);
    if targets.len() != to.len() {
        return None;
    }
    let tls = tls?;
    // The pool's identity across reloads: everything that shapes it.
    let dns = targets
        .iter()
        .any(|t| t.literal.is_none())
        .then(|| ctx.resolver.settings());
    let key = format!(
        "{to:?}|{:?}|{policy:?}|{:?}|{:?}|{:?}|{:?}|{panic_threshold}|{dns:?}",
        raw.codec_type,
        raw.health_checks,
        raw.outlier_detection,
        (
            raw.tls_skip_verify,
            &raw.tls_upstream_server_name,
            &raw.tls_server_name
        ),
        tls_fingerprint(raw, &ctx.files)
    );
    if let Some(pool) = ctx.pools.get(&key).or_else(|| ctx.previous_pools.get(&key)) {
        let pool = Arc::clone(pool);
        ctx.pools.insert(key, Arc::clone(&pool));
        return Some(pool);
    }
    let pool = Arc::new(Pool::new(PoolSpec {
        key: key.clone(),
        targets,
        tls,
        policy,
        health,
        resolver: Arc::clone(&ctx.resolver),
        outlier: raw
            .outlier_detection
            .as_ref()
            .map(crate::config::breaker::OutlierSpec::compile),
        panic_threshold,
    }));
    ctx.pools.insert(key, Arc::clone(&pool));
    Some(pool)
}

/// The bytes of the TLS material, so a rotated CA or client certificate builds a new pool.
fn tls_fingerprint(raw: &RawRoute, _files: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for v in [
        raw.tls_custom_ca.as_deref(),
        raw.tls_client_cert.as_deref(),
        raw.tls_client_key.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        v.hash(&mut h);
    }
    for f in [
        &raw.tls_custom_ca_file,
        &raw.tls_client_cert_file,
        &raw.tls_client_key_file,
    ]
    .into_iter()
    .flatten()
    {
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

fn parse_to(spec: &str) -> Result<UpstreamTarget, String> {
    let (url_s, weight) = match spec.rsplit_once(',') {
        Some((u, w)) => (
            u.trim(),
            w.trim()
                .parse::<usize>()
                .map_err(|_| format!("invalid weight {w:?} (expected URL,WEIGHT)"))?,
        ),
        None => (spec.trim(), 1),
    };
    if weight == 0 {
        return Err("weight must be at least 1".into());
    }
    let url = Url::parse(url_s).map_err(|err| format!("{url_s:?} is not a URL: {err}"))?;
    if url.scheme() == "unix" {
        return unix_target(&url, weight);
    }
    let (tls, h2c) = match url.scheme() {
        "http" => (false, false),
        "https" => (true, false),
        "h2c" => (false, true),
        s => {
            return Err(format!(
                "scheme {s}:// is not supported by this build (use http://, https://, h2c:// or unix://)"
            ))
        }
    };
    let host = url
        .host_str()
        .ok_or("URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = match (url.port(), h2c) {
        (Some(p), _) => p,
        (None, true) => 80,
        (None, false) => url.port_or_known_default().ok_or("URL has no port")?,
    };
    // A name is looked up when a request needs it (`upstream::dns`), never at load.
    let literal = host
        .parse::<IpAddr>()
        .ok()
        .map(|ip| BackendAddr::Inet(SocketAddr::new(ip, port)));
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or(&host)),
        None => url.host_str().unwrap_or(&host).to_string(),
    };
    Ok(UpstreamTarget {
        literal,
        port,
        tls,
        codec: if h2c {
            UpstreamCodec::Http2
        } else {
            UpstreamCodec::Auto
        },
        host_value: http::HeaderValue::from_str(&authority).ok(),
        authority,
        host,
        path_prefix: url.path().trim_end_matches('/').to_string(),
        weight,
    })
}

/// The route's `codec_type` (Vallum): which HTTP version its upstreams get, overriding what the
/// `to` scheme implies (`auto`: HTTP/2 by ALPN over TLS, HTTP/1.1 in clear; `h2c://` is HTTP/2).
fn route_codec(
    raw: &RawRoute,
    targets: &mut [UpstreamTarget],
    p: &dyn Fn(&str) -> String,
    e: &mut Errors,
) {
    let codec = match raw
        .codec_type
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") => return,
        Some("auto") => UpstreamCodec::Auto,
        Some("http1") => UpstreamCodec::Http1,
        Some("http2") => UpstreamCodec::Http2,
        Some(other) => {
            e.push(
                p("codec_type"),
                format!("{other:?}: expected auto, http1 or http2"),
            );
            return;
        }
    };
    for t in targets.iter_mut() {
        if t.codec == UpstreamCodec::Http2 && !t.tls && codec != UpstreamCodec::Http2 {
            e.push(p("codec_type"), "an h2c:// upstream speaks only HTTP/2");
            return;
        }
        if matches!(t.literal, Some(BackendAddr::Unix(_))) && codec == UpstreamCodec::Http2 {
            e.push(p("codec_type"), "unix:// upstreams speak HTTP/1.1");
            return;
        }
        t.codec = codec;
    }
}

/// `unix:///run/app.sock`: HTTP/1.1 over a Unix socket (Pomerium v0.33). The upstream is told
/// `Host: localhost` unless the route says otherwise, as for any upstream without a name.
fn unix_target(url: &Url, weight: usize) -> Result<UpstreamTarget, String> {
    let path = url.path();
    if url.host_str().is_some_and(|h| !h.is_empty()) || !path.starts_with('/') || path.len() < 2 {
        return Err("unix:// names an absolute socket path, e.g. unix:///run/app.sock".into());
    }
    let addr =
        std::os::unix::net::SocketAddr::from_pathname(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(UpstreamTarget {
        literal: Some(BackendAddr::Unix(addr)),
        port: 0,
        tls: false,
        codec: UpstreamCodec::Http1,
        authority: "localhost".into(),
        host_value: Some(http::HeaderValue::from_static("localhost")),
        host: "localhost".into(),
        path_prefix: String::new(),
        weight,
    })
}

fn compile_health(hc: &RawHealthCheck, base: &str, e: &mut Errors) -> Option<HealthSpec> {
    let p = |k: &str| format!("{base}.{k}");
    let kind = match (
        &hc.http_health_check,
        &hc.tcp_health_check,
        &hc.grpc_health_check,
    ) {
        (Some(h), None, None) => http_kind(h, &p, e),
        (None, Some(t), None) => tcp_kind(t, &p, e),
        (None, None, Some(g)) => HealthKind::Grpc {
            service: g.service_name.clone().unwrap_or_default(),
            authority: g.authority.clone().filter(|a| !a.is_empty()),
        },
        (None, None, None) => {
            e.push(
                base.to_string(),
                "needs http_health_check, tcp_health_check or grpc_health_check",
            );
            return None;
        }
        _ => {
            e.push(
                base.to_string(),
                "only one of http_health_check, tcp_health_check and grpc_health_check per entry",
            );
            return None;
        }
    };
    Some(HealthSpec {
        kind,
        timeout: hc.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(1)),
        interval: hc
            .interval
            .map(|d| d.0)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(5)),
        healthy_threshold: hc.healthy_threshold.unwrap_or(1) as usize,
        unhealthy_threshold: hc.unhealthy_threshold.unwrap_or(1) as usize,
        log_success: hc.always_log_health_check_success,
        log_failures: hc.always_log_health_check_failures,
    })
}

fn http_kind(
    h: &crate::config::raw::RawHttpHealthCheck,
    p: &dyn Fn(&str) -> String,
    e: &mut Errors,
) -> HealthKind {
    let mut expected = Vec::new();
    for (i, r) in h.expected_statuses.iter().enumerate() {
        if r.start < 100 || r.end > 600 || r.start >= r.end {
            e.push(
                format!("{}[{i}]", p("http_health_check.expected_statuses")),
                "needs 100 <= start < end <= 600 (end is exclusive)",
            );
        }
        expected.push((r.start, r.end));
    }
    if expected.is_empty() {
        expected.push((200, 201));
    }
    if let Some(c) = &h.codec_client_type {
        if !c.eq_ignore_ascii_case("http1") {
            e.push(
                p("http_health_check.codec_client_type"),
                "only HTTP1 is supported by this build",
            );
        }
    }
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.parse::<http::Uri>().is_err() {
        e.push(
            p("http_health_check.path"),
            "must be a path starting with /",
        );
    }
    HealthKind::Http {
        host: h.host.clone(),
        path,
        expected,
    }
}

fn tcp_kind(
    t: &crate::config::raw::RawTcpHealthCheck,
    p: &dyn Fn(&str) -> String,
    e: &mut Errors,
) -> HealthKind {
    let send = match &t.send {
        Some(pl) => e
            .check(p("tcp_health_check.send"), payload(pl))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut receive = Vec::new();
    for (i, pl) in t.receive.iter().enumerate() {
        if let Some(b) = e.check(
            format!("{}[{i}]", p("tcp_health_check.receive")),
            payload(pl),
        ) {
            receive.push(b);
        }
    }
    HealthKind::Tcp { send, receive }
}

fn payload(p: &crate::config::raw::RawPayload) -> Result<Vec<u8>, String> {
    match (&p.text, &p.binary) {
        (Some(hex), None) => decode_hex(hex),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("binary: not base64: {e}")),
        _ => Err("needs exactly one of text (hex) or binary (base64)".into()),
    }
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return Err("text: hex payload must have an even number of digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16)
                .map_err(|_| format!("text: {s:?} is not hex (Envoy payloads are hex-encoded)"))
        })
        .collect()
}

/// `tls_client_cert` with `tls_client_key`: the certificate Vallum presents to the upstream.
/// `None` when there is an error (reported); `Some(None)` when none is configured.
fn client_cert(
    cert_src: Option<PemSource>,
    key_src: Option<PemSource>,
    p: &dyn Fn(&str) -> String,
    e: &mut Errors,
) -> Option<Option<Arc<CertKey>>> {
    Some(match (cert_src, key_src) {
        (Some(c), Some(k)) => {
            let loaded = pem::read(&c)
                .and_then(|b| pem::certs(&b))
                .and_then(|chain| {
                    let key = pem::private_key(&pem::read(&k)?)?;
                    rustls::crypto::ring::sign::any_supported_type(&key)
                        .map_err(|err| format!("unsupported private key: {err}"))?;
                    Ok(CertKey::new(
                        chain.iter().map(|c| c.as_ref().to_vec()).collect(),
                        key.secret_der().to_vec(),
                    ))
                });
            match loaded {
                Ok(ck) => Some(Arc::new(ck)),
                Err(m) => {
                    e.push(p("tls_client_cert"), m);
                    return None;
                }
            }
        }
        (None, None) => None,
        _ => {
            e.push(
                p("tls_client_cert"),
                "tls_client_cert and tls_client_key go together",
            );
            return None;
        }
    })
}

fn compile_upstream_tls(
    raw: &RawRoute,
    base: &str,
    files: &mut Vec<PathBuf>,
    e: &mut Errors,
) -> Option<UpstreamTls> {
    let p = |k: &str| format!("{base}.{k}");
    let mut ok = true;
    let mut pick = |inline: Option<&str>,
                    file: &Option<String>,
                    key: &str,
                    files: &mut Vec<PathBuf>,
                    e: &mut Errors|
     -> Option<PemSource> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                e.push(p(key), format!("{key} and {key}_file cannot both be set"));
                ok = false;
                None
            }
            (Some(v), None) => Some(PemSource::Inline(v.to_string())),
            (None, Some(f)) => {
                files.push(PathBuf::from(f));
                Some(PemSource::File(PathBuf::from(f)))
            }
            (None, None) => None,
        }
    };
    let ca_src = pick(
        raw.tls_custom_ca.as_deref(),
        &raw.tls_custom_ca_file,
        "tls_custom_ca",
        files,
        e,
    );
    let cert_src = pick(
        raw.tls_client_cert.as_deref(),
        &raw.tls_client_cert_file,
        "tls_client_cert",
        files,
        e,
    );
    let key_src = pick(
        raw.tls_client_key.as_deref(),
        &raw.tls_client_key_file,
        "tls_client_key",
        files,
        e,
    );
    if !ok {
        return None;
    }
    let ca = match ca_src {
        Some(src) => match pem::read(&src).and_then(|b| pem::certs(&b)) {
            Ok(certs) => {
                let wrapped: Vec<WrappedX509> = certs
                    .into_iter()
                    .map(|c| WrappedX509::new(c.as_ref().to_vec(), parse_x509))
                    .collect();
                Some(Arc::from(wrapped))
            }
            Err(m) => {
                e.push(p("tls_custom_ca"), m);
                return None;
            }
        },
        None => None,
    };
    let client_cert = client_cert(cert_src, key_src, &p, e)?;
    let server_name = raw
        .tls_upstream_server_name
        .clone()
        .or_else(|| raw.tls_server_name.clone());
    Some(UpstreamTls {
        skip_verify: raw.tls_skip_verify,
        server_name,
        ca,
        client_cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_weights() {
        let t = parse_to("http://127.0.0.1:8080/api/,3").unwrap();
        assert_eq!(
            (t.weight, t.path_prefix.as_str(), t.authority.as_str()),
            (3, "/api", "127.0.0.1:8080")
        );
        assert!(parse_to("http://127.0.0.1:1,0").is_err());
        assert!(parse_to("tcp://127.0.0.1:1").is_err());
        let named = parse_to("https://grafana.monitoring.svc.cluster.local").unwrap();
        assert_eq!(
            (named.literal, named.port, named.host.as_str()),
            (None, 443, "grafana.monitoring.svc.cluster.local"),
            "a name is kept as a name, not resolved at load"
        );
        assert_eq!(
            parse_to("http://[::1]:8080").unwrap().literal,
            Some("[::1]:8080".parse().unwrap())
        );
    }
}
