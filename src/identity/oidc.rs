//! `openidconnect` does the protocol; this wraps it with the checks and policies Vallum wants:
//! an allow-list of asymmetric algorithms (never `none`, never HMAC), a bounded clock leeway, an
//! `iat` that is not in the future, single-flight rate-limited JWKS refetch, userinfo merged with a
//! `sub` check, and the groups claim.

use crate::config::idp::IdpSettings;
use arc_swap::ArcSwap;
use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AccessToken, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadataWithLogout,
    RedirectUrl, RefreshToken, Scope, TokenResponse,
};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// Claims about the token rather than the user: never merged from userinfo, never shown as user claims.
pub const PROTOCOL_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "nonce",
    "azp",
    "at_hash",
    "c_hash",
    "auth_time",
];

/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY: Duration = Duration::from_secs(60);
/// At most one JWKS refetch in this interval (an attacker's random `kid`s cannot hammer the IdP).
const JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);

const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    #[error("identity provider discovery failed: {0}")]
    Discovery(String),
    #[error("the identity provider refused the code exchange: {0}")]
    Exchange(String),
    #[error("the token response has no ID token")]
    NoIdToken,
    #[error("ID token rejected: {0}")]
    IdToken(String),
    #[error("userinfo rejected: {0}")]
    UserInfo(String),
    #[error("refresh rejected by the identity provider: {0}")]
    RefreshRejected(String),
    #[error("identity provider unreachable: {0}")]
    Unreachable(String),
}

/// Who signed in, with the tokens that prove it.
#[derive(Clone)]
pub struct Identity {
    pub user_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub claims: Map<String, Value>,
    pub id_token: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub access_expires_at: Option<u64>,
}

type Metadata = ProviderMetadataWithLogout;

/// The `openidconnect` client with the endpoints Vallum uses: authorization and token.
type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
>;

pub struct Oidc {
    settings: IdpSettings,
    http: reqwest::Client,
    metadata: Metadata,
    client: Client,
    jwks: ArcSwap<CoreJsonWebKeySet>,
    refetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.settings.issuer.as_str())
            .finish()
    }
}

fn http_client() -> Result<reqwest::Client, IdpError> {
    super::bounded::client().map_err(|e| IdpError::Discovery(e.to_string()))
}

