//! The config file as written: serde structs that carry Pomerium's key names one to one.
//!
//! Nothing here is validated beyond types; `settings.rs` and `routes::compile` turn these into
//! ready-to-use values. Keys that belong to later stages (sign-in, authorization) are listed in
//! `keys.rs` so they are reported as "not supported yet" rather than as typos.

use super::duration::GoDuration;
use super::secret::Secret;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// Global settings. `routes`/`policy` stay raw so each route is parsed (and its errors
/// reported) on its own.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawSettings {
    pub address: Option<String>,
    pub insecure_server: bool,
    pub http_redirect_addr: Option<String>,
    /// The downstream protocols: `auto`, `http1`, `http2` (Envoy's codec, as Pomerium passes it).
    pub codec_type: Option<String>,
    pub certificates: Vec<RawCertificate>,
    pub certificate: Option<String>,
    pub certificate_key: Option<Secret>,
    pub certificate_file: Option<String>,
    pub certificate_key_file: Option<String>,
    // ACME (config::autocert).
    pub autocert: bool,
    pub autocert_ca: Option<String>,
    pub autocert_email: Option<String>,
    pub autocert_use_staging: bool,
    pub autocert_eab_key_id: Option<String>,
    pub autocert_eab_mac_key: Option<Secret>,
    pub autocert_must_staple: bool,
    pub autocert_dir: Option<String>,
    pub autocert_trusted_ca: Option<String>,
    pub autocert_trusted_ca_file: Option<String>,
    pub set_response_headers: Option<BTreeMap<String, Text>>,
    pub timeout_read: Option<GoDuration>,
    pub timeout_write: Option<GoDuration>,
    pub timeout_idle: Option<GoDuration>,
    pub default_upstream_timeout: Option<GoDuration>,
    pub circuit_breaker_thresholds: Option<super::breaker::RawCircuitBreaker>,
    pub log_level: Option<String>,
    pub proxy_log_level: Option<String>,
    pub path_with_escaped_slashes_action: Option<String>,
    pub headers_with_underscores_action: Option<String>,
    pub normalize_path: Option<bool>,
    pub merge_slashes: Option<bool>,
    pub skip_xff_append: bool,
    pub xff_num_trusted_hops: Option<u32>,
    pub allow_upgrades: Vec<String>,
    pub downstream_mtls: Option<super::mtls::RawDownstreamMtls>,
    /// WebAuthn device types (`any` and `enclave_only` are built in).
    pub device_types: Vec<super::devices::RawDeviceType>,
    /// Vallum extension: how Vallum's own pages present themselves.
    pub branding_name: Option<String>,
    pub branding_logo_url: Option<String>,
    pub branding_color: Option<String>,
    // Operations.
    pub metrics_address: Option<String>,
    pub metrics_basic_auth: Option<Secret>,
    pub health_check_addr: Option<String>,
    pub access_log_fields: Option<Vec<String>>,
    pub authorize_log_fields: Option<Vec<String>>,
    /// The groups assertions and claim headers may carry, for every route (Pomerium's).
    pub jwt_groups_filter: Option<StringList>,
    // OpenTelemetry tracing (config::otel).
    pub otel_traces_exporter: Option<String>,
    pub otel_exporter_otlp_endpoint: Option<String>,
    pub otel_exporter_otlp_traces_endpoint: Option<String>,
    pub otel_exporter_otlp_protocol: Option<String>,
    pub otel_exporter_otlp_traces_protocol: Option<String>,
    pub otel_exporter_otlp_headers: Option<OneOrMany>,
    pub otel_exporter_otlp_traces_headers: Option<OneOrMany>,
    pub otel_exporter_otlp_timeout: Option<super::otel::Millis>,
    pub otel_exporter_otlp_traces_timeout: Option<super::otel::Millis>,
    pub otel_traces_sampler_arg: Option<f64>,
    pub otel_resource_attributes: Option<OneOrMany>,
    pub otel_log_level: Option<String>,
    pub otel_attribute_value_length_limit: Option<i64>,
    pub otel_bsp_schedule_delay: Option<super::otel::Millis>,
    pub otel_bsp_max_export_batch_size: Option<i64>,
    /// Vallum extension: whose `traceparent` starts a request's trace.
    pub otel_trust_incoming_traceparent: Option<String>,
    /// Forward auth (config::forward_auth).
    pub forward_auth_url: Option<String>,
    /// Vallum extension: ingresses whose sub-requests are believed.
    pub forward_auth_ingresses: Option<Vec<String>>,
    /// Vallum extension: peers whose `X-Request-Id` is kept.
    pub trusted_proxies: Vec<String>,
    /// Vallum extension: request head limits.
    pub max_request_header_bytes: Option<usize>,
    pub max_request_headers: Option<usize>,
    /// Vallum extension: default request body limit.
    pub max_request_bytes: Option<u64>,
    /// Vallum extension: identity headers other gateways use, stripped from every request.
    pub strip_identity_headers: Option<Vec<String>>,
    /// Vallum extension: sign-in requests per second per client IP.
    pub signin_rate_limit: Option<u32>,
    /// Vallum extension: proxy worker threads (default: one per core).
    pub threads: Option<usize>,
    /// Split-deployment addresses and gRPC settings of Pomerium's separate services. Vallum is
    /// one process whose authorization runs in-process and whose store is configured by the
    /// `databroker_storage_*` keys, so these are accepted and have no effect (a warning says so).
    pub authorize_service_url: Option<serde_yaml_ng::Value>,
    pub authorize_service_urls: Option<serde_yaml_ng::Value>,
    pub authorize_internal_service_url: Option<serde_yaml_ng::Value>,
    pub authenticate_internal_service_url: Option<serde_yaml_ng::Value>,
    pub databroker_service_url: Option<serde_yaml_ng::Value>,
    pub databroker_service_urls: Option<serde_yaml_ng::Value>,
    pub databroker_internal_service_url: Option<serde_yaml_ng::Value>,
    pub grpc_address: Option<serde_yaml_ng::Value>,
    pub grpc_insecure: Option<serde_yaml_ng::Value>,
    pub grpc_client_timeout: Option<serde_yaml_ng::Value>,
    // Sign-in.
    pub services: Option<String>,
    pub authenticate_service_url: Option<String>,
    pub idp_provider: Option<String>,
    pub idp_provider_url: Option<String>,
    pub idp_client_id: Option<String>,
    pub idp_client_secret: Option<Secret>,
    pub idp_client_secret_file: Option<String>,
    pub idp_scopes: Option<StringList>,
    pub idp_request_params: BTreeMap<String, Text>,
    /// Vallum extension: the ID token / userinfo claim that holds groups.
    pub idp_groups_claim: Option<String>,
    /// Vallum extension: how old claims may get before a refresh re-reads them.
    pub idp_refresh_claims_interval: Option<GoDuration>,
    pub cookie_name: Option<String>,
    pub cookie_secret: Option<Secret>,
    pub cookie_secret_file: Option<String>,
    pub shared_secret: Option<Secret>,
    pub shared_secret_file: Option<String>,
    pub cookie_domain: Option<String>,
    pub cookie_expire: Option<GoDuration>,
    pub cookie_http_only: Option<bool>,
    pub cookie_same_site: Option<String>,
    pub signout_redirect_url: Option<String>,
    pub pass_identity_headers: Option<bool>,
    pub runtime_flags: BTreeMap<String, bool>,
    /// Hosts whose HTTPS URLs MCP clients may use as client ids (metadata documents).
    pub mcp_allowed_client_id_domains: Option<Vec<String>>,
    /// Hosts whose authorization-server metadata Vallum may fetch when an MCP server names it.
    pub mcp_allowed_as_metadata_domains: Option<Vec<String>>,
    /// Vallum extension: how long an MCP access token lives.
    pub mcp_access_token_lifetime: Option<GoDuration>,
    pub signing_key: Option<Secret>,
    pub signing_key_file: Option<String>,
    pub jwt_claims_headers: Option<serde_yaml_ng::Value>,
    pub jwt_issuer_format: Option<String>,
    pub bearer_token_format: Option<String>,
    pub idp_access_token_allowed_audiences: Option<Vec<String>>,
    /// Issuers of workload JWTs (`bearer_token_format: jwt`), by name.
    pub identity_providers: Option<BTreeMap<String, super::workload::RawWorkloadIssuer>>,
    /// Vallum extension: a session unused this long ends (`0s`: never).
    pub session_idle_timeout: Option<GoDuration>,
    pub programmatic_redirect_domain_whitelist: Option<Vec<String>>,
    pub databroker_storage_type: Option<String>,
    pub databroker_storage_connection_string: Option<Secret>,
    pub databroker_storage_connection_string_file: Option<String>,
    /// Vallum extension: prefix of every Redis key.
    pub databroker_storage_key_prefix: Option<String>,
    /// Vallum extension (Pomerium's names from when it had Redis): TLS to Redis.
    pub databroker_storage_ca_file: Option<String>,
    pub databroker_storage_cert_file: Option<String>,
    pub databroker_storage_key_file: Option<String>,
    pub databroker_storage_tls_skip_verify: bool,
    /// Vallum extension: bound on every session-store call.
    pub databroker_storage_timeout: Option<GoDuration>,
    /// Vallum extension: how long a node trusts its cached copy of a session.
    pub databroker_cache_ttl: Option<GoDuration>,
    /// Vallum extension: how long a cached session may serve while the store is unreachable.
    pub databroker_cache_max_stale: Option<GoDuration>,
    pub dns_lookup_family: Option<String>,
    pub dns_refresh_rate: Option<GoDuration>,
    pub dns_failure_refresh_rate: Option<GoDuration>,
    pub dns_query_timeout: Option<GoDuration>,
    pub dns_query_tries: Option<u32>,
    /// Accepted for Pomerium configs; the resolver opens a fresh port per query anyway.
    pub dns_udp_max_queries: Option<u32>,
    pub dns_use_tcp: Option<bool>,
    pub dns_resolvers: Option<StringList>,
    pub routes: Option<serde_yaml_ng::Value>,
    pub policy: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct RawCertificate {
    pub cert: String,
    pub key: Secret,
}

