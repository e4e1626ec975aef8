//! Sign-in settings: the identity provider, the authenticate service URL, cookies and the two
//! secrets. Compiled once per config; where no secrets are configured, the ones generated at boot
//! (`GeneratedSecrets`, passed in) are used, so a reload does not sign everyone out.

use super::error::Errors;
use super::idp::{compile_idp, IdpSettings};
use super::raw::RawSettings;
use super::storage::{compile_storage, Storage};
use crate::crypto::signing_key::SigningKey;
use crate::crypto::Key;
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
    pub shared_secret: Key,
    pub signout_redirect_url: Option<Url>,
    /// Signs `X-Pomerium-Jwt-Assertion` (the snapshot wraps it in a caching `Signer`); its
    /// public key is at `/.well-known/pomerium/jwks.json`.
    pub signing_key: SigningKey,
    /// `X-Pomerium-Claim-*` headers: (header, claim).
    pub claim_headers: Vec<(http::HeaderName, String)>,
    /// `jwt_groups_filter`: the groups every route's assertion and claim headers may carry
    /// (empty: no filter of its own).
    pub jwt_groups_filter: Vec<String>,
    /// Pomerium's `pass_identity_headers` (routes may override).
    pub pass_identity_headers: bool,
    /// `jwt_issuer_format: uri` → `iss` is `https://host/`, else the bare host.
    pub issuer_uri: bool,
    /// `runtime_flags.pomerium_jwt_endpoint`: serve `/.pomerium/jwt` (off by default, as in Pomerium).
    pub jwt_endpoint: bool,
    /// `runtime_flags.routes_portal`: serve `/.pomerium/routes` and `/.pomerium/api/v1/routes` (on
    /// by default, as in Pomerium).
    pub routes_portal: bool,
    /// True when either secret was generated for this process (single node only).
    pub generated_secrets: bool,
    pub storage: Storage,
    /// Hosts a programmatic login may return its token to (lower-case). `localhost` also admits
    /// the loopback addresses.
    pub programmatic_redirects: Vec<String>,
    pub bearer: BearerFormat,
    pub access_token_audiences: Vec<String>,
    /// `session_idle_timeout`: routes without their own end a session unused this long.
    pub idle_timeout: Option<std::time::Duration>,
    /// The authorization server for MCP clients (`config::mcp_auth`).
    pub mcp: super::mcp_auth::McpAuth,
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
    /// A JWT from one of the `identity_providers` (workload identities).
    Jwt,
}

pub fn bearer_format(v: Option<&str>, path: &str, errs: &mut Errors) -> Option<BearerFormat> {
    match v? {
        "default" => Some(BearerFormat::Default),
        "idp_access_token" => Some(BearerFormat::IdpAccessToken),
        "idp_identity_token" => Some(BearerFormat::IdpIdentityToken),
        "jwt" => Some(BearerFormat::Jwt),
        other => {
            errs.push(
                path,
                format!("unknown value {other:?}; expected default, idp_access_token, idp_identity_token or jwt"),
            );
            None
        }
    }
}

/// The secrets a process uses where the config sets none: generated once at boot and handed
/// to every compile, so a reload keeps the sessions and signatures made before it. A single
/// node only: a fleet must share configured secrets (refused otherwise).
#[derive(Debug, Clone)]
pub struct GeneratedSecrets {
    pub cookie_secret: Key,
    pub shared_secret: Key,
}

impl GeneratedSecrets {
    pub fn generate() -> GeneratedSecrets {
        GeneratedSecrets {
            cookie_secret: Key::random(),
            shared_secret: Key::random(),
        }
    }
}