impl Oidc {
    /// Reads `/.well-known/openid-configuration` and the JWKS.
    pub async fn discover(settings: IdpSettings, redirect_url: Url) -> Result<Oidc, IdpError> {
        let http = http_client()?;
        let issuer = IssuerUrl::new(settings.issuer.as_str().trim_end_matches('/').to_string())
            .map_err(|e| IdpError::Discovery(e.to_string()))?;
        let metadata = Metadata::discover_async(issuer, &super::bounded::Bounded(http.clone()))
            .await
            .map_err(|e| IdpError::Discovery(format!("{e}: {}", error_chain(&e))))?;
        let jwks = metadata.jwks().clone();
        let token_url = metadata.token_endpoint().cloned().ok_or_else(|| {
            IdpError::Discovery("the provider advertises no token_endpoint".into())
        })?;
        let redirect_url = RedirectUrl::from_url(redirect_url);
        let mut client = CoreClient::new(
            ClientId::new(settings.client_id.clone()),
            metadata.issuer().clone(),
            jwks.clone(),
        )
        .set_auth_uri(metadata.authorization_endpoint().clone())
        .set_token_uri(token_url)
        .set_redirect_uri(redirect_url.clone());
        if !settings.client_secret.is_empty() {
            client = client.set_client_secret(ClientSecret::new(settings.client_secret.clone()));
        }
        // The secret goes in the body where the provider takes it only there (Apple).
        if posts_secret(metadata.token_endpoint_auth_methods_supported()) {
            client = client.set_auth_type(openidconnect::AuthType::RequestBody);
        }
        Ok(Oidc {
            settings,
            http,
            client,
            metadata,
            jwks: ArcSwap::from_pointee(jwks),
            refetch: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether the IdP answers its discovery document now (readiness), within `timeout`.
    pub async fn probe(&self, timeout: Duration) -> Result<(), IdpError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.as_str().trim_end_matches('/')
        );
        let r = self
            .http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| IdpError::Discovery(e.to_string()))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(IdpError::Discovery(format!("status {}", r.status())))
        }
    }

    pub fn settings(&self) -> &IdpSettings {
        &self.settings
    }

    /// The IdP authorization URL for one sign-in attempt.
    pub fn authorize_url(&self, state: &str, nonce: &str, pkce_verifier: &str) -> Url {
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            pkce_verifier.to_string(),
        ));
        let client = &self.client;
        let (state, nonce) = (state.to_string(), nonce.to_string());
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for s in self.settings.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(s.clone()));
        }
        for (k, v) in &self.settings.request_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        req.url().0
    }

    /// Exchanges an authorization code and validates everything that came back.
    pub async fn exchange(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Identity, IdpError> {
        let resp = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&super::bounded::Bounded(self.http.clone()))
            .await
            .map_err(|e| IdpError::Exchange(format!("{e}: {}", error_chain(&e))))?;
        let id_token = resp.id_token().ok_or(IdpError::NoIdToken)?;
        let raw = id_token.to_string();
        self.verify_id_token(id_token, Some(nonce)).await?;
        let access = resp.access_token().secret().clone();
        let expires = resp
            .expires_in()
            .map(|d| crate::clock::unix_now() + d.as_secs());
        let refresh = resp.refresh_token().map(|r| r.secret().clone());
        self.identity(raw, access, refresh, expires).await
    }

    /// Uses a refresh token; `RefreshRejected` means the session must end.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        previous_id_token: &str,
    ) -> Result<Identity, IdpError> {
        let token = RefreshToken::new(refresh_token.to_string());
        let resp = self
            .client
            .exchange_refresh_token(&token)
            .request_async(&super::bounded::Bounded(self.http.clone()))
            .await
            .map_err(|e| match &e {
                openidconnect::RequestTokenError::ServerResponse(r) => {
                    IdpError::RefreshRejected(r.to_string())
                }
                other => IdpError::Unreachable(other.to_string()),
            })?;
        let raw = match resp.id_token() {
            Some(t) => {
                self.verify_id_token(t, None).await?;
                t.to_string()
            }
            None => previous_id_token.to_string(),
        };
        let access = resp.access_token().secret().clone();
        let expires = resp
            .expires_in()
            .map(|d| crate::clock::unix_now() + d.as_secs());
        let refresh = resp
            .refresh_token()
            .map(|r| r.secret().clone())
            .or(Some(refresh_token.to_string()));
        self.identity(raw, access, refresh, expires).await
    }

    fn verifier(&self, jwks: CoreJsonWebKeySet) -> CoreIdTokenVerifier<'static> {
        let secret = ClientSecret::new(self.settings.client_secret.clone());
        CoreIdTokenVerifier::new_confidential_client(
            ClientId::new(self.settings.client_id.clone()),
            secret,
            self.metadata.issuer().clone(),
            jwks,
        )
        .set_allowed_algs(ALLOWED_ALGS)
        // `exp` gets the leeway by evaluating it against a clock set back by it.
        .set_time_fn(|| chrono::Utc::now() - chrono::Duration::seconds(LEEWAY.as_secs() as i64))
        .set_issue_time_verifier_fn(|iat| {
            if iat > chrono::Utc::now() + chrono::Duration::seconds(LEEWAY.as_secs() as i64) {
                Err(format!("issued in the future ({iat})"))
            } else {
                Ok(())
            }
        })
    }

    /// Verifies an ID token; on an unknown `kid`, refetches the JWKS once (single-flight and
    /// rate-limited) and tries again, so key rotation at the IdP is seamless.
    async fn verify_id_token(
        &self,
        token: &openidconnect::core::CoreIdToken,
        nonce: Option<&str>,
    ) -> Result<(), IdpError> {
        let check = |jwks: CoreJsonWebKeySet| {
            let verifier = self.verifier(jwks);
            let r = match nonce {
                Some(n) => token
                    .claims(&verifier, &Nonce::new(n.to_string()))
                    .map(|_| ()),
                None => token
                    .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                    .map(|_| ()),
            };
            r
        };
        let before = self.jwks.load_full();
        match check((*before).clone()) {
            Ok(()) => Ok(()),
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                openidconnect::SignatureVerificationError::NoMatchingKey,
            )) => {
                self.refetch_jwks(&before).await;
                check((**self.jwks.load()).clone()).map_err(|e| IdpError::IdToken(e.to_string()))
            }
            Err(e) => Err(IdpError::IdToken(e.to_string())),
        }
    }

    /// Verifies a JWT this IdP issued, for use as a bearer token: signed (with an allowed
    /// asymmetric algorithm) by a key of the IdP's JWKS — refetched once for an unknown `kid` —
    /// from this issuer, for one of `audiences`, within its validity. Returns its claims.
    pub async fn verify_jwt(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Map<String, Value>, IdpError> {
        self.verify_signed(token, audiences, &["exp", "iss", "aud", "sub"])
            .await
    }

    /// Verifies a back-channel logout token's signature, issuer, audience (this client) and,
    /// when present, expiry; the logout-specific claims are the caller's to check.
    pub async fn verify_logout_token(&self, token: &str) -> Result<Map<String, Value>, IdpError> {
        let audience = [self.settings.client_id.clone()];
        self.verify_signed(token, &audience, &["iss", "aud", "iat"])
            .await
    }

    async fn verify_signed(
        &self,
        token: &str,
        audiences: &[String],
        required: &[&str],
    ) -> Result<Map<String, Value>, IdpError> {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};
        let bad = |m: String| IdpError::IdToken(m);
        if audiences.is_empty() {
            return Err(bad("no audience is allowed for this token".into()));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(e.to_string()))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(bad(format!("algorithm {:?} is not allowed", header.alg)));
        }
        let find = |set: &CoreJsonWebKeySet| -> Option<jsonwebtoken::jwk::Jwk> {
            let json = serde_json::to_value(set).ok()?;
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(json).ok()?;
            match &header.kid {
                Some(kid) => set.find(kid).cloned(),
                None if set.keys.len() == 1 => set.keys.first().cloned(),
                None => None,
            }
        };
        let before = self.jwks.load_full();
        let jwk = match find(&before) {
            Some(k) => k,
            None => {
                self.refetch_jwks(&before).await;
                find(&self.jwks.load()).ok_or_else(|| bad("signed by an unknown key".into()))?
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| bad(e.to_string()))?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[
            self.settings.issuer.as_str(),
            self.settings.issuer.as_str().trim_end_matches('/'),
        ]);
        v.set_audience(audiences);
        v.validate_nbf = true;
        v.leeway = 60;
        v.set_required_spec_claims(required);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map_err(|e| bad(e.to_string()))?;
        Ok(data.claims)
    }

    /// The claims the userinfo endpoint returns for an (opaque) access token.
    pub async fn userinfo_claims(
        &self,
        access_token: &str,
    ) -> Result<Map<String, Value>, IdpError> {
        let url = self
            .metadata
            .userinfo_endpoint()
            .ok_or_else(|| IdpError::UserInfo("the provider has no userinfo endpoint".into()))?;
        self.userinfo(url.url(), access_token).await
    }

    async fn refetch_jwks(&self, seen: &Arc<CoreJsonWebKeySet>) {
        let mut last = self.refetch.lock().await;
        if !Arc::ptr_eq(seen, &self.jwks.load_full()) {
            return; // another request refetched while we waited
        }
        if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_MIN_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        match CoreJsonWebKeySet::fetch_async(
            self.metadata.jwks_uri(),
            &super::bounded::Bounded(self.http.clone()),
        )
        .await
        {
            Ok(keys) => {
                tracing::info!(keys = keys.keys().len(), "identity provider keys refetched");
                self.jwks.store(Arc::new(keys));
            }
            Err(e) => tracing::warn!(error = %e, "JWKS refetch failed; keeping the known keys"),
        }
    }

    /// Builds the identity from a verified ID token plus userinfo.
    async fn identity(
        &self,
        id_token: String,
        access_token: String,
        refresh_token: Option<String>,
        access_expires_at: Option<u64>,
    ) -> Result<Identity, IdpError> {
        let mut claims = jwt_payload(&id_token)
            .ok_or_else(|| IdpError::IdToken("payload is not JSON".into()))?;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(url) = self.metadata.userinfo_endpoint() {
            let info = self.userinfo(url.url(), &access_token).await?;
            if info.get("sub").and_then(Value::as_str) != Some(sub.as_str()) {
                return Err(IdpError::UserInfo(
                    "its `sub` differs from the ID token's".into(),
                ));
            }
            for (k, v) in info {
                if !PROTOCOL_CLAIMS.contains(&k.as_str()) {
                    claims.insert(k, v);
                }
            }
        }
        check_claim_types(&claims, &self.settings.groups_claim)?;
        let groups = groups_from(&claims, &self.settings.groups_claim);
        Ok(Identity {
            user_id: sub,
            email: claims
                .get("email")
                .and_then(Value::as_str)
                .map(str::to_string),
            name: claims
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string),
            groups,
            claims,
            id_token,
            access_token,
            refresh_token,
            access_expires_at,
        })
    }

    async fn userinfo(
        &self,
        url: &Url,
        access_token: &str,
    ) -> Result<Map<String, Value>, IdpError> {
        let resp = self
            .http
            .get(url.clone())
            .bearer_auth(AccessToken::new(access_token.to_string()).secret())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| IdpError::Unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(IdpError::UserInfo(format!("status {}", resp.status())));
        }
        let bytes = super::bounded::read_body(resp).await.map_err(|e| match e {
            super::bounded::BoundedError::TooLarge => IdpError::UserInfo(e.to_string()),
            other => IdpError::Unreachable(other.to_string()),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| IdpError::UserInfo(format!("not a JSON object: {e}")))
    }

    /// RP-initiated logout at the IdP, when it offers it.
    pub fn end_session_url(&self, id_token_hint: &str, post_logout_redirect: &Url) -> Option<Url> {
        let endpoint = self
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()?;
        let mut url = endpoint.url().clone();
        url.query_pairs_mut()
            .append_pair("id_token_hint", id_token_hint)
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("post_logout_redirect_uri", post_logout_redirect.as_str());
        Some(url)
    }
}

