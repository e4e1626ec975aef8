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
    if ![
        "oidc", "google", "okta", "auth0", "azure", "keycloak", "onelogin", "ping", "cognito",
        "gitlab", "github",
    ]
    .contains(&provider.as_str())
    {
        errs.push(
            "idp_provider",
            format!("{provider:?} is not supported; use oidc (any OpenID Connect provider with discovery), github, or google, gitlab, okta, auth0, azure, cognito, onelogin, ping, keycloak"),
        );
    }
    let github = provider == "github";
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
        None if provider == "gitlab" => Url::parse("https://gitlab.com").ok(),
        None if github => Url::parse("https://github.com").ok(),
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
        raw.idp_client_secret.as_deref(),
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
        .unwrap_or_else(|| match github {
            // GitHub's OAuth scopes (Pomerium's defaults): the e-mail list and team membership.
            true => ["user:email", "read:org"].map(String::from).to_vec(),
            false => ["openid", "profile", "email", "offline_access"]
                .map(String::from)
                .to_vec(),
        });
    if !github && !scopes.iter().any(|s| s == "openid") {
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
