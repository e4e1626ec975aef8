//! `databroker_storage_type: postgres`: the connection string as Pomerium (pgx) reads it, checked
//! here without connecting. libpq's TLS parameters (`sslmode` with all six values, `sslrootcert`,
//! `sslcert`, `sslkey`) and pgx's pool parameters are taken out of the URL and compiled into
//! typed settings; the rest must be something the PostgreSQL client understands.

use super::error::Errors;
use super::storage::StoreTls;
use std::str::FromStr;
use std::time::Duration;

/// libpq's `sslmode`: whether to encrypt and what to check of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// `allow` and `prefer` (libpq's default): TLS when the server offers it, unverified.
    Prefer,
    /// TLS or nothing; the certificate is verified against `sslrootcert` when one is given (as
    /// libpq does), else not at all.
    Require,
    /// TLS, the chain verified, any host name.
    VerifyCa,
    /// TLS, the chain and the host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(v: &str) -> Result<SslMode, String> {
        Ok(match v {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                "sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ))
            }
        })
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The URL without the parameters compiled here, as the PostgreSQL client reads it.
    pub url: String,
    pub ssl: SslMode,
    /// Trust (`sslrootcert` or `databroker_storage_ca_file`) and client certificate.
    pub tls: StoreTls,
    /// `databroker_storage_tls_skip_verify`: encrypt, verify nothing (tests only).
    pub skip_verify: bool,
    /// pgx's `pool_max_conns`.
    pub pool_max: usize,
    /// Bound on each store call, waiting for a pooled connection included; also the server's
    /// `statement_timeout` on pooled connections, so a statement the gateway gave up on does not
    /// keep running.
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub cache_max_stale: Duration,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: not shown.
        f.debug_struct("PostgresSettings")
            .field("ssl", &self.ssl)
            .field("custom_ca", &self.tls.ca_pem.is_some())
            .field("client_cert", &self.tls.client.is_some())
            .field("skip_verify", &self.skip_verify)
            .field("pool_max", &self.pool_max)
            .field("timeout", &self.timeout)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_max_stale", &self.cache_max_stale)
            .finish()
    }
}

/// pgx pool parameters that have no counterpart here; accepted so a Pomerium URL works.
const PGX_IGNORED: &[&str] = &[
    "pool_min_conns",
    "pool_min_idle_conns",
    "pool_max_conn_lifetime",
    "pool_max_conn_lifetime_jitter",
    "pool_max_conn_idle_time",
    "pool_health_check_period",
    "statement_cache_capacity",
    "description_cache_capacity",
    "default_query_exec_mode",
    "min_read_buffer_size",
];

/// What the URL says, before files are read.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedUrl {
    pub url: String,
    pub ssl: SslMode,
    pub rootcert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub pool_max: Option<usize>,
    pub ignored: Vec<String>,
}

/// Splits a `postgres://` / `postgresql://` URL into what Vallum handles and what the client
/// reads, and checks the latter with the client's own parser. Errors never repeat the URL (it
/// may hold a password).
pub fn parse_url(conn: &str) -> Result<ParsedUrl, String> {
    if !(conn.starts_with("postgres://") || conn.starts_with("postgresql://")) {
        return Err("expected postgres://[user[:password]@]host[:port]/database[?param=value…] (or postgresql://)".into());
    }
    let (base, query) = conn.split_once('?').unwrap_or((conn, ""));
    let mut out = ParsedUrl {
        url: String::new(),
        ssl: SslMode::Prefer,
        rootcert: None,
        cert: None,
        key: None,
        pool_max: None,
        ignored: Vec::new(),
    };
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .map_err(|_| format!("parameter {k}: not UTF-8"))?
            .into_owned();
        match k {
            "sslmode" => out.ssl = SslMode::parse(&value)?,
            "sslrootcert" => out.rootcert = Some(value),
            "sslcert" => out.cert = Some(value),
            "sslkey" => out.key = Some(value),
            "pool_max_conns" => match value.parse::<usize>() {
                Ok(n) if n > 0 => out.pool_max = Some(n),
                _ => return Err("pool_max_conns must be a whole number above 0".into()),
            },
            k if PGX_IGNORED.contains(&k) => out.ignored.push(k.to_string()),
            _ => rest.push(pair),
        }
    }
    out.url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    tokio_postgres::Config::from_str(&out.url)
        .map_err(|e| format!("not a valid PostgreSQL URL ({e})"))?;
    Ok(out)
}

