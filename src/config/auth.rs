//! Sign-in settings: the identity provider, the authenticate service URL, cookies and the two
//! secrets. Compiled once per config; the secrets Vallum generates when none are configured are
//! generated once per process, so a reload does not sign everyone out.

use super::error::Errors;
use super::raw::RawSettings;
use crate::crypto::Key;
use crate::headers::jwt::Signer;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub name: String,
    /// The authenticate host's own session cookie, `{name}_authenticate`.
    pub authenticate_name: String,
    pub domain: Option<String>,
    pub expire: Duration,
    pub http_only: bool,
    pub same_site: SameSite,
    pub secure: bool,
}

/// Which roles this process plays (Pomerium's `services`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Services {
    All,
    Authenticate,
    Proxy,
}

#[derive(Clone)]
pub struct IdpSettings {
    pub provider: String,
    pub issuer: Url,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub request_params: Vec<(String, String)>,
    pub groups_claim: String,
    pub refresh_claims_interval: Duration,
}

impl std::fmt::Debug for IdpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpSettings")
            .field("provider", &self.provider)
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub services: Services,
    /// External URL of the authenticate service; its host serves sign-in.
    pub authenticate_url: Url,
    /// `host` or `host:port` of `authenticate_url`, lower-case, as it appears in `Host`.
    pub authenticate_host: String,
    /// WebAuthn device types (`device_types`; set from the global settings after compile).
    pub device_types: Vec<super::devices::DeviceType>,
    /// The relying-party name browsers show during WebAuthn ceremonies (`branding_name`).
    pub rp_name: String,
    pub idp: Option<IdpSettings>,
    pub cookie: CookieSettings,
    pub cookie_secret: Key,
    /// Derived once per snapshot from `cookie_secret`: every signed-in request opens its cookie
    /// with it, and HKDF per request would cost more than the AEAD itself.
    pub session_cookie_key: Key,
    /// Session cookies already opened with `session_cookie_key` (per snapshot).
    pub opened_cookies: std::sync::Arc<crate::session::cookie::OpenedCookies>,
    pub shared_secret: Key,
    pub signout_redirect_url: Option<Url>,
    /// Signs `X-Pomerium-Jwt-Assertion`; its public key is at `/.well-known/pomerium/jwks.json`.
    pub signer: Arc<Signer>,
    /// `X-Pomerium-Claim-*` headers: (header, claim).
    pub claim_headers: Vec<(http::HeaderName, String)>,
    /// Pomerium's `pass_identity_headers` (routes may override).
    pub pass_identity_headers: bool,
    /// `jwt_issuer_format: uri` → `iss` is `https://host/`, else the bare host.
    pub issuer_uri: bool,
    /// `runtime_flags.pomerium_jwt_endpoint`: serve `/.pomerium/jwt` (off by default, as in Pomerium).
    pub jwt_endpoint: bool,
    /// True when either secret was generated for this process (single node only).
    pub generated_secrets: bool,
    pub storage: Storage,
    /// Hosts a programmatic login may return its token to (lower-case). `localhost` also admits
    /// the loopback addresses.
    pub programmatic_redirects: Vec<String>,
    pub bearer: BearerFormat,
    pub access_token_audiences: Vec<String>,
}

/// What an `Authorization: Bearer <token>` header carries (`bearer_token_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BearerFormat {
    /// A Vallum (Pomerium) session token from the programmatic login (`Bearer Pomerium-…`).
    #[default]
    Default,
    /// An access token from the IdP: a JWT checked against its keys and the allowed audiences,
    /// or an opaque token checked at the userinfo endpoint.
    IdpAccessToken,
    /// An ID token from the IdP, checked against its keys with this client as audience.
    IdpIdentityToken,
}

pub fn bearer_format(v: Option<&str>, path: &str, errs: &mut Errors) -> Option<BearerFormat> {
    match v? {
        "default" => Some(BearerFormat::Default),
        "idp_access_token" => Some(BearerFormat::IdpAccessToken),
        "idp_identity_token" => Some(BearerFormat::IdpIdentityToken),
        other => {
            errs.push(
                path,
                format!("unknown value {other:?}; expected default, idp_access_token or idp_identity_token"),
            );
            None
        }
    }
}

