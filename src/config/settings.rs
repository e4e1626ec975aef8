//! Global settings, validated and compiled: listeners, certificates, timeouts, header sets and
//! the path/header hygiene switches. Pomerium's defaults apply where a key is absent.

use super::error::Errors;
use super::pem::{self, PemSource};
use super::raw::{RawSettings, Text};
use crate::tls::CertStore;
use http::{HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What to do with `%2F` / `%5C` in a path (Pomerium's `path_with_escaped_slashes_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    KeepUnchanged,
    RejectRequest,
    UnescapeAndRedirect,
    UnescapeAndForward,
}

/// What to do with header names containing `_` (Pomerium's `headers_with_underscores_action`).
/// Underscored names are rejected by default because some upstreams fold `_` into `-`, letting a
/// client smuggle `X_Pomerium_Jwt_Assertion` past header stripping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underscores {
    Allow,
    RejectRequest,
    DropHeader,
}

/// `codec_type`: which HTTP versions the main listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1 and HTTP/2: by ALPN over TLS, by the h2c preface on a plaintext listener.
    Auto,
    Http1,
    /// HTTP/2 only over TLS (ALPN `h2`); on a plaintext listener, h2c (HTTP/1.1 is still read).
    Http2,
}

fn codec(raw: &RawSettings, errs: &mut Errors) -> Codec {
    match raw
        .codec_type
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") | Some("auto") => Codec::Auto,
        Some("http1") => Codec::Http1,
        Some("http2") => Codec::Http2,
        Some("http3") => {
            errs.push("codec_type", "http3 (QUIC) is not supported by this build");
            Codec::Auto
        }
        Some(other) => {
            errs.push(
                "codec_type",
                format!("{other:?}: expected auto, http1 or http2"),
            );
            Codec::Auto
        }
    }
}

#[derive(Debug)]
pub struct Settings {
    pub address: SocketAddr,
    /// `codec_type`; read when the listener starts.
    pub codec: Codec,
    pub insecure_server: bool,
    pub http_redirect_addr: Option<SocketAddr>,
    pub certs: CertStore,
    /// TLS is on and no certificate is configured: the snapshot makes a self-signed one for
    /// the route hosts (`tls::fallback`).
    pub fallback_certificate: bool,
    /// `autocert`: certificates ordered from an ACME CA for the hosts `certs` does not cover.
    pub autocert: Option<super::autocert::Autocert>,
    /// Headers added to every response (Pomerium's defaults unless `set_response_headers` is set).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout_read: Duration,
    pub timeout_write: Option<Duration>,
    pub timeout_idle: Duration,
    pub default_upstream_timeout: Duration,
    /// `circuit_breaker_thresholds` for routes without their own.
    pub circuit_limits: Option<super::breaker::CircuitLimits>,
    pub log_level: String,
    /// The access log's and the proxy engine's (Pingora's) level when set: Pomerium's
    /// `proxy_log_level` sets Envoy's, whose access lines these are. Unset: `log_level` for the
    /// access lines, `warn` for the engine.
    pub proxy_log_level: Option<String>,
    pub escaped_slashes: EscapedSlashes,
    pub underscores: Underscores,
    pub normalize_path: bool,
    pub merge_slashes: bool,
    pub skip_xff_append: bool,
    pub allow_upgrades: Vec<String>,
    /// Files this snapshot read, watched for changes.
    pub files: Vec<PathBuf>,
    /// Sign-in; `None` when no authenticate service is configured (only public routes then).
    pub auth: Option<super::auth::AuthSettings>,
    pub ops: super::ops::OpsSettings,
    /// OpenTelemetry tracing; `None` when off.
    pub otel: Option<super::otel::OtelSettings>,
    /// The forward-auth endpoint; `None` without `forward_auth_url`.
    pub forward_auth: Option<super::forward_auth::ForwardAuth>,
    pub branding: Branding,
    /// `downstream_mtls`: `None` when client certificates are not asked for.
    pub client_ca: Option<crate::tls::client_ca::ClientCa>,
    /// WebAuthn device types, built-ins first.
    pub device_types: Vec<super::devices::DeviceType>,
    /// How upstream host names are resolved (`dns_*`).
    pub dns: super::dns::DnsSettings,
    /// `identity_providers`: issuers of workload JWTs, by name.
    pub workload_issuers: Vec<std::sync::Arc<super::workload::WorkloadIssuer>>,
    /// Things worth saying that do not stop the config from loading.
    pub warnings: Vec<String>,
}

impl Settings {
    pub fn tls(&self) -> bool {
        !self.insecure_server
    }
}

