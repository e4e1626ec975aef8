//! The identity provider: `idp_provider`, `idp_provider_url`, the client credentials, scopes,
//! request parameters and how often claims are refreshed.

use super::auth::inline_or_file;
use super::error::Errors;
use super::raw::RawSettings;
use std::time::Duration;
use url::Url;

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
    /// The IdP posts its answer to the callback (`response_mode=form_post`, Apple's way).
    pub form_post: bool,
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

pub(super) fn compile_idp(
    raw: &RawSettings,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Option<IdpSettings> {
    let provider = raw
        .idp_provider
        .clone()
        .unwrap_or_else(|| "oidc".into())
        .to_ascii_lowercase();
    check_provider(&provider, "idp_provider", errs);
    let issuer = issuer(raw, &provider, errs);
    let client_id = raw.idp_client_id.clone().unwrap_or_default();
    if client_id.is_empty() {
        errs.push(
            "idp_client_id",
            "required: the client id registered at the identity provider",
        );
    }
    let client_secret = inline_or_file(
        raw.idp_client_secret.as_deref(),
        &raw.idp_client_secret_file,
        "idp_client_secret",
        files,
        errs,
    )
    .unwrap_or_default();
    let scopes = scopes(raw, &provider, errs);
    let request_params = request_params(raw, &provider);
    let form_post = posts_answer(&request_params);
    Some(IdpSettings {
        form_post,
        provider,
        issuer: issuer?,
        client_id,
        client_secret,
        scopes,
        request_params,
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

/// The `idp_provider` values Vallum signs in with.
pub(super) fn check_provider(provider: &str, key: &str, errs: &mut Errors) {
    if ![
        "oidc", "google", "okta", "auth0", "azure", "keycloak", "onelogin", "ping", "cognito",
        "gitlab", "github", "apple",
    ]
    .contains(&provider)
    {
        errs.push(
            key,
            format!("{provider:?} is not supported; use oidc (any OpenID Connect provider with discovery), github, or apple, google, gitlab, okta, auth0, azure, cognito, onelogin, ping, keycloak"),
        );
    }
}

/// `idp_provider_url`, or the provider's well-known one.
fn issuer(raw: &RawSettings, provider: &str, errs: &mut Errors) -> Option<Url> {
    issuer_url(
        raw.idp_provider_url.as_deref(),
        provider,
        "idp_provider_url",
        errs,
    )
}

/// An issuer URL as given, else the provider's well-known one.
pub(super) fn issuer_url(
    given: Option<&str>,
    provider: &str,
    key: &str,
    errs: &mut Errors,
) -> Option<Url> {
    let known = match provider {
        "google" => Some("https://accounts.google.com"),
        "gitlab" => Some("https://gitlab.com"),
        "github" => Some("https://github.com"),
        "apple" => Some("https://appleid.apple.com"),
        _ => None,
    };
    match (given, known) {
        (Some(u), _) => match Url::parse(u) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Some(u),
            _ => {
                errs.push(
                    key,
                    "must be the provider's issuer URL, e.g. https://accounts.google.com",
                );
                None
            }
        },
        (None, Some(k)) => Url::parse(k).ok(),
        (None, None) => {
            errs.push(
                key,
                "required: the OpenID Connect issuer URL (discovery is read from it)",
            );
            None
        }
    }
}

/// `idp_scopes`, or the provider's defaults (Pomerium's).
fn scopes(raw: &RawSettings, provider: &str, errs: &mut Errors) -> Vec<String> {
    let scopes = raw
        .idp_scopes
        .as_ref()
        .map(|s| s.0.clone())
        .unwrap_or_else(|| default_scopes(provider));
    let oidc_scoped = !matches!(provider, "github" | "apple");
    if oidc_scoped && !scopes.iter().any(|s| s == "openid") {
        errs.push("idp_scopes", "must include openid");
    }
    scopes
}

/// The provider's scopes when `idp_scopes` names none (Pomerium's defaults).
pub(super) fn default_scopes(provider: &str) -> Vec<String> {
    let d: &[&str] = match provider {
        // GitHub's OAuth scopes: the e-mail list and team membership.
        "github" => &["user:email", "read:org"],
        // Apple's; `openid` is always sent.
        "apple" => &["name", "email"],
        _ => &["openid", "profile", "email", "offline_access"],
    };
    d.iter().map(|s| s.to_string()).collect()
}

/// `idp_request_params`; Apple answers only by posting to the callback (Pomerium sets
/// `response_mode=form_post` for it too).
fn request_params(raw: &RawSettings, provider: &str) -> Vec<(String, String)> {
    let params: Vec<(String, String)> = raw
        .idp_request_params
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    with_provider_params(params, provider)
}

/// Whether the provider is asked to post its answer to the callback (`response_mode=form_post`).
pub(super) fn posts_answer(params: &[(String, String)]) -> bool {
    params
        .iter()
        .any(|(k, v)| k == "response_mode" && v == "form_post")
}

/// Apple answers only by posting to the callback.
pub(super) fn with_provider_params(
    mut params: Vec<(String, String)>,
    provider: &str,
) -> Vec<(String, String)> {
    if provider == "apple" && !params.iter().any(|(k, _)| k == "response_mode") {
        params.push(("response_mode".into(), "form_post".into()));
    }
    params
}