/// Where sessions are kept (`databroker_storage_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Memory,
    Redis(RedisSettings),
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

fn compile_storage(
    raw: &RawSettings,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Storage {
    let conn = inline_or_file(
        &raw.databroker_storage_connection_string,
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
                    cache_ttl: raw
                        .databroker_cache_ttl
                        .map(|d| d.0)
                        .unwrap_or(Duration::from_secs(1)),
                    cache_max_stale: raw
                        .databroker_cache_max_stale
                        .map(|d| d.0)
                        .unwrap_or(Duration::from_secs(300)),
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
        Some(other) => {
            errs.push(
                "databroker_storage_type",
                format!("unknown value {other:?}; expected memory or redis"),
            );
            Storage::Memory
        }
    }
}

static RANDOM_COOKIE_SECRET: OnceLock<Key> = OnceLock::new();
static RANDOM_SHARED_SECRET: OnceLock<Key> = OnceLock::new();

/// The value of a key that also has a `_file` form (Pomerium's convention for secrets): inline,
/// or read from the file (which is then watched), without the trailing newline `echo > file`
/// leaves. Setting both is an error.
pub fn inline_or_file(
    inline: &Option<String>,
    file: &Option<String>,
    key: &str,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Option<String> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            errs.push(key, format!("{key} and {key}_file cannot both be set"));
            None
        }
        (Some(v), None) => Some(v.clone()),
        (None, Some(f)) => {
            files.push(f.into());
            match std::fs::read_to_string(f) {
                Ok(t) => Some(t.trim_end_matches(['\n', '\r']).to_string()),
                Err(e) => {
                    errs.push(format!("{key}_file"), format!("cannot read {f}: {e}"));
                    None
                }
            }
        }
        (None, None) => None,
    }
}