/// The value of a key that also has a `_file` form (Pomerium's convention for secrets): inline,
/// or read from the file (which is then watched), without the trailing newline `echo > file`
/// leaves. Setting both is an error.
pub fn inline_or_file(
    inline: Option<&str>,
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
        (Some(v), None) => Some(v.to_string()),
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
    inline: Option<&str>,
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

fn services(raw: &RawSettings, errs: &mut Errors) -> Services {
    match raw.services.as_deref().unwrap_or("all") {
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
    }
}

/// `authenticate_service_url` and its `host[:port]` as it appears in `Host`.
fn authenticate_url(auth_url: &str, insecure: bool, errs: &mut Errors) -> Option<(Url, String)> {
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
    Some((authenticate_url, authenticate_host))
}

/// The `cookie_*` keys.
fn cookie(raw: &RawSettings, insecure: bool, errs: &mut Errors) -> CookieSettings {
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
    cookie
}

/// The configured secrets, or the process's generated ones (and whether any was generated).
fn secrets(
    raw: &RawSettings,
    services: Services,
    generated: &GeneratedSecrets,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> (Key, Key, bool) {
    let cookie_secret = secret(
        raw.cookie_secret.as_deref(),
        &raw.cookie_secret_file,
        "cookie_secret",
        files,
        errs,
    );
    let shared_secret = secret(
        raw.shared_secret.as_deref(),
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
    let generated_secrets = cookie_secret.is_none() || shared_secret.is_none();
    let cookie_secret = cookie_secret.unwrap_or_else(|| generated.cookie_secret.clone());
    let shared_secret = shared_secret.unwrap_or_else(|| generated.shared_secret.clone());
    (cookie_secret, shared_secret, generated_secrets)
}

/// `signing_key`(`_file`), else a key derived from `shared_secret`.
fn signing_key(
    raw: &RawSettings,
    shared_secret: &Key,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Option<SigningKey> {
    let signing_key = match inline_or_file(
        raw.signing_key.as_deref(),
        &raw.signing_key_file,
        "signing_key",
        files,
        errs,
    ) {
        Some(pem) => errs.check("signing_key", SigningKey::from_pem(&pem)),
        None => errs.check("shared_secret", SigningKey::derived(shared_secret)),
    };
    signing_key.or_else(|| SigningKey::derived(shared_secret).ok())
}

/// `runtime_flags` Vallum acts on: `pomerium_jwt_endpoint` (off by default) and `routes_portal`
/// (on), with Pomerium's defaults; any other flag is refused by name.
fn runtime_flags(raw: &RawSettings, errs: &mut Errors) -> (bool, bool) {
    let (mut jwt_endpoint, mut routes_portal) = (false, true);
    for (flag, on) in &raw.runtime_flags {
        match flag.as_str() {
            "pomerium_jwt_endpoint" => jwt_endpoint = *on,
            "routes_portal" => routes_portal = *on,
            flag if super::mcp_auth::FLAGS.contains(&flag) => {}
            other => errs.push(
                format!("runtime_flags.{other}"),
                "runtime flag not supported by Vallum (pomerium_jwt_endpoint, routes_portal, mcp and mcp_dynamic_client_registration are)",
            ),
        }
    }
    (jwt_endpoint, routes_portal)
}

/// `programmatic_redirect_domain_whitelist`, lower-case (`localhost` when unset, as in Pomerium).
fn programmatic_redirects(raw: &RawSettings) -> Vec<String> {
    raw.programmatic_redirect_domain_whitelist
        .clone()
        .unwrap_or_else(|| vec!["localhost".into()])
        .into_iter()
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

fn signout_redirect_url(raw: &RawSettings, errs: &mut Errors) -> Option<Url> {
    raw.signout_redirect_url
        .as_deref()
        .and_then(|u| match Url::parse(u) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Some(u),
            _ => {
                errs.push("signout_redirect_url", "must be an absolute http(s) URL");
                None
            }
        })
}

pub fn compile(
    raw: &RawSettings,
    insecure: bool,
    generated: &GeneratedSecrets,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Option<AuthSettings> {
    let services = services(raw, errs);
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
        let mut missing = Errors::default();
        missing.push(
            "authenticate_service_url",
            "required with an identity provider: the external URL of the sign-in host, e.g. https://authenticate.example.com \
             (Pomerium's hosted default is not available in Vallum)",
        );
        errs.defer_for_sign_in(missing);
        return None;
    };
    let (authenticate_url, authenticate_host) = authenticate_url(auth_url, insecure, errs)?;

    // A proxy-only node needs the IdP only to refresh sessions; the authenticate node signs in.
    let idp = match services == Services::Proxy && !idp_keys_set {
        true => None,
        false => idp_when_complete(raw, files, errs),
    };
    let cookie = cookie(raw, insecure, errs);
    let (cookie_secret, shared_secret, generated_secrets) =
        secrets(raw, services, generated, files, errs);
    let signing_key = signing_key(raw, &shared_secret, files, errs)?;
    let claim_headers = compile_claim_headers(raw.jwt_claims_headers.as_ref(), errs);
    let issuer_uri = issuer_format(raw.jwt_issuer_format.as_deref(), "jwt_issuer_format", errs);
    let (jwt_endpoint, routes_portal) = runtime_flags(raw, errs);
    let signout_redirect_url = signout_redirect_url(raw, errs);
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
        cookie_secret,
        shared_secret,
        signout_redirect_url,
        generated_secrets,
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
        idle_timeout: minute_or_more(raw.session_idle_timeout, "session_idle_timeout", errs)
            .flatten(),
        programmatic_redirects: programmatic_redirects(raw),
        signing_key,
        claim_headers,
        jwt_groups_filter: raw
            .jwt_groups_filter
            .clone()
            .map(|l| l.0)
            .unwrap_or_default(),
        pass_identity_headers: raw.pass_identity_headers.unwrap_or(false),
        issuer_uri,
        jwt_endpoint,
        routes_portal,
        mcp: super::mcp_auth::compile(
            &raw.runtime_flags,
            raw.mcp_allowed_client_id_domains.as_deref(),
            raw.mcp_allowed_as_metadata_domains.as_deref(),
            raw.mcp_access_token_lifetime,
            errs,
        ),
    })
}

/// The identity provider when its settings are complete; an incomplete one is an error only
/// once a route needs a signed-in user (`Errors::settle_sign_in`).
fn idp_when_complete(
    raw: &RawSettings,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Option<super::idp::IdpSettings> {
    let mut idp_errs = Errors::default();
    let idp = compile_idp(raw, files, &mut idp_errs);
    if idp_errs.is_empty() {
        return idp;
    }
    errs.defer_for_sign_in(idp_errs);
    None
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

/// `session_idle_timeout` (global or per route) and `max_auth_age`: `None` when unset, `Some(None)`
/// for `0s` (never), at least a minute otherwise (idle activity is recorded at a quarter of the
/// timeout, and IdP clocks are trusted to a minute, so shorter values could not be told from noise).
pub fn minute_or_more(
    raw: Option<super::duration::GoDuration>,
    key: &str,
    errs: &mut Errors,
) -> Option<Option<std::time::Duration>> {
    let d = raw?.0;
    if d.is_zero() {
        return Some(None);
    }
    if d < std::time::Duration::from_secs(60) {
        errs.push(key, "must be at least 1m (or 0s: never)");
        return Some(None);
    }
    Some(Some(d))
}
