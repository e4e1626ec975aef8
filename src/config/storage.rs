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
    Postgres(super::postgres::PostgresSettings),
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
    pub tls: StoreTls,
}

/// Trust and client certificate (PEM) for a store reached over TLS (Redis or PostgreSQL).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreTls {
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

/// Reads a PEM file named by `key` (or, for `what`, a URL parameter), recording it for reloads.
pub(super) fn read_pem(
    key: &str,
    what: &str,
    path: &Option<String>,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Option<Vec<u8>> {
    let path = path.as_deref()?;
    files.push(path.into());
    match std::fs::read(path) {
        Ok(b) if b.windows(10).any(|w| w == b"-----BEGIN") => Some(b),
        Ok(_) => {
            errs.push(key, format!("{what}: not a PEM file"));
            None
        }
        Err(e) => {
            errs.push(key, format!("cannot read {what}: {e}"));
            None
        }
    }
}

/// `databroker_storage_ca_file`, `_cert_file` and `_key_file`, for Redis and PostgreSQL alike.
fn store_tls_files(
    raw: &RawSettings,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> StoreTls {
    let mut read = |key: &str, path: &Option<String>| {
        read_pem(key, path.as_deref().unwrap_or_default(), path, files, errs)
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
    StoreTls { ca_pem, client }
}

/// `databroker_storage_*` TLS keys: only with `rediss://`. Skipping verification is spelled the
/// way the redis crate reads it (`#insecure`).
fn compile_redis_tls(
    raw: &RawSettings,
    target: RedisTarget,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> (RedisTarget, StoreTls) {
    let tls_url = match &target {
        RedisTarget::Single(u) => u.starts_with("rediss://"),
        RedisTarget::Cluster(n) => n.iter().all(|u| u.starts_with("rediss://")),
    };
    let StoreTls { ca_pem, client } = store_tls_files(raw, files, errs);
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
    (target, StoreTls { ca_pem, client })
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

/// `databroker_storage_timeout`: the bound on each store call (Redis and PostgreSQL).
fn store_timeout(raw: &RawSettings, errs: &mut Errors) -> Duration {
    let timeout = raw
        .databroker_storage_timeout
        .map(|d| d.0)
        .unwrap_or(Duration::from_millis(50));
    if timeout.is_zero() {
        errs.push("databroker_storage_timeout", "must be more than 0");
    }
    timeout
}

fn redis_storage(
    raw: &RawSettings,
    conn: &str,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Result<Storage, String> {
    let (target, tls) = compile_redis_tls(raw, parse_redis_target(conn)?, files, errs);
    Ok(Storage::Redis(RedisSettings {
        target,
        prefix: raw
            .databroker_storage_key_prefix
            .clone()
            .unwrap_or_else(|| "vallum:".into()),
        timeout: store_timeout(raw, errs),
        cache_ttl: cache_ttl(raw),
        cache_max_stale: cache_max_stale(raw),
        tls,
    }))
}

fn postgres_storage(
    raw: &RawSettings,
    conn: &str,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Result<Storage, String> {
    let parsed = super::postgres::parse_url(conn)?;
    let key_tls = store_tls_files(raw, files, errs);
    let timings = (
        store_timeout(raw, errs),
        cache_ttl(raw),
        cache_max_stale(raw),
    );
    Ok(Storage::Postgres(super::postgres::compile(
        parsed,
        key_tls,
        raw.databroker_storage_tls_skip_verify,
        timings,
        files,
        errs,
    )))
}

pub(super) fn compile_storage(
    raw: &RawSettings,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Storage {
    const KEY: &str = "databroker_storage_connection_string";
    let conn = super::auth::inline_or_file(
        raw.databroker_storage_connection_string.as_deref(),
        &raw.databroker_storage_connection_string_file,
        KEY,
        files,
        errs,
    )
    .map(|c| c.trim().to_string());
    let kind = raw.databroker_storage_type.as_deref().unwrap_or("memory");
    let example = match kind {
        "memory" => return Storage::Memory,
        "redis" => "redis://host:6379",
        "file" => "the directory, e.g. file:///var/lib/vallum/databroker",
        "postgres" => "postgres://user:password@host:5432/database",
        other => {
            errs.push(
                "databroker_storage_type",
                format!("unknown value {other:?}; expected memory, file, redis or postgres"),
            );
            return Storage::Memory;
        }
    };
    let Some(conn) = conn else {
        errs.push(
            KEY,
            format!("required with databroker_storage_type: {kind} ({example})"),
        );
        return Storage::Memory;
    };
    let compiled = match kind {
        "redis" => redis_storage(raw, &conn, files, errs),
        "postgres" => postgres_storage(raw, &conn, files, errs),
        _ => file_dir(&conn).map(|dir| {
            Storage::File(FileSettings {
                dir,
                cache_ttl: cache_ttl(raw),
                cache_max_stale: cache_max_stale(raw),
            })
        }),
    };
    compiled.unwrap_or_else(|reason| {
        errs.push(KEY, reason);
        Storage::Memory
    })
}