fn secret(
    inline: &Option<String>,
    file: &Option<String>,
    key: &str,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Option<Key> {
    let text = inline_or_file(inline, file, key, files, errs)?;
    if text != text.trim() {
        errs.push(key, "has surrounding whitespace");
        return None;
    }
    errs.check(key, Key::from_base64(&text))
}

pub fn compile(
    raw: &RawSettings,
    insecure: bool,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Option<AuthSettings> {
    let services = match raw.services.as_deref().unwrap_or("all") {
        "all" => Services::All,
        "authenticate" => Services::Authenticate,
        "proxy" => Services::Proxy,
        other => {
            errs.push(
                "services",
                format!("unknown value {other:?}; expected all, authenticate or proxy"),
            );
            Services::All
        }
    };
    let idp_keys_set =
        raw.idp_provider.is_some() || raw.idp_provider_url.is_some() || raw.idp_client_id.is_some();
    if raw.authenticate_service_url.is_none() && !idp_keys_set {
        if services != Services::All {
            errs.push(
                "services",
                "a split deployment needs authenticate_service_url and the idp_* keys",
            );
        }
        return None;
    }
    let Some(auth_url) = raw.authenticate_service_url.as_deref() else {
        errs.push(
            "authenticate_service_url",
            "required with an identity provider: the external URL of the sign-in host, e.g. https://authenticate.example.com \
             (Pomerium's hosted default is not available in Vallum)",
        );
        return None;
    };
    let authenticate_url = match Url::parse(auth_url) {
        Ok(u)
            if (u.scheme() == "https" || (insecure && u.scheme() == "http"))
                && u.host_str().is_some() =>
        {
            u
        }
        Ok(_) => {
            errs.push(
                "authenticate_service_url",
                "must be an https:// URL with a host (http:// only with insecure_server)",
            );
            return None;
        }
        Err(e) => {
            errs.push("authenticate_service_url", format!("not a URL: {e}"));
            return None;
        }
    };
    let authenticate_host = match authenticate_url.port() {
        Some(p) => format!("{}:{p}", authenticate_url.host_str().unwrap_or_default()),
        None => authenticate_url.host_str().unwrap_or_default().to_string(),
    }
    .to_ascii_lowercase();

    // A proxy-only node needs the IdP only to refresh sessions; the authenticate node signs in.
    let idp = if services == Services::Proxy && !idp_keys_set {
        None
    } else {
        compile_idp(raw, files, errs)
    };

    let same_site = match raw
        .cookie_same_site
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") | Some("lax") => SameSite::Lax,
        Some("strict") => SameSite::Strict,
        Some("none") => SameSite::None,
        Some(other) => {
            errs.push(
                "cookie_same_site",
                format!("unknown value {other:?}; expected lax, strict or none"),
            );
            SameSite::Lax
        }
    };
    let name = raw
        .cookie_name
        .clone()
        .unwrap_or_else(|| "_pomerium".into());
    let cookie = CookieSettings {
        authenticate_name: format!("{name}_authenticate"),
        name,
        domain: raw
            .cookie_domain
            .clone()
            .map(|d| d.trim_start_matches('.').to_ascii_lowercase()),
        expire: raw
            .cookie_expire
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(14 * 3600)),
        http_only: raw.cookie_http_only.unwrap_or(true),
        same_site,
        secure: !insecure,
    };
    if cookie.name.is_empty()
        || !cookie
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        errs.push(
            "cookie_name",
            "must be non-empty letters, digits, `_` or `-`",
        );
    }

    let cookie_secret = secret(
        &raw.cookie_secret,
        &raw.cookie_secret_file,
        "cookie_secret",
        files,
        errs,
    );
    let shared_secret = secret(
        &raw.shared_secret,
        &raw.shared_secret_file,
        "shared_secret",
        files,
        errs,
    );
    if services != Services::All && (cookie_secret.is_none() || shared_secret.is_none()) {
        errs.push(
            "shared_secret",
            "a split deployment needs the same cookie_secret and shared_secret on every process",
        );
    }
    let generated = cookie_secret.is_none() || shared_secret.is_none();
    let cookie_secret =
        cookie_secret.unwrap_or_else(|| RANDOM_COOKIE_SECRET.get_or_init(Key::random).clone());
    let shared_secret =
        shared_secret.unwrap_or_else(|| RANDOM_SHARED_SECRET.get_or_init(Key::random).clone());

    let signer = match inline_or_file(
        &raw.signing_key,
        &raw.signing_key_file,
        "signing_key",
        files,
        errs,
    ) {
        Some(pem) => errs.check("signing_key", Signer::from_pem(&pem)),
        None => errs.check("shared_secret", Signer::derived(&shared_secret)),
    };
    let signer = Arc::new(signer.or_else(|| Signer::derived(&shared_secret).ok())?);
    let claim_headers = compile_claim_headers(raw.jwt_claims_headers.as_ref(), errs);
    let issuer_uri = issuer_format(raw.jwt_issuer_format.as_deref(), "jwt_issuer_format", errs);
    let mut jwt_endpoint = false;
    for (flag, on) in &raw.runtime_flags {
        match flag.as_str() {
            "pomerium_jwt_endpoint" => jwt_endpoint = *on,
            other => errs.push(
                format!("runtime_flags.{other}"),
                "runtime flag not supported by Vallum (pomerium_jwt_endpoint is)",
            ),
        }
    }

    let signout_redirect_url =
        raw.signout_redirect_url
            .as_deref()
            .and_then(|u| match Url::parse(u) {
                Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Some(u),
                _ => {
                    errs.push("signout_redirect_url", "must be an absolute http(s) URL");
                    None
                }
            });

    let storage = compile_storage(raw, files, errs);
    if services != Services::All && storage == Storage::Memory {
        errs.push(
            "databroker_storage_type",
            "a split deployment needs a shared store: set redis",
        );
    }

    Some(AuthSettings {
        services,
        authenticate_url,
        authenticate_host,
        device_types: super::devices::builtin(),
        rp_name: "Vallum".into(),
        idp,
        cookie,
        session_cookie_key: cookie_secret.derive("vallum session cookie"),
        opened_cookies: Default::default(),
        cookie_secret,
        shared_secret,
        signout_redirect_url,
        generated_secrets: generated,
        storage,
        bearer: bearer_format(
            raw.bearer_token_format.as_deref(),
            "bearer_token_format",
            errs,
        )
        .unwrap_or_default(),
        access_token_audiences: raw
            .idp_access_token_allowed_audiences
            .clone()
            .unwrap_or_default(),
        programmatic_redirects: raw
            .programmatic_redirect_domain_whitelist
            .clone()
            .unwrap_or_else(|| vec!["localhost".into()])
            .into_iter()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect(),
        signer,
        claim_headers,
        pass_identity_headers: raw.pass_identity_headers.unwrap_or(false),
        issuer_uri,
        jwt_endpoint,
    })
}