/// The claims of a JWT whose signature was already checked.
fn jwt_payload(jwt: &str) -> Option<Map<String, Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A JWT's `iss`, unverified: only to choose which provider verifies it.
pub fn unverified_issuer(jwt: &str) -> Option<String> {
    jwt_payload(jwt)?.get("iss")?.as_str().map(str::to_string)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// Claims policy reads must have the type the spec gives them: one of the wrong type makes the
/// identity invalid rather than quietly absent (an `email_verified: "true"` string or an `email`
/// array must not slip through as "no value" and fall to a weaker rule).
/// Whether the token endpoint takes the client secret only in the request body
/// (`client_secret_post` advertised, `client_secret_basic` not).
fn posts_secret(methods: Option<&Vec<openidconnect::core::CoreClientAuthMethod>>) -> bool {
    use openidconnect::core::CoreClientAuthMethod as M;
    methods.is_some_and(|m| m.contains(&M::ClientSecretPost) && !m.contains(&M::ClientSecretBasic))
}

pub fn check_claim_types(claims: &Map<String, Value>, groups_claim: &str) -> Result<(), IdpError> {
    let wrong =
        |name: &str, want: &str| Err(IdpError::IdToken(format!("claim `{name}` must be {want}")));
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => return wrong("sub", "a non-empty string"),
    }
    for name in ["email", "name"] {
        if matches!(claims.get(name), Some(v) if !v.is_string() && !v.is_null()) {
            return wrong(name, "a string");
        }
    }
    if matches!(claims.get("email_verified"), Some(v) if !v.is_boolean() && !v.is_null()) {
        return wrong("email_verified", "a boolean");
    }
    match claims.get(groups_claim) {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => return wrong(groups_claim, "a list of strings"),
    }
    Ok(())
}

/// The user's groups from the configured claim: a list of strings, or one comma-separated string
/// (some IdPs flatten the list).
pub fn groups_from(claims: &Map<String, Value>, groups_claim: &str) -> Vec<String> {
    match claims.get(groups_claim) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}
