//! The built-in **development** identity provider, for `vallum demo` only: a small OpenID
//! provider on loopback where you sign in by picking a demo user. It speaks the real protocol
//! (discovery, authorization code with PKCE, ES256 ID tokens, userinfo, end-session), so the
//! gateway's real sign-in code runs against it. It has no passwords: never expose it.

use crate::crypto::signing_key::SigningKey;
use crate::crypto::{random_token, Key};
use crate::respond::pages::{escape, page};
use async_trait::async_trait;
use base64::Engine;
use dashmap::DashMap;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::HashMap;

pub struct DemoUser {
    pub sub: &'static str,
    pub email: &'static str,
    pub name: &'static str,
    pub groups: &'static [&'static str],
}

pub const USERS: &[DemoUser] = &[
    DemoUser {
        sub: "alice",
        email: "alice@demo.vallum.dev",
        name: "Alice (admin)",
        groups: &["admins", "engineering"],
    },
    DemoUser {
        sub: "bob",
        email: "bob@demo.vallum.dev",
        name: "Bob (engineer)",
        groups: &["engineering"],
    },
    DemoUser {
        sub: "eve",
        email: "eve@demo.vallum.dev",
        name: "Eve (contractor)",
        groups: &[],
    },
];

pub const CLIENT_ID: &str = "vallum-demo";
pub const CLIENT_SECRET: &str = "vallum-demo-secret";

struct Grant {
    sub: String,
    nonce: Option<String>,
    challenge: String,
    redirect_uri: String,
}

pub struct DevIdp {
    issuer: String,
    /// The only redirect URI accepted (the gateway's callback).
    redirect_uri: String,
    signer: SigningKey,
    codes: DashMap<String, Grant>,
    tokens: DashMap<String, String>,
}

impl DevIdp {
    pub fn new(issuer: String, redirect_uri: String) -> Result<Self, String> {
        Ok(Self {
            issuer,
            redirect_uri,
            signer: SigningKey::derived(&Key::random())?,
            codes: DashMap::new(),
            tokens: DashMap::new(),
        })
    }

    fn user(sub: &str) -> Option<&'static DemoUser> {
        USERS.iter().find(|u| u.sub == sub)
    }

    fn claims(&self, u: &DemoUser) -> Value {
        json!({"sub": u.sub, "email": u.email, "email_verified": true, "name": u.name, "groups": u.groups})
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(body.into_bytes())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_reply(status: StatusCode, v: Value) -> Response<Vec<u8>> {
    reply(status, "application/json", v.to_string())
}

fn redirect(to: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", to)
        .body(Vec::new())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn params(s: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(s).into_owned().collect()
}

async fn body(session: &mut ServerSession) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        out.extend_from_slice(&chunk);
        if out.len() > 64 * 1024 {
            break;
        }
    }
    out
}

#[async_trait]
impl ServeHttp for DevIdp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query = params(req.uri.query().unwrap_or("").as_bytes());
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let form = if method == http::Method::POST {
            params(&body(session).await)
        } else {
            HashMap::new()
        };
        let i = &self.issuer;
        match (method.as_str(), path.as_str()) {
            ("GET", "/.well-known/openid-configuration") => json_reply(
                StatusCode::OK,
                json!({
                    "issuer": i,
                    "authorization_endpoint": format!("{i}/authorize"),
                    "token_endpoint": format!("{i}/token"),
                    "userinfo_endpoint": format!("{i}/userinfo"),
                    "jwks_uri": format!("{i}/jwks"),
                    "end_session_endpoint": format!("{i}/logout"),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["ES256"],
                    "code_challenge_methods_supported": ["S256"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                }),
            ),
            ("GET", "/jwks") => json_reply(StatusCode::OK, self.signer.jwks()),
            ("GET", "/authorize") => self.login_page(&query),
            ("POST", "/authorize") => self.approve(&form),
            ("POST", "/token") => self.token(&form, auth.as_deref()),
            ("GET", "/userinfo") => {
                let token = auth
                    .as_deref()
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .unwrap_or("");
                match self.tokens.get(token).and_then(|s| Self::user(&s)) {
                    Some(u) => json_reply(StatusCode::OK, self.claims(u)),
                    None => json_reply(StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"})),
                }
            }
            ("GET", "/logout") => match query.get("post_logout_redirect_uri") {
                Some(to)
                    if crate::authn::signed::safe_target(to)
                        .is_some_and(|u| is_loopback_host(u.host_str())) =>
                {
                    redirect(to)
                }
                _ => reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    page(None, "Signed out of the demo IdP", "<p>Signed out.</p>"),
                ),
            },
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
        }
    }
}

