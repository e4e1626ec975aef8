//! GitHub as the identity provider (`idp_provider: github`): OAuth 2.0, not OpenID Connect. There
//! is no ID token: who signed in is read from GitHub's REST API with the access token — the
//! user (`login` is the subject, as in Pomerium), the primary verified e-mail, and team
//! memberships as groups (`org/team-slug`, which Pomerium's open-source release does not read).
//! GitHub's tokens do not expire and come without a refresh token; the access token itself
//! re-reads the user when the claims are due for a refresh, so a revoked token or a changed
//! team ends or updates the session.

use super::oidc::{Identity, IdpError};
use crate::config::idp::IdpSettings;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;
use url::Url;

const DEFAULT_URL: &str = "https://github.com";
const API: &str = "https://api.github.com";
/// Team pages read at most (100 teams each): a bound on what one sign-in costs.
const MAX_TEAM_PAGES: usize = 10;

pub struct Github {
    settings: IdpSettings,
    http: reqwest::Client,
    redirect_url: Url,
    /// The REST API root: `api.github.com` for github.com, else the provider URL itself (a
    /// GitHub Enterprise Server's API root, as Pomerium reads it).
    api: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct User {
    login: String,
    id: Option<u64>,
    name: Option<String>,
    avatar_url: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

#[derive(Deserialize)]
struct Team {
    slug: String,
    organization: Org,
}

#[derive(Deserialize)]
struct Org {
    login: String,
}

impl Github {
    pub fn new(settings: IdpSettings, redirect_url: Url) -> Result<Github, IdpError> {
        let http = super::bounded::client().map_err(|e| IdpError::Discovery(e.to_string()))?;
        let base = settings.issuer.as_str().trim_end_matches('/');
        let api = if base == DEFAULT_URL {
            API.to_string()
        } else {
            base.to_string()
        };
        Ok(Github {
            settings,
            http,
            redirect_url,
            api,
        })
    }

    pub fn settings(&self) -> &IdpSettings {
        &self.settings
    }

    fn base(&self) -> &str {
        self.settings.issuer.as_str().trim_end_matches('/')
    }

    /// Whether GitHub's API answers now (readiness).
    pub async fn probe(&self, timeout: Duration) -> Result<(), IdpError> {
        let r = self
            .http
            .get(&self.api)
            .header("user-agent", "vallum")
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| IdpError::Discovery(e.to_string()))?;
        match r.status().is_server_error() {
            false => Ok(()),
            true => Err(IdpError::Discovery(format!("status {}", r.status()))),
        }
    }

    /// GitHub's authorization URL for one sign-in attempt (PKCE S256; no nonce without an ID
    /// token).
    pub fn authorize_url(&self, state: &str, pkce_verifier: &str) -> Url {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(pkce_verifier.as_bytes()));
        let mut url = Url::parse(&format!("{}/login/oauth/authorize", self.base()))
            .unwrap_or_else(|_| self.settings.issuer.clone());
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.settings.client_id)
                .append_pair("redirect_uri", self.redirect_url.as_str())
                .append_pair("scope", &self.settings.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            for (k, v) in &self.settings.request_params {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// Exchanges the code for an access token, then reads the user with it.
    pub async fn exchange(&self, code: &str, pkce_verifier: &str) -> Result<Identity, IdpError> {
        let r = self
            .http
            .post(format!("{}/login/oauth/access_token", self.base()))
            .header("accept", "application/json")
            .header("user-agent", "vallum")
            .form(&[
                ("client_id", self.settings.client_id.as_str()),
                ("client_secret", self.settings.client_secret.as_str()),
                ("code", code),
                ("redirect_uri", self.redirect_url.as_str()),
                ("code_verifier", pkce_verifier),
            ])
            .send()
            .await
            .map_err(|e| IdpError::Unreachable(e.to_string()))?;
        let status = r.status();
        let body: TokenResponse = json_body(r)
            .await
            .map_err(|e| IdpError::Exchange(format!("status {status}: {e}")))?;
        // GitHub answers a refused code with 200 and an `error` field.
        let access = match (body.access_token, body.error) {
            (Some(t), None) if !t.is_empty() => t,
            (_, e) => {
                let why = e.unwrap_or_else(|| format!("status {status}, no access token"));
                let detail = body.error_description.unwrap_or_default();
                return Err(IdpError::Exchange(
                    format!("{why} {detail}").trim().to_string(),
                ));
            }
        };
        self.identity(&access).await
    }

    /// Reads the user again with the access token (GitHub's "refresh"): a token GitHub no
    /// longer accepts ends the session.
    pub async fn refresh(&self, access_token: &str) -> Result<Identity, IdpError> {
        self.identity(access_token).await.map_err(|e| match e {
            IdpError::UserInfo(why) => IdpError::RefreshRejected(why),
            other => other,
        })
    }

    /// The claims of a GitHub access token presented as a bearer token.
    pub async fn userinfo_claims(
        &self,
        access_token: &str,
    ) -> Result<Map<String, Value>, IdpError> {
        self.identity(access_token).await.map(|i| i.claims)
    }

    async fn identity(&self, access: &str) -> Result<Identity, IdpError> {
        let user: User = self.get(access, "/user").await?;
        let emails: Vec<Email> = self.get(access, "/user/emails").await?;
        let email = emails
            .into_iter()
            .find(|e| e.primary && e.verified)
            .map(|e| e.email);
        let mut groups = Vec::new();
        for page in 1..=MAX_TEAM_PAGES {
            let teams: Vec<Team> = match self
                .get(access, &format!("/user/teams?per_page=100&page={page}"))
                .await
            {
                Ok(t) => t,
                // Without `read:org` GitHub refuses the team list: no groups, not no sign-in.
                Err(IdpError::Unreachable(why)) if !why.contains("rate-limited") => {
                    tracing::warn!(error = %why, "cannot read the user's GitHub teams (is read:org among idp_scopes?); signing in without groups");
                    break;
                }
                Err(e) => return Err(e),
            };
            let last = teams.len() < 100;
            groups.extend(
                teams
                    .into_iter()
                    .map(|t| format!("{}/{}", t.organization.login, t.slug)),
            );
            if last {
                break;
            }
        }
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(user.login));
        claims.insert("user".into(), json!(user.login));
        if let Some(id) = user.id {
            claims.insert("github_id".into(), json!(id));
        }
        if let Some(n) = &user.name {
            claims.insert("name".into(), json!(n));
        }
        if let Some(p) = &user.avatar_url {
            claims.insert("picture".into(), json!(p));
        }
        if let Some(e) = &email {
            claims.insert("email".into(), json!(e));
            claims.insert("email_verified".into(), json!(true));
        }
        claims.insert(self.settings.groups_claim.clone(), json!(groups));
        Ok(Identity {
            user_id: user.login,
            email,
            name: user.name,
            groups,
            claims,
            id_token: String::new(),
            access_token: access.to_string(),
            // The credential a refresh uses: GitHub has no refresh token and its access token
            // does not expire, so the access token re-reads the user (`refresh`).
            refresh_token: Some(access.to_string()),
            access_expires_at: None,
        })
    }

    /// One API call; 401 means the token is not (or no longer) accepted, a rate limit or a 5xx
    /// means "try later".
    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        access: &str,
        path: &str,
    ) -> Result<T, IdpError> {
        let r = self
            .http
            .get(format!("{}{path}", self.api))
            .bearer_auth(access)
            .header("accept", "application/vnd.github+json")
            .header("user-agent", "vallum")
            .send()
            .await
            .map_err(|e| IdpError::Unreachable(e.to_string()))?;
        let status = r.status();
        let limited = status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || (status == reqwest::StatusCode::FORBIDDEN
                && r.headers()
                    .get("x-ratelimit-remaining")
                    .is_some_and(|v| v == "0"));
        if limited {
            return Err(IdpError::Unreachable(format!(
                "GitHub rate-limited {path}; try again later"
            )));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(IdpError::UserInfo(format!(
                "GitHub refused the token on {path}"
            )));
        }
        if !status.is_success() {
            return Err(IdpError::Unreachable(format!(
                "GitHub answered {status} on {path}"
            )));
        }
        json_body(r)
            .await
            .map_err(|e| IdpError::UserInfo(format!("{path}: {e}")))
    }
}

/// A JSON body, read within the bound every IdP response has.
async fn json_body<T: for<'de> Deserialize<'de>>(r: reqwest::Response) -> Result<T, String> {
    let bytes = super::bounded::read_body(r)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}
