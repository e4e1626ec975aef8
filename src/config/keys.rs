//! Which keys Vallum knows: its own (read off the serde structs, so the lists cannot drift),
//! Pomerium's that it does not support yet, and keys Pomerium removed. A typo in an auth setting
//! is a security bug, so an unknown key is an error with a suggestion, never a warning.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Global keys Pomerium has and Vallum does not implement yet.
pub const POMERIUM_GLOBAL_UNSUPPORTED: &[&str] = &[
    "certificate_authority",
    "certificate_authority_file",
    "override_certificate_name",
    "tls_derive",
    "use_proxy_protocol",
    "metrics_certificate",
    "metrics_certificate_key",
    "metrics_certificate_file",
    "metrics_certificate_key_file",
    "metrics_client_ca",
    "metrics_client_ca_file",
    "health_check_systemd_disabled",
    "debug_address",
    "envoy_admin_address",
    "envoy_admin_access_log_path",
    "envoy_admin_profile_path",
    "envoy_bind_config_source_address",
    "envoy_bind_config_freebind",
    "google_cloud_serverless_authentication_service_account",
    "installation_id",
];

/// Route keys Pomerium has and Vallum does not implement yet.
pub const POMERIUM_ROUTE_UNSUPPORTED: &[&str] = &[
    "host_path_regex_rewrite_pattern",
    "host_path_regex_rewrite_substitution",
    "kubernetes_service_account_token",
    "kubernetes_service_account_token_file",
    "tls_upstream_allow_renegotiation",
    "tls_downstream_server_name",
    "show_error_details",
    "depends_on",
    "upstream_tunnel",
    "session_recording",
    "stat_name",
];

/// Keys Pomerium itself refuses, with the reason it gives.
pub const POMERIUM_REMOVED: &[(&str, &str)] = &[
    ("client_ca", "removed in Pomerium; use downstream_mtls.ca"),
    (
        "client_ca_file",
        "removed in Pomerium; use downstream_mtls.ca_file",
    ),
    (
        "idp_service_account",
        "removed in Pomerium (directory sync was dropped)",
    ),
    (
        "idp_refresh_directory_timeout",
        "removed in Pomerium (directory sync was dropped)",
    ),
    (
        "idp_refresh_directory_interval",
        "removed in Pomerium (directory sync was dropped)",
    ),
    ("idp_qps", "removed in Pomerium"),
    (
        "allowed_groups",
        "removed in Pomerium 0.20; use a `groups` or `claim/groups` policy",
    ),
    (
        "set_authorization_header",
        "removed in Pomerium; use set_request_headers",
    ),
    ("lb_policy", "renamed; use load_balancing_policy"),
    (
        "tracing_provider",
        "removed in Pomerium; use the otel_* keys",
    ),
    (
        "tracing_sample_rate",
        "removed in Pomerium; use the otel_* keys",
    ),
];

/// Keys Pomerium once had and now ignores (it starts with an unknown-key warning): accepted
/// with a warning that says what replaced each. Keys Pomerium refuses stay in
/// [`POMERIUM_REMOVED`]; keys it never had stay errors, so a typo in an auth setting is caught.
pub const POMERIUM_OBSOLETE: &[(&str, &str)] = &[
    (
        "pomerium_debug",
        "removed in Pomerium 0.25 (logs are always JSON); ignored: Vallum writes JSON logs, or text with VALLUM_LOG_FORMAT=text",
    ),
    (
        "debug",
        "removed in Pomerium 0.25 (logs are always JSON); ignored: Vallum writes JSON logs, or text with VALLUM_LOG_FORMAT=text",
    ),
    (
        "grpc_client_dns_roundrobin",
        "no longer read by Pomerium (its services' gRPC client options went with the split-service transport); ignored: Vallum is one process",
    ),
    (
        "signing_key_algorithm",
        "no longer read by Pomerium, which takes the algorithm from signing_key; ignored: Vallum signs with ES256, or RS256 for an RSA signing_key",
    ),
];