/// Loopback names: the demo never redirects anywhere else.
pub fn is_loopback_host(h: Option<&str>) -> bool {
    h.is_some_and(|h| {
        h == "localhost" || h.ends_with(".localhost") || h == "127.0.0.1" || h == "[::1]"
    })
}

impl DevIdp {
    fn login_page(&self, q: &HashMap<String, String>) -> Response<Vec<u8>> {
        if q.get("client_id").map(String::as_str) != Some(CLIENT_ID)
            || q.get("redirect_uri") != Some(&self.redirect_uri)
            || q.get("code_challenge_method").map(String::as_str) != Some("S256")
        {
            return reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "bad authorization request".into(),
            );
        }
        let hidden: String = [
            "client_id",
            "redirect_uri",
            "state",
            "nonce",
            "code_challenge",
        ]
        .iter()
        .map(|k| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                escape(q.get(*k).map(String::as_str).unwrap_or(""))
            )
        })
        .collect();
        let buttons: String = USERS
            .iter()
            .map(|u| {
                format!(
                    "<form method=\"post\" action=\"/authorize\">{hidden}<input type=\"hidden\" name=\"user\" value=\"{}\">\
                     <button type=\"submit\">Sign in as {}</button> <small>{} · groups: {}</small></form>",
                    u.sub,
                    escape(u.name),
                    escape(u.email),
                    escape(&u.groups.join(", ")),
                )
            })
            .collect();
        reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page(
                None,
                "Vallum demo identity provider",
                &format!("<p><strong>For local trials only.</strong> Pick a demo user; there are no passwords.</p>{buttons}"),
            ),
        )
    }

    fn approve(&self, f: &HashMap<String, String>) -> Response<Vec<u8>> {
        let (Some(user), Some(redirect_uri)) = (
            f.get("user").and_then(|u| Self::user(u)),
            f.get("redirect_uri"),
        ) else {
            return reply(StatusCode::BAD_REQUEST, "text/plain", "unknown user".into());
        };
        if redirect_uri != &self.redirect_uri
            || f.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        {
            return reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "bad authorization request".into(),
            );
        }
        let code = random_token(24);
        self.codes.insert(
            code.clone(),
            Grant {
                sub: user.sub.to_string(),
                nonce: f.get("nonce").cloned(),
                challenge: f.get("code_challenge").cloned().unwrap_or_default(),
                redirect_uri: redirect_uri.clone(),
            },
        );
        let Ok(mut to) = url::Url::parse(redirect_uri) else {
            return reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "bad redirect_uri".into(),
            );
        };
        to.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", f.get("state").map(String::as_str).unwrap_or(""));
        redirect(to.as_str())
    }

    fn token(&self, f: &HashMap<String, String>, auth: Option<&str>) -> Response<Vec<u8>> {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
        );
        let client_ok = auth.is_some_and(|a| crate::crypto::ct_eq(a, &basic))
            || (f.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && f.get("client_secret")
                    .is_some_and(|s| crate::crypto::ct_eq(s, CLIENT_SECRET)));
        if !client_ok {
            return json_reply(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
        }
        let (sub, nonce) = match f.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                let Some((_, g)) = f.get("code").and_then(|c| self.codes.remove(c)) else {
                    return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
                };
                let verifier = f.get("code_verifier").map(String::as_str).unwrap_or("");
                let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(sha2::Sha256::digest(verifier.as_bytes()));
                if challenge != g.challenge || f.get("redirect_uri") != Some(&g.redirect_uri) {
                    return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
                }
                (g.sub, g.nonce)
            }
            Some("refresh_token") => match f
                .get("refresh_token")
                .and_then(|r| self.tokens.get(r).map(|s| s.clone()))
            {
                Some(sub) => (sub, None),
                None => {
                    return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}))
                }
            },
            _ => {
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "unsupported_grant_type"}),
                )
            }
        };
        let Some(user) = Self::user(&sub) else {
            return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
        };
        let now = crate::clock::unix_now();
        let mut claims = self.claims(user);
        claims["iss"] = json!(self.issuer);
        claims["aud"] = json!(CLIENT_ID);
        claims["iat"] = json!(now);
        claims["exp"] = json!(now + 3600);
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        let (access, refresh) = (random_token(24), random_token(24));
        self.tokens.insert(access.clone(), sub.clone());
        self.tokens.insert(refresh.clone(), sub);
        json_reply(
            StatusCode::OK,
            json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600, "refresh_token": refresh, "id_token": self.signer.sign(&claims)}),
        )
    }
}
