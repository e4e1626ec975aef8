//! The identity provider a node signs users in with: OpenID Connect (every `idp_provider` but
//! `github`) or GitHub's OAuth 2.0. One type for the sign-in, refresh, bearer and sign-out code
//! to hold, so none of it branches on the provider.

use super::github::Github;
use super::oidc::{Identity, IdpError, Oidc};
use crate::config::idp::IdpSettings;
use serde_json::{Map, Value};
use std::time::Duration;
use url::Url;

pub enum Provider {
    Oidc(Box<Oidc>),
    Github(Box<Github>),
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provider::Oidc(o) => o.fmt(f),
            Provider::Github(_) => f.write_str("Github"),
        }
    }
}

impl Provider {
    /// Reads what the provider publishes (OpenID Connect discovery; nothing for GitHub).
    pub async fn discover(settings: IdpSettings, redirect_url: Url) -> Result<Provider, IdpError> {
        if settings.provider == "github" {
            return Github::new(settings, redirect_url).map(|g| Provider::Github(Box::new(g)));
        }
        Oidc::discover(settings, redirect_url)
            .await
            .map(|o| Provider::Oidc(Box::new(o)))
    }

    pub async fn probe(&self, timeout: Duration) -> Result<(), IdpError> {
        match self {
            Provider::Oidc(o) => o.probe(timeout).await,
            Provider::Github(g) => g.probe(timeout).await,
        }
    }

    pub fn settings(&self) -> &IdpSettings {
        match self {
            Provider::Oidc(o) => o.settings(),
            Provider::Github(g) => g.settings(),
        }
    }

    pub fn authorize_url(&self, state: &str, nonce: &str, pkce_verifier: &str) -> Url {
        match self {
            Provider::Oidc(o) => o.authorize_url(state, nonce, pkce_verifier),
            Provider::Github(g) => g.authorize_url(state, pkce_verifier),
        }
    }

    pub async fn exchange(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Identity, IdpError> {
        match self {
            Provider::Oidc(o) => o.exchange(code, pkce_verifier, nonce).await,
            Provider::Github(g) => g.exchange(code, pkce_verifier).await,
        }
    }

    /// Renews the session's identity; `RefreshRejected` means the session must end.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        previous_id_token: &str,
    ) -> Result<Identity, IdpError> {
        match self {
            Provider::Oidc(o) => o.refresh(refresh_token, previous_id_token).await,
            Provider::Github(g) => g.refresh(refresh_token).await,
        }
    }

    /// A JWT this provider issued, as a bearer token (GitHub issues none).
    pub async fn verify_jwt(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Map<String, Value>, IdpError> {
        match self {
            Provider::Oidc(o) => o.verify_jwt(token, audiences).await,
            Provider::Github(_) => Err(IdpError::IdToken(
                "GitHub issues no JWTs; present its access token".into(),
            )),
        }
    }

    /// The claims of an opaque access token, as the provider tells them.
    /// A back-channel logout token (OpenID Connect only; GitHub has no such thing).
    pub async fn verify_logout_token(
        &self,
        token: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, IdpError> {
        match self {
            Provider::Oidc(o) => o.verify_logout_token(token).await,
            Provider::Github(_) => Err(IdpError::IdToken(
                "GitHub does not send logout tokens".into(),
            )),
        }
    }

    pub async fn userinfo_claims(
        &self,
        access_token: &str,
    ) -> Result<Map<String, Value>, IdpError> {
        match self {
            Provider::Oidc(o) => o.userinfo_claims(access_token).await,
            Provider::Github(g) => g.userinfo_claims(access_token).await,
        }
    }

    /// Where to end the session at the provider too (GitHub has no such endpoint).
    pub fn end_session_url(&self, id_token_hint: &str, post_logout_redirect: &Url) -> Option<Url> {
        match self {
            Provider::Oidc(o) => o.end_session_url(id_token_hint, post_logout_redirect),
            Provider::Github(_) => None,
        }
    }
}