/// Pomerium's split-deployment and gRPC keys, when set: accepted, with a warning that they do
/// nothing in one process.
fn single_process_warning(raw: &RawSettings) -> Option<String> {
    let split: Vec<&str> = [
        ("authorize_service_url", raw.authorize_service_url.is_some()),
        (
            "authorize_service_urls",
            raw.authorize_service_urls.is_some(),
        ),
        (
            "authorize_internal_service_url",
            raw.authorize_internal_service_url.is_some(),
        ),
        (
            "authenticate_internal_service_url",
            raw.authenticate_internal_service_url.is_some(),
        ),
        (
            "databroker_service_url",
            raw.databroker_service_url.is_some(),
        ),
        (
            "databroker_service_urls",
            raw.databroker_service_urls.is_some(),
        ),
        (
            "databroker_internal_service_url",
            raw.databroker_internal_service_url.is_some(),
        ),
        ("grpc_address", raw.grpc_address.is_some()),
        ("grpc_insecure", raw.grpc_insecure.is_some()),
        ("grpc_client_timeout", raw.grpc_client_timeout.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();
    (!split.is_empty()).then(|| {
        format!(
            "{}: accepted, no effect: Vallum is one process whose authorization runs in-process \
             (its session store is set by databroker_storage_*)",
            split.join(", ")
        )
    })
}

/// `path_with_escaped_slashes_action` (Envoy's names).
fn escaped_slashes(raw: &RawSettings, errs: &mut Errors) -> EscapedSlashes {
    match raw
        .path_with_escaped_slashes_action
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None
        | Some("reject_request")
        | Some("default")
        | Some("implementation_specific_default") => EscapedSlashes::RejectRequest,
        Some("keep_unchanged") => EscapedSlashes::KeepUnchanged,
        Some("unescape_and_redirect") => EscapedSlashes::UnescapeAndRedirect,
        Some("unescape_and_forward") => EscapedSlashes::UnescapeAndForward,
        Some(other) => {
            errs.push(
                "path_with_escaped_slashes_action",
                format!("unknown value {other:?}; expected reject_request, keep_unchanged, unescape_and_redirect or unescape_and_forward"),
            );
            EscapedSlashes::RejectRequest
        }
    }
}

/// `headers_with_underscores_action` (Envoy's names).
fn underscores(raw: &RawSettings, errs: &mut Errors) -> Underscores {
    match raw
        .headers_with_underscores_action
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("reject_request") => Underscores::RejectRequest,
        Some("allow") => Underscores::Allow,
        Some("drop_header") => Underscores::DropHeader,
        Some(other) => {
            errs.push(
                "headers_with_underscores_action",
                format!("unknown value {other:?}; expected reject_request, drop_header or allow"),
            );
            Underscores::RejectRequest
        }
    }
}

/// `log_level` and `proxy_log_level` (default: `log_level`), as `tracing` levels: Pomerium's
/// spellings are mapped (`warning` → `warn`; `critical`, `fatal`, `panic` → `error`; `none`,
/// `disabled` → `off`).
fn log_levels(raw: &RawSettings, errs: &mut Errors) -> (String, Option<String>) {
    let level = |key: &str, v: Option<&str>, default: &str, errs: &mut Errors| {
        let v = v.unwrap_or(default).to_ascii_lowercase();
        match v.as_str() {
            "trace" | "debug" | "info" | "warn" | "error" | "off" => v,
            "warning" => "warn".into(),
            "critical" | "fatal" | "panic" => "error".into(),
            "none" | "disabled" => "off".into(),
            _ => {
                errs.push(
                    key,
                    format!("unknown level {v:?}; expected debug, info, warn, error or off"),
                );
                default.into()
            }
        }
    };
    let log = level("log_level", raw.log_level.as_deref(), "info", errs);
    let proxy = raw
        .proxy_log_level
        .as_deref()
        .map(|p| level("proxy_log_level", Some(p), &log, errs));
    (log, proxy)
}