/// One route, as in Pomerium's `routes:` list.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRoute {
    /// Vallum extension: let `email`/`domain` rules match an email the IdP did not verify.
    pub allow_unverified_email: bool,
    /// Vallum extension: `Origin`s allowed to open a websocket (none listed: any).
    pub websocket_allowed_origins: Vec<String>,
    /// Vallum extension: request body limit for this route.
    pub max_request_bytes: Option<u64>,
    pub from: Option<String>,
    pub to: Option<OneOrMany>,
    pub redirect: Option<RawRedirect>,
    pub response: Option<RawResponse>,
    pub prefix: Option<String>,
    pub path: Option<String>,
    pub regex: Option<String>,
    pub regex_priority_order: Option<i64>,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite_pattern: Option<String>,
    pub regex_rewrite_substitution: Option<String>,
    pub host_rewrite: Option<String>,
    pub host_rewrite_header: Option<HeaderOrFlag>,
    pub preserve_host_header: bool,
    pub set_request_headers: BTreeMap<String, Text>,
    pub remove_request_headers: Vec<String>,
    pub set_response_headers: BTreeMap<String, Text>,
    pub rewrite_response_headers: Vec<RawRewriteHeader>,
    pub timeout: Option<GoDuration>,
    pub idle_timeout: Option<GoDuration>,
    pub allow_websockets: bool,
    pub allow_spdy: bool,
    pub allow_upgrades: Vec<String>,
    pub tls_skip_verify: bool,
    /// Vallum: the HTTP version the route's upstreams get (`auto`, `http1`, `http2`).
    pub codec_type: Option<String>,
    pub tls_upstream_server_name: Option<String>,
    pub tls_server_name: Option<String>,
    pub tls_custom_ca: Option<String>,
    pub tls_custom_ca_file: Option<String>,
    /// Pomerium's deprecated per-route client CA (`downstream_mtls` replaced it).
    pub tls_downstream_client_ca: Option<String>,
    pub enable_google_cloud_serverless_authentication: bool,
    pub tls_downstream_client_ca_file: Option<String>,
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<Secret>,
    pub tls_client_cert_file: Option<String>,
    pub tls_client_key_file: Option<String>,
    pub load_balancing_policy: Option<String>,
    pub health_checks: Vec<RawHealthCheck>,
    pub circuit_breaker_thresholds: Option<super::breaker::RawCircuitBreaker>,
    pub outlier_detection: Option<super::breaker::RawOutlierDetection>,
    pub healthy_panic_threshold: Option<u32>,
    pub name: Option<String>,
    pub id: Option<String>,
    pub description: Option<String>,
    /// This route's groups filter, added to the global one.
    pub jwt_groups_filter: Option<StringList>,
    /// Add the groups the route's policy names to its groups filter.
    pub jwt_groups_filter_infer_from_ppl: Option<bool>,
    pub logo_url: Option<String>,
    pub pass_identity_headers: Option<bool>,
    pub jwt_issuer_format: Option<String>,
    pub bearer_token_format: Option<String>,
    /// Vallum extension: the user must have signed in at the IdP within this long.
    pub max_auth_age: Option<GoDuration>,
    pub idp_access_token_allowed_audiences: Option<Vec<String>>,
    /// Which of the global `identity_providers` a `jwt` route accepts (unset: all).
    pub identity_providers: Option<Vec<String>>,
    /// This route's own sign-in provider, over the global one's keys.
    pub idp_provider: Option<String>,
    pub idp_provider_url: Option<String>,
    pub idp_client_id: Option<String>,
    pub idp_client_secret: Option<Secret>,
    pub idp_client_secret_file: Option<String>,
    /// Vallum extension: several sign-in providers, chosen by the user on a sign-in page.
    pub idp_choices: Option<Vec<super::route_idp::RawIdpChoice>>,
    /// An MCP server route (`mcp: {server: {…}}`).
    pub mcp: Option<super::mcp::RawMcp>,
    /// Vallum extension: a session unused this long ends (`0s`: never).
    pub session_idle_timeout: Option<GoDuration>,
    // Access keys.
    pub policy: Option<serde_yaml_ng::Value>,
    pub allowed_users: Option<Vec<String>>,
    pub allowed_domains: Option<Vec<String>>,
    pub allowed_idp_claims: Option<serde_yaml_ng::Value>,
    pub allow_public_unauthenticated_access: bool,
    pub allow_any_authenticated_user: bool,
    pub cors_allow_preflight: bool,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct RawRedirect {
    pub https_redirect: Option<bool>,
    pub scheme_redirect: Option<String>,
    pub host_redirect: Option<String>,
    pub port_redirect: Option<u16>,
    pub path_redirect: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub response_code: Option<Text>,
    pub strip_query: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct RawResponse {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct RawRewriteHeader {
    pub header: String,
    pub prefix: Option<String>,
    pub value: String,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct RawHealthCheck {
    pub timeout: Option<GoDuration>,
    pub interval: Option<GoDuration>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub http_health_check: Option<RawHttpHealthCheck>,
    pub tcp_health_check: Option<RawTcpHealthCheck>,
    pub grpc_health_check: Option<RawGrpcHealthCheck>,
    pub always_log_health_check_success: bool,
    pub always_log_health_check_failures: bool,
}

/// Envoy's gRPC health check (`grpc.health.v1.Health/Check`).
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct RawGrpcHealthCheck {
    pub service_name: Option<String>,
    pub authority: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct RawHttpHealthCheck {
    pub host: Option<String>,
    pub path: Option<String>,
    pub expected_statuses: Vec<RawStatusRange>,
    pub codec_client_type: Option<String>,
}

/// Envoy's `Int64Range`: `start` inclusive, `end` exclusive.
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(default)]
pub struct RawStatusRange {
    pub start: u16,
    pub end: u16,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct RawTcpHealthCheck {
    pub send: Option<RawPayload>,
    pub receive: Vec<RawPayload>,
}

/// Envoy's health-check payload: `text` is hex, `binary` base64.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct RawPayload {
    pub text: Option<String>,
    pub binary: Option<String>,
}

/// A list given as a YAML list or as one comma- or space-separated string (`idp_scopes`).
#[derive(Debug, Clone, Default)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match OneOrMany::deserialize(d)?.0.as_slice() {
            [one] => Ok(StringList(
                one.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            )),
            many => Ok(StringList(many.to_vec())),
        }
    }
}

/// `to:` takes one URL or a list.
#[derive(Debug, Clone)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            One(String),
            Many(Vec<String>),
        }
        match Repr::deserialize(d) {
            Ok(Repr::One(s)) => Ok(OneOrMany(vec![s])),
            Ok(Repr::Many(v)) => Ok(OneOrMany(v)),
            Err(_) => Err(serde::de::Error::custom("expected a URL or a list of URLs")),
        }
    }
}

/// A scalar read as text: header values like `X-Version: 2` or `X-Debug: true` are strings to
/// the user, whatever YAML thinks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(pub String);

/// A header name, or a boolean where some configs (wrongly) put one: `host_rewrite_header: true`.
/// Pomerium reads `true` as the header named `1`, which no request carries, so it changes
/// nothing there; Vallum says so instead of refusing the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderOrFlag {
    Name(String),
    Flag(bool),
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