/// `hostOnly` (default) or `uri`.
pub fn issuer_format(v: Option<&str>, key: &str, errs: &mut Errors) -> bool {
    match v {
        None | Some("hostOnly") | Some("") => false,
        Some("uri") => true,
        Some(other) => {
            errs.push(
                key,
                format!("unknown value {other:?}; expected hostOnly or uri"),
            );
            false
        }
    }
}

/// A list of claims (→ `X-Pomerium-Claim-<Claim>`) or a map of header → claim.
fn compile_claim_headers(
    v: Option<&serde_yaml_ng::Value>,
    errs: &mut Errors,
) -> Vec<(http::HeaderName, String)> {
    use crate::policy::matchers::scalar;
    use serde_yaml_ng::Value;
    let pairs: Vec<(String, String)> = match v {
        None => Vec::new(),
        Some(Value::Sequence(s)) => s
            .iter()
            .filter_map(scalar)
            .map(|c| (format!("X-Pomerium-Claim-{c}"), c))
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| (format!("X-Pomerium-Claim-{c}"), c.to_string()))
            .collect(),
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((scalar(k)?, scalar(v)?)))
            .collect(),
        Some(_) => {
            errs.push(
                "jwt_claims_headers",
                "expected a list of claims or a map of header to claim",
            );
            Vec::new()
        }
    };
    let mut out = Vec::new();
    for (h, c) in pairs {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => out.push((name, c)),
            Err(_) => errs.push(format!("jwt_claims_headers.{h}"), "not a valid header name"),
        }
    }
    out
}

fn compile_idp(
    raw: &RawSettings,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Option<IdpSettings> {
    let provider = raw
        .idp_provider
        .clone()
        .unwrap_or_else(|| "oidc".into())
        .to_ascii_lowercase();
    if ![
        "oidc", "google", "okta", "auth0", "azure", "keycloak", "onelogin", "ping", "cognito",
        "gitlab",
    ]
    .contains(&provider.as_str())
    {
        errs.push(
            "idp_provider",
            format!("{provider:?} is not supported; use oidc (any OpenID Connect provider with discovery) or google, okta, auth0, azure, keycloak"),
        );
    }
    let issuer = match raw.idp_provider_url.as_deref() {
        Some(u) => match Url::parse(u) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Some(u),
            _ => {
                errs.push(
                    "idp_provider_url",
                    "must be the provider's issuer URL, e.g. https://accounts.google.com",
                );
                None
            }
        },
        None if provider == "google" => Url::parse("https://accounts.google.com").ok(),
        None => {
            errs.push(
                "idp_provider_url",
                "required: the OpenID Connect issuer URL (discovery is read from it)",
            );
            None
        }
    };
    let client_id = raw.idp_client_id.clone().unwrap_or_default();
    if client_id.is_empty() {
        errs.push(
            "idp_client_id",
            "required: the client id registered at the identity provider",
        );
    }
    let client_secret = inline_or_file(
        &raw.idp_client_secret,
        &raw.idp_client_secret_file,
        "idp_client_secret",
        files,
        errs,
    )
    .unwrap_or_default();
    let scopes = raw
        .idp_scopes
        .as_ref()
        .map(|s| s.0.clone())
        .unwrap_or_else(|| {
            ["openid", "profile", "email", "offline_access"]
                .map(String::from)
                .to_vec()
        });
    if !scopes.iter().any(|s| s == "openid") {
        errs.push("idp_scopes", "must include openid");
    }
    Some(IdpSettings {
        provider,
        issuer: issuer?,
        client_id,
        client_secret,
        scopes,
        request_params: raw
            .idp_request_params
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect(),
        groups_claim: raw
            .idp_groups_claim
            .clone()
            .unwrap_or_else(|| "groups".into()),
        refresh_claims_interval: raw
            .idp_refresh_claims_interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(600)),
    })
}