pub fn compile(
    raw: &RawSettings,
    generated: &super::auth::GeneratedSecrets,
    errs: &mut Errors,
) -> Settings {
    let insecure = raw.insecure_server;
    let default_addr = if insecure { ":80" } else { ":443" };
    let address = errs
        .check(
            "address",
            parse_listen(raw.address.as_deref().unwrap_or(default_addr)),
        )
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let http_redirect_addr = raw
        .http_redirect_addr
        .as_deref()
        .and_then(|a| errs.check("http_redirect_addr", parse_listen(a)));
    if insecure && http_redirect_addr.is_some() {
        errs.push(
            "http_redirect_addr",
            "redirects to HTTPS but insecure_server serves plain HTTP; remove one of them",
        );
    }

    let mut files = Vec::new();
    let certs = compile_certs(raw, &mut files, errs);
    // TLS on and no certificate: the snapshot serves a self-signed one (as Pomerium does).
    let fallback_certificate = !insecure && certs.is_empty();
    let autocert = super::autocert::compile(raw, insecure, &mut files, errs);
    let hsts = !insecure && trusted_certificates(&certs, autocert.as_ref());
    let response_headers = compile_response_headers(raw.set_response_headers.as_ref(), hsts, errs);

    let escaped_slashes = escaped_slashes(raw, errs);
    let underscores = underscores(raw, errs);
    let (log_level, proxy_log_level) = log_levels(raw, errs);

    let mut auth = super::auth::compile(raw, insecure, generated, &mut files, errs);
    let mut warnings = Vec::new();
    warnings.extend(single_process_warning(raw));
    let ops = super::ops::compile(raw, errs, &mut warnings);
    let branding = compile_branding(raw, errs);
    let client_ca = super::mtls::compile(raw.downstream_mtls.as_ref(), insecure, &mut files, errs);
    let device_types = super::devices::compile(&raw.device_types, errs);
    let dns = super::dns::compile(raw, errs);
    if let Some(a) = auth.as_mut() {
        a.device_types = device_types.clone();
        a.rp_name = branding.name.clone();
    }

    Settings {
        codec: codec(raw, errs),
        auth,
        ops,
        otel: super::otel::compile(raw, errs),
        forward_auth: super::forward_auth::compile(raw, errs),
        workload_issuers: super::workload::compile(raw.identity_providers.as_ref(), errs),
        branding,
        client_ca,
        device_types,
        dns,
        warnings,
        address,
        insecure_server: insecure,
        http_redirect_addr,
        certs,
        fallback_certificate,
        autocert,
        response_headers,
        timeout_read: raw
            .timeout_read
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30)),
        timeout_write: raw.timeout_write.map(|d| d.0).filter(|d| !d.is_zero()),
        timeout_idle: raw
            .timeout_idle
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(300)),
        default_upstream_timeout: raw
            .default_upstream_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30)),
        circuit_limits: raw
            .circuit_breaker_thresholds
            .as_ref()
            .and_then(|c| super::breaker::compile(c, "circuit_breaker_thresholds", errs)),
        log_level,
        proxy_log_level,
        escaped_slashes,
        underscores,
        normalize_path: raw.normalize_path.unwrap_or(true),
        merge_slashes: raw.merge_slashes.unwrap_or(true),
        skip_xff_append: raw.skip_xff_append,
        allow_upgrades: raw
            .allow_upgrades
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        files,
    }
}

/// How Vallum's own pages (sign-in problems, 403, the user page) present themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branding {
    pub name: String,
    /// `data:image/…` or `https://…`; `None`: Vallum's inline mark. Inline data keeps the pages
    /// free of external requests on closed networks.
    pub logo_url: Option<String>,
    /// `#rgb` or `#rrggbb`.
    pub color: String,
}

impl Default for Branding {
    fn default() -> Self {
        Branding {
            name: "Vallum".into(),
            logo_url: None,
            color: "#1f4e79".into(),
        }
    }
}

fn compile_branding(raw: &RawSettings, errs: &mut Errors) -> Branding {
    let mut b = Branding::default();
    if let Some(n) = raw.branding_name.as_deref().map(str::trim) {
        if n.is_empty() || n.len() > 60 {
            errs.push("branding_name", "must be 1 to 60 characters");
        } else {
            b.name = n.to_string();
        }
    }
    if let Some(u) = raw.branding_logo_url.as_deref().map(str::trim) {
        if u.starts_with("data:image/") || u.starts_with("https://") {
            b.logo_url = Some(u.to_string());
        } else {
            errs.push(
                "branding_logo_url",
                "expected a data:image/… URL (works on closed networks) or an https:// URL",
            );
        }
    }
    if let Some(c) = raw.branding_color.as_deref().map(str::trim) {
        let hex = c.strip_prefix('#').unwrap_or("");
        if (hex.len() == 3 || hex.len() == 6) && hex.chars().all(|ch| ch.is_ascii_hexdigit()) {
            b.color = c.to_string();
        } else {
            errs.push("branding_color", "expected a hex colour such as #1f4e79");
        }
    }
    b
}

/// Go-style listen addresses: `:443` means every IPv4 interface, `localhost:8443` resolves.
pub fn parse_listen(a: &str) -> Result<SocketAddr, String> {
    let full = if a.starts_with(':') {
        format!("0.0.0.0{a}")
    } else {
        a.to_string()
    };
    if let Ok(s) = full.parse() {
        return Ok(s);
    }
    full.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| format!("{a:?} is not a listen address (expected host:port or :port)"))
}

