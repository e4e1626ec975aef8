//! Where sessions live: `databroker_storage_type` and its connection string, TLS and cache
//! timings, compiled into `Storage`.

use super::error::Errors;
use super::raw::RawSettings;
use std::time::Duration;

/// Where sessions are kept (`databroker_storage_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Memory,
    Redis(RedisSettings),
    /// `file`: the local database.
    File(FileSettings),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    /// Its directory (Pomerium's `file:///path` form).
    pub dir: std::path::PathBuf,
    /// How long this process trusts its cached copy of a session (`databroker_cache_ttl`): the
    /// bound on how late the other process of an upgrade sees a sign-out made here.
    pub cache_ttl: Duration,
    pub cache_max_stale: Duration,
}

#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub target: RedisTarget,
    pub prefix: String,
    /// Bound on each store call, connecting included.
    pub timeout: Duration,
    /// How long a node trusts its cached copy of a session (0: no local cache).
    pub cache_ttl: Duration,
    /// How long a cached session may still serve while the store is unreachable.
    pub cache_max_stale: Duration,
    /// Trust and client certificate for `rediss://` (PEM); empty: the system's roots, no client cert.
    pub tls: RedisTls,
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    pub ca_pem: Option<Vec<u8>>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// One Redis, or the seed nodes of a Redis Cluster.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may hold a password: only their count and shape are shown.
        let target = match &self.target {
            RedisTarget::Single(_) => "single".to_string(),
            RedisTarget::Cluster(n) => format!("cluster of {} seed nodes", n.len()),
        };
        f.debug_struct("RedisSettings")
            .field("target", &target)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_max_stale", &self.cache_max_stale)
            .field("custom_ca", &self.tls.ca_pem.is_some())
            .field("client_cert", &self.tls.client.is_some())
            .finish()
    }
}

/// Parses `databroker_storage_connection_string`: `redis://…`, `rediss://…` (TLS), or
/// `redis+cluster://[user:password@]host1:port1,host2:port2[/]` (`rediss+cluster://` with TLS),
/// whose credentials apply to every node. Errors never repeat the string (it may hold a password).
pub fn parse_redis_target(conn: &str) -> Result<RedisTarget, String> {
    let check = |url: &str| {
        use redis::IntoConnectionInfo;
        url.into_connection_info()
            .map(|_| ())
            .map_err(|e| format!("not a valid Redis URL ({:?})", e.kind()))
    };
    for (scheme, node_scheme) in [
        ("redis+cluster://", "redis://"),
        ("rediss+cluster://", "rediss://"),
    ] {
        if let Some(rest) = conn.strip_prefix(scheme) {
            let rest = rest.trim_end_matches('/');
            let (creds, hosts) = match rest.rsplit_once('@') {
                Some((c, h)) => (format!("{c}@"), h),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("{node_scheme}{creds}{h}/"))
                .collect();
            if nodes.is_empty() {
                return Err("a cluster URL needs at least one host:port".into());
            }
            for n in &nodes {
                check(n)?;
            }
            return Ok(RedisTarget::Cluster(nodes));
        }
    }
    if conn.starts_with("redis://") || conn.starts_with("rediss://") {
        check(conn)?;
        return Ok(RedisTarget::Single(conn.to_string()));
    }
    Err(
        "expected redis://host:port, rediss://host:port or redis+cluster://host1:port1,host2:port2"
            .into(),
    )
}