/// How Vallum treats one key of a Pomerium config (for `check-config --pomerium`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Supported,
    /// Accepted, but has no effect in Vallum (the reason says why).
    Ignored(&'static str),
    /// A Pomerium key Vallum does not implement yet.
    Unsupported,
    /// Pomerium itself removed it (the reason says what replaced it).
    Removed(&'static str),
    Unknown,
}

/// The split-deployment and gRPC keys of Pomerium's separate services.
pub const SINGLE_PROCESS: &[&str] = &[
    "authorize_service_url",
    "authorize_service_urls",
    "authorize_internal_service_url",
    "authenticate_internal_service_url",
    "databroker_service_url",
    "databroker_service_urls",
    "databroker_internal_service_url",
    "grpc_address",
    "grpc_insecure",
    "grpc_client_timeout",
];

const SINGLE_PROCESS_WHY: &str =
    "Vallum is one process: authorization runs in-process and the session store is set by databroker_storage_*";

/// Keys Vallum accepts but that change nothing, with why.
const IGNORED: &[(&str, &str)] = &[(
    "regex_priority_order",
    "file routes keep config order in Pomerium too",
)];

pub fn classify(key: &str, known: &[&str], unsupported: &[&str]) -> Support {
    if let Some((_, why)) = IGNORED.iter().find(|(k, _)| *k == key) {
        return Support::Ignored(why);
    }
    if SINGLE_PROCESS.contains(&key) {
        return Support::Ignored(SINGLE_PROCESS_WHY);
    }
    if known.contains(&key) {
        return Support::Supported;
    }
    if let Some((_, why)) = POMERIUM_OBSOLETE.iter().find(|(k, _)| *k == key) {
        return Support::Ignored(why);
    }
    if let Some((_, why)) = POMERIUM_REMOVED.iter().find(|(k, _)| *k == key) {
        return Support::Removed(why);
    }
    if unsupported.contains(&key) || key.starts_with("tracing_") {
        return Support::Unsupported;
    }
    Support::Unknown
}

/// Explains why `key` is not accepted, given the keys that would be.
pub fn explain_unknown(key: &str, known: &[&'static str], pomerium_unsupported: &[&str]) -> String {
    if let Some((_, why)) = POMERIUM_REMOVED.iter().find(|(k, _)| *k == key) {
        return why.to_string();
    }
    if pomerium_unsupported.contains(&key) || key.starts_with("tracing_") {
        return "Pomerium key not supported by Vallum yet; remove it or see \
                docs/migrating-from-pomerium.md"
            .to_string();
    }
    match suggest(key, known) {
        Some(s) => format!("unknown key; did you mean {s}?"),
        None => "unknown key".to_string(),
    }
}

fn suggest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The field names serde knows for a struct, read from its `Deserialize` impl, so the
/// known-key lists can never drift from the structs themselves.
pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Grab(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Grab {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut g = Grab(None);
    let _ = T::deserialize(&mut g);
    g.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{RawRoute, RawSettings};

    #[test]
    fn fields_come_from_the_structs() {
        let f = struct_fields::<RawRoute>();
        assert!(f.contains(&"prefix") && f.contains(&"tls_custom_ca_file"));
        assert!(struct_fields::<RawSettings>().contains(&"timeout_idle"));
    }

    #[test]
    fn typo_gets_a_suggestion() {
        let known = struct_fields::<RawRoute>();
        assert_eq!(
            explain_unknown("prefx", known, POMERIUM_ROUTE_UNSUPPORTED),
            "unknown key; did you mean prefix?"
        );
        assert!(
            explain_unknown("stat_name", known, POMERIUM_ROUTE_UNSUPPORTED)
                .contains("not supported by Vallum yet")
        );
        assert!(
            explain_unknown("allowed_groups", known, POMERIUM_ROUTE_UNSUPPORTED)
                .contains("removed")
        );
        assert_eq!(
            explain_unknown("zzzzzzzzzz", known, POMERIUM_ROUTE_UNSUPPORTED),
            "unknown key"
        );
    }
}