fn compile_certs(raw: &RawSettings, files: &mut Vec<PathBuf>, errs: &mut Errors) -> CertStore {
    let mut sources: Vec<(String, PemSource, PemSource)> = Vec::new();
    for (i, c) in raw.certificates.iter().enumerate() {
        if c.cert.is_empty() || c.key.is_empty() {
            errs.push(format!("certificates[{i}]"), "needs both `cert` and `key`");
            continue;
        }
        sources.push((
            format!("certificates[{i}]"),
            pem::path_or_inline(&c.cert),
            pem::path_or_inline(&c.key),
        ));
    }
    let pair = |cert: Option<&str>, key: Option<&str>, file: bool| match (cert, key) {
        (Some(c), Some(k)) if file => {
            Ok(Some((PemSource::File(c.into()), PemSource::File(k.into()))))
        }
        (Some(c), Some(k)) => Ok(Some((
            PemSource::Inline(c.to_string()),
            PemSource::Inline(k.to_string()),
        ))),
        (None, None) => Ok(None),
        _ => Err(()),
    };
    match pair(
        raw.certificate_file.as_deref(),
        raw.certificate_key_file.as_deref(),
        true,
    ) {
        Ok(Some((c, k))) => sources.push(("certificate_file".into(), c, k)),
        Ok(None) => {}
        Err(()) => errs.push(
            "certificate_file",
            "certificate_file and certificate_key_file go together",
        ),
    }
    match pair(
        raw.certificate.as_deref(),
        raw.certificate_key.as_deref(),
        false,
    ) {
        Ok(Some((c, k))) => sources.push(("certificate".into(), c, k)),
        Ok(None) => {}
        Err(()) => errs.push("certificate", "certificate and certificate_key go together"),
    }

    let mut pairs = Vec::new();
    for (path, c, k) in sources {
        for s in [&c, &k] {
            if let PemSource::File(p) = s {
                files.push(p.clone());
            }
        }
        match load_certified_key(&c, &k) {
            Ok(pair) => pairs.push(pair),
            Err(e) => errs.push(path, e),
        }
    }
    CertStore::new(pairs)
}

fn load_certified_key(
    c: &PemSource,
    k: &PemSource,
) -> Result<(Arc<rustls::sign::CertifiedKey>, Vec<String>), String> {
    let ck = pem::certified_key(&pem::read(c)?, &pem::read(k)?)?;
    let names = ck.cert.first().map(pem::dns_names).unwrap_or_default();
    Ok((Arc::new(ck), names))
}

/// Whether browsers will trust what the listener serves, which is when HSTS is sent (Pomerium's
/// rule): not with the self-signed fallback, not with Let's Encrypt's staging certificates.
fn trusted_certificates(certs: &CertStore, autocert: Option<&super::autocert::Autocert>) -> bool {
    !certs.is_empty() || autocert.is_some_and(|a| !a.staging)
}

/// Pomerium's rule: defaults unless the key is set; a `disable` entry clears them all; HSTS only
/// when this listener serves TLS with certificates browsers trust (`trusted_certificates`).
fn compile_response_headers(
    set: Option<&BTreeMap<String, Text>>,
    tls: bool,
    errs: &mut Errors,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut pairs: Vec<(String, String)> = match set {
        Some(m) if m.keys().any(|k| k.eq_ignore_ascii_case("disable")) => Vec::new(),
        Some(m) => m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect(),
        None => {
            let mut d = vec![
                ("X-Frame-Options".to_string(), "SAMEORIGIN".to_string()),
                ("X-XSS-Protection".to_string(), "1; mode=block".to_string()),
            ];
            if tls {
                d.push((
                    "Strict-Transport-Security".to_string(),
                    "max-age=31536000; includeSubDomains; preload".to_string(),
                ));
            }
            d
        }
    };
    pairs.retain(|(k, _)| !k.eq_ignore_ascii_case("disable"));
    header_pairs(
        "set_response_headers",
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        errs,
    )
}

/// Validates header names and values once, at load, so the request path only copies them.
pub fn header_pairs<'a>(
    key: &str,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    errs: &mut Errors,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        let name = match HeaderName::from_bytes(k.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                errs.push(format!("{key}.{k}"), "not a valid HTTP header name");
                continue;
            }
        };
        match HeaderValue::from_str(v) {
            Ok(val) => out.push((name, val)),
            Err(_) => errs.push(format!("{key}.{k}"), "not a valid HTTP header value"),
        }
    }
    out
}