/// `databroker_storage_ca_file`, `_cert_file`, `_key_file` and `_tls_skip_verify`: only with
/// `rediss://`. Skipping verification is spelled the way the redis crate reads it (`#insecure`).
fn compile_redis_tls(
    raw: &RawSettings,
    target: RedisTarget,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> (RedisTarget, RedisTls) {
    let tls_url = match &target {
        RedisTarget::Single(u) => u.starts_with("rediss://"),
        RedisTarget::Cluster(n) => n.iter().all(|u| u.starts_with("rediss://")),
    };
    let mut read = |key: &str, path: &Option<String>| -> Option<Vec<u8>> {
        let path = path.as_deref()?;
        files.push(path.into());
        match std::fs::read(path) {
            Ok(b) if b.windows(10).any(|w| w == b"-----BEGIN") => Some(b),
            Ok(_) => {
                errs.push(key, format!("{path}: not a PEM file"));
                None
            }
            Err(e) => {
                errs.push(key, format!("cannot read {path}: {e}"));
                None
            }
        }
    };
    let ca_pem = read(
        "databroker_storage_ca_file",
        &raw.databroker_storage_ca_file,
    );
    let cert = read(
        "databroker_storage_cert_file",
        &raw.databroker_storage_cert_file,
    );
    let key = read(
        "databroker_storage_key_file",
        &raw.databroker_storage_key_file,
    );
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            errs.push(
                "databroker_storage_cert_file",
                "set both databroker_storage_cert_file and databroker_storage_key_file",
            );
            None
        }
    };
    let wants_tls = ca_pem.is_some() || client.is_some() || raw.databroker_storage_tls_skip_verify;
    if wants_tls && !tls_url {
        errs.push(
            "databroker_storage_connection_string",
            "TLS settings (databroker_storage_ca_file, _cert_file, _key_file, _tls_skip_verify) need rediss://",
        );
    }
    let insecure = |u: String| {
        if raw.databroker_storage_tls_skip_verify && !u.contains('#') {
            format!("{u}#insecure")
        } else {
            u
        }
    };
    let target = match target {
        RedisTarget::Single(u) => RedisTarget::Single(insecure(u)),
        RedisTarget::Cluster(n) => RedisTarget::Cluster(n.into_iter().map(insecure).collect()),
    };
    (target, RedisTls { ca_pem, client })
}

/// `databroker_cache_ttl`: how long a cached session is trusted (Redis and `file` alike).
fn cache_ttl(raw: &RawSettings) -> Duration {
    raw.databroker_cache_ttl
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(1))
}

/// `databroker_cache_max_stale`: how long a cached session may serve while the store is down.
fn cache_max_stale(raw: &RawSettings) -> Duration {
    raw.databroker_cache_max_stale
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(300))
}

/// `file:///var/lib/vallum/databroker` (Pomerium's form) or a plain absolute path.
fn file_dir(conn: &str) -> Result<std::path::PathBuf, String> {
    let path = match conn.strip_prefix("file://") {
        Some(p) => p,
        None if conn.starts_with('/') => conn,
        None => {
            return Err(format!(
                "{conn:?} is not a directory URL; expected file:///path/to/dir"
            ))
        }
    };
    if !path.starts_with('/') {
        return Err(format!(
            "{conn:?}: the directory must be an absolute path (file:///path/to/dir)"
        ));
    }
    Ok(std::path::PathBuf::from(path))
}

pub(super) fn compile_storage(
    raw: &RawSettings,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Storage {
    let conn = super::auth::inline_or_file(
        raw.databroker_storage_connection_string.as_deref(),
        &raw.databroker_storage_connection_string_file,
        "databroker_storage_connection_string",
        files,
        errs,
    )
    .map(|c| c.trim().to_string());
    match raw.databroker_storage_type.as_deref() {
        None | Some("memory") => Storage::Memory,
        Some("redis") => match conn.as_deref().map(parse_redis_target) {
            Some(Ok(target)) => {
                let (target, tls) = compile_redis_tls(raw, target, files, errs);
                let timeout = raw
                    .databroker_storage_timeout
                    .map(|d| d.0)
                    .unwrap_or(Duration::from_millis(50));
                if timeout.is_zero() {
                    errs.push("databroker_storage_timeout", "must be more than 0");
                }
                Storage::Redis(RedisSettings {
                    target,
                    prefix: raw
                        .databroker_storage_key_prefix
                        .clone()
                        .unwrap_or_else(|| "vallum:".into()),
                    timeout,
                    cache_ttl: cache_ttl(raw),
                    cache_max_stale: cache_max_stale(raw),
                    tls,
                })
            }
            Some(Err(reason)) => {
                errs.push("databroker_storage_connection_string", reason);
                Storage::Memory
            }
            None => {
                errs.push(
                    "databroker_storage_connection_string",
                    "required with databroker_storage_type: redis",
                );
                Storage::Memory
            }
        },
        Some("file") => match conn.as_deref().map(file_dir) {
            Some(Ok(dir)) => Storage::File(FileSettings {
                dir,
                cache_ttl: cache_ttl(raw),
                cache_max_stale: cache_max_stale(raw),
            }),
            Some(Err(reason)) => {
                errs.push("databroker_storage_connection_string", reason);
                Storage::Memory
            }
            None => {
                errs.push(
                    "databroker_storage_connection_string",
                    "required with databroker_storage_type: file (the directory, e.g. file:///var/lib/vallum/databroker)",
                );
                Storage::Memory
            }
        },
        Some(other) => {
            errs.push(
                "databroker_storage_type",
                format!("unknown value {other:?}; expected memory, file or redis"),
            );
            Storage::Memory
        }
    }
}