/// pgx's default pool size: the number of CPUs, at least 4.
fn default_pool_max() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
        .max(4)
}

/// The compiled settings. `sslrootcert`/`sslcert`/`sslkey` in the URL and Pomerium's
/// `databroker_storage_ca_file`/`_cert_file`/`_key_file` are the same thing said two ways; the
/// URL wins where both are set.
pub(super) fn compile(
    parsed: ParsedUrl,
    key_tls: StoreTls,
    skip_verify: bool,
    timings: (Duration, Duration, Duration),
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> PostgresSettings {
    const KEY: &str = "databroker_storage_connection_string";
    for p in &parsed.ignored {
        errs.warn(
            KEY,
            format!("the pgx parameter {p} has no effect in Vallum"),
        );
    }
    let mut read = |what: &str, path: &Option<String>| {
        super::storage::read_pem(
            KEY,
            &format!("{what}={}", path.as_deref()?),
            path,
            files,
            errs,
        )
    };
    let ca_pem = read("sslrootcert", &parsed.rootcert).or(key_tls.ca_pem);
    let client = match (read("sslcert", &parsed.cert), read("sslkey", &parsed.key)) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => key_tls.client,
        _ => {
            errs.push(KEY, "set both sslcert and sslkey");
            None
        }
    };
    let tls = StoreTls { ca_pem, client };
    let ssl = match parsed.ssl {
        // libpq: with a root certificate, `require` verifies the chain.
        SslMode::Require if tls.ca_pem.is_some() => SslMode::VerifyCa,
        other => other,
    };
    if ssl == SslMode::Disable && (tls.ca_pem.is_some() || tls.client.is_some() || skip_verify) {
        errs.push(
            KEY,
            "TLS settings (sslrootcert, sslcert, databroker_storage_ca_file, _cert_file, _key_file, _tls_skip_verify) need an sslmode other than disable",
        );
    }
    let (timeout, cache_ttl, cache_max_stale) = timings;
    PostgresSettings {
        url: parsed.url,
        ssl,
        tls,
        skip_verify,
        pool_max: parsed.pool_max.unwrap_or_else(default_pool_max),
        timeout,
        cache_ttl,
        cache_max_stale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vallum_parameters_are_taken_out_and_the_rest_checked() {
        let p = parse_url(
            "postgresql://u:p%40ss@db:5432/vallum?sslmode=verify-full&application_name=gw&pool_max_conns=3&pool_min_conns=1",
        )
        .unwrap();
        assert_eq!(p.ssl, SslMode::VerifyFull);
        assert_eq!(p.pool_max, Some(3));
        assert_eq!(p.ignored, vec!["pool_min_conns".to_string()]);
        assert_eq!(
            p.url,
            "postgresql://u:p%40ss@db:5432/vallum?application_name=gw"
        );
        assert_eq!(
            parse_url("postgres://db/x").unwrap().ssl,
            SslMode::Prefer,
            "libpq's default"
        );
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for (url, says) in [
            ("redis://db:6379", "expected postgres://"),
            (
                "postgres://u:secret@db/x?sslmode=always",
                "sslmode=\"always\"",
            ),
            (
                "postgres://u:secret@db/x?pool_max_conns=0",
                "pool_max_conns",
            ),
            (
                "postgres://u:secret@db/x?frobnicate=1",
                "not a valid PostgreSQL URL",
            ),
            (
                "postgres://u:secret@db:notaport/x",
                "not a valid PostgreSQL URL",
            ),
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
