//! An in-process OpenID provider for tests: discovery, JWKS, authorize (auto-approves the
//! current user), token (code + PKCE, refresh), userinfo and end-session — and able to misbehave
//! in the ways a relying party must catch.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// Ways the provider can misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Honest,
    BadSignature,
    AlgNone,
    Hs256WithPublicKey,
    WrongIssuer,
    WrongAudience,
    NoNonce,
    WrongNonce,
    Expired,
    FutureIat,
    UserinfoOtherSub,
    /// Every endpoint answers 503 (an IdP outage).
    Down,
    /// An ES256 signature with r = s = 0 (the "psychic signatures" class).
    ZeroSignature,
    /// Signed by an attacker's key, whose header points at the attacker's keys (`jku`, `x5u`).
    KeysFromHeader,
    /// A 2 MiB userinfo response.
    HugeUserinfo,
    /// Apple's ways: answers by `form_post` only, takes the client secret only in the body,
    /// has no userinfo endpoint. Set before the gateway discovers the provider.
    Apple,
}

#[derive(Clone)]
pub struct User {
    pub sub: String,
    pub email: String,
    /// Whether the IdP vouches for the address (`email_verified`): a JSON value, so a test can
    /// send the wrong type.
    pub email_verified: serde_json::Value,
    pub name: String,
    pub groups: Vec<String>,
}

struct SigningKey {
    kid: String,
    pem: String,
    public_raw: Vec<u8>,
}

impl SigningKey {
    fn generate(kid: &str) -> SigningKey {
        let kp = rcgen::KeyPair::generate().unwrap();
        SigningKey {
            kid: kid.into(),
            pem: kp.serialize_pem(),
            public_raw: kp.public_key_raw().to_vec(),
        }
    }

    fn jwk(&self) -> Value {
        let (x, y) = (&self.public_raw[1..33], &self.public_raw[33..65]);
        json!({"kty": "EC", "crv": "P-256", "x": B64.encode(x), "y": B64.encode(y), "kid": self.kid, "alg": "ES256", "use": "sig"})
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

struct Grant {
    sub: String,
    nonce: Option<String>,
    challenge: String,
}

pub struct State {
    pub mode: Mode,
    pub users: HashMap<String, User>,
    pub current: String,
    keys: Vec<SigningKey>,
    /// The key new tokens are signed with (index into `keys`).
    active: usize,
    codes: HashMap<String, Grant>,
    access: HashMap<String, String>,
    refresh: HashMap<String, String>,
    pub logouts: Vec<HashMap<String, String>>,
    /// Claims added to (or replacing those in) both the ID token and userinfo.
    pub extra_claims: serde_json::Map<String, Value>,
    /// The query of every authorization request, in order.
    pub authorize_queries: Vec<HashMap<String, String>>,
    /// How long a refresh-token grant takes to answer (a slow IdP).
    pub refresh_delay: std::time::Duration,
    /// `expires_in` of the access tokens it issues.
    pub access_ttl: u64,
}

pub struct Idp {
    pub addr: SocketAddr,
    pub client_id: String,
    pub client_secret: String,
    pub state: Arc<Mutex<State>>,
    pub jwks_fetches: Arc<AtomicUsize>,
    pub authorize_hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    pub async fn start() -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut users = HashMap::new();
        for (sub, email, name, groups) in [
            (
                "alice-id",
                "alice@example.com",
                "Alice",
                vec!["admins", "engineering"],
            ),
            ("bob-id", "bob@example.com", "Bob", vec!["engineering"]),
            ("eve-id", "eve@evil.example", "Eve", vec![]),
        ] {
            users.insert(
                sub.to_string(),
                User {
                    sub: sub.into(),
                    email: email.into(),
                    email_verified: serde_json::Value::Bool(true),
                    name: name.into(),
                    groups: groups.into_iter().map(String::from).collect(),
                },
            );
        }
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Honest,
            extra_claims: serde_json::Map::new(),
            authorize_queries: Vec::new(),
            refresh_delay: std::time::Duration::ZERO,
            access_ttl: 300,
            users,
            current: "alice-id".into(),
            keys: vec![SigningKey::generate("key-1")],
            active: 0,
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            logouts: Vec::new(),
        }));
        let (jwks_fetches, authorize_hits): (Arc<AtomicUsize>, Arc<AtomicUsize>) =
            Default::default();
        let ctx = Ctx {
            issuer: format!("http://{addr}"),
            client_id: "vallum".into(),
            state: state.clone(),
            jwks_fetches: jwks_fetches.clone(),
            authorize_hits: authorize_hits.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let ctx = ctx.clone();
                        async move { Ok::<_, std::convert::Infallible>(ctx.handle(req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Idp {
            addr,
            client_id: "vallum".into(),
            client_secret: "vallum-secret".into(),
            state,
            jwks_fetches,
            authorize_hits,
            task,
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, m: Mode) {
        self.state.lock().unwrap().mode = m;
    }

    pub fn login_as(&self, sub: &str) {
        self.state.lock().unwrap().current = sub.into();
    }

    /// A JWT signed by the provider's active key (as an access or ID token it might issue).
    pub fn sign_jwt(&self, claims: Value) -> String {
        let s = self.state.lock().unwrap();
        s.keys[s.active].sign(&claims)
    }

    /// An opaque access token for `sub`, as the token endpoint would issue (userinfo accepts it).
    pub fn issue_access_token(&self, sub: &str) -> String {
        let token = format!("at-{}", rand_id());
        self.state
            .lock()
            .unwrap()
            .access
            .insert(token.clone(), sub.to_string());
        token
    }

    /// Claims to add to (or replace in) every ID token and userinfo answer from now on.
    pub fn set_extra_claims(&self, claims: Value) {
        self.state.lock().unwrap().extra_claims = claims.as_object().cloned().unwrap_or_default();
    }

    pub fn set_groups(&self, sub: &str, groups: &[&str]) {
        self.state
            .lock()
            .unwrap()
            .users
            .get_mut(sub)
            .unwrap()
            .groups = groups.iter().map(|s| s.to_string()).collect();
    }

    /// Forgets every refresh token (as when an admin revokes a user's grants).
    pub fn revoke_refresh_tokens(&self) {
        self.state.lock().unwrap().refresh.clear();
    }

    /// Publishes a new key and signs with it from now on.
    pub fn rotate_key(&self, kid: &str) {
        let mut s = self.state.lock().unwrap();
        s.keys.push(SigningKey::generate(kid));
        s.active = s.keys.len() - 1;
    }

    /// The config lines that point Vallum at this provider.
    pub fn config(&self) -> String {
        format!(
            "idp_provider: oidc\nidp_provider_url: {}\nidp_client_id: {}\nidp_client_secret: {}\n",
            self.issuer(),
            self.client_id,
            self.client_secret
        )
    }
}

#[derive(Clone)]
struct Ctx {
    issuer: String,
    client_id: String,
    state: Arc<Mutex<State>>,
    jwks_fetches: Arc<AtomicUsize>,
    authorize_hits: Arc<AtomicUsize>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn respond(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn redirect(to: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(302)
        .header("location", to)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

impl Ctx {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let auth_header = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        if self.state.lock().unwrap().mode == Mode::Down {
            return Response::builder()
                .status(503)
                .body(Full::new(Bytes::from_static(b"down")))
                .unwrap();
        }
        match path.as_str() {
            "/.well-known/openid-configuration" => {
                let i = &self.issuer;
                if self.state.lock().unwrap().mode == Mode::Apple {
                    return respond(
                        200,
                        "application/json",
                        json!({
                            "issuer": i,
                            "authorization_endpoint": format!("{i}/authorize"),
                            "token_endpoint": format!("{i}/token"),
                            "jwks_uri": format!("{i}/jwks"),
                            "response_types_supported": ["code"],
                            "response_modes_supported": ["query", "fragment", "form_post"],
                            "subject_types_supported": ["pairwise"],
                            "id_token_signing_alg_values_supported": ["ES256"],
                            "scopes_supported": ["openid", "email", "name"],
                            "token_endpoint_auth_methods_supported": ["client_secret_post"],
                        })
                        .to_string(),
                    );
                }
                respond(
                    200,
                    "application/json",
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
                        "scopes_supported": ["openid", "email", "profile", "offline_access"],
                    })
                    .to_string(),
                )
            }
            "/jwks" => {
                self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                let s = self.state.lock().unwrap();
                let keys: Vec<Value> = s.keys.iter().map(SigningKey::jwk).collect();
                respond(200, "application/json", json!({ "keys": keys }).to_string())
            }
            "/authorize" => {
                self.authorize_hits.fetch_add(1, Ordering::SeqCst);
                if query.get("client_id") != Some(&self.client_id)
                    || query.get("code_challenge_method").map(String::as_str) != Some("S256")
                {
                    return respond(400, "text/plain", "bad authorization request".into());
                }
                let code = format!("code-{}", rand_id());
                let mut s = self.state.lock().unwrap();
                s.authorize_queries.push(query.clone());
                let sub = s.current.clone();
                s.codes.insert(
                    code.clone(),
                    Grant {
                        sub,
                        nonce: query.get("nonce").cloned(),
                        challenge: query.get("code_challenge").cloned().unwrap_or_default(),
                    },
                );
                let form_post = query.get("response_mode").map(String::as_str) == Some("form_post");
                if s.mode == Mode::Apple && !form_post {
                    return respond(400, "text/plain", "response_mode must be form_post".into());
                }
                if form_post {
                    let field = |k: &str, v: &str| {
                        format!("<input type=\"hidden\" name=\"{k}\" value=\"{v}\">")
                    };
                    let page = format!(
                        "<html><body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{}\">{}{}</form></body></html>",
                        query.get("redirect_uri").map(String::as_str).unwrap_or(""),
                        field("code", &code),
                        field("state", query.get("state").map(String::as_str).unwrap_or("")),
                    );
                    return respond(200, "text/html", page);
                }
                let mut to = url::Url::parse(
                    query
                        .get("redirect_uri")
                        .map(String::as_str)
                        .unwrap_or("http://invalid/"),
                )
                .unwrap();
                to.query_pairs_mut().append_pair("code", &code).append_pair(
                    "state",
                    query.get("state").map(String::as_str).unwrap_or(""),
                );
                redirect(to.as_str())
            }
            "/token" => {
                let delay = self.state.lock().unwrap().refresh_delay;
                if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
                    tokio::time::sleep(delay).await;
                }
                self.token(&form, auth_header.as_deref())
            }
            "/userinfo" => {
                let token = auth_header
                    .as_deref()
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .unwrap_or("");
                let s = self.state.lock().unwrap();
                let Some(sub) = s.access.get(token) else {
                    return respond(401, "application/json", "{}".into());
                };
                let u = s.users[sub].clone();
                let sub = if s.mode == Mode::UserinfoOtherSub {
                    "someone-else".to_string()
                } else {
                    u.sub.clone()
                };
                if s.mode == Mode::HugeUserinfo {
                    let padding = "x".repeat(2 * 1024 * 1024);
                    return respond(
                        200,
                        "application/json",
                        json!({"sub": sub, "padding": padding}).to_string(),
                    );
                }
                let mut info = json!({"sub": sub, "email": u.email, "email_verified": u.email_verified, "name": u.name, "groups": u.groups});
                for (k, v) in &s.extra_claims {
                    info[k] = v.clone();
                }
                respond(200, "application/json", info.to_string())
            }
            "/logout" => {
                self.state.lock().unwrap().logouts.push(query.clone());
                match query.get("post_logout_redirect_uri") {
                    Some(to) => redirect(to),
                    None => respond(200, "text/plain", "logged out".into()),
                }
            }
            _ => respond(404, "text/plain", "not found".into()),
        }
    }

    fn token(&self, form: &HashMap<String, String>, auth: Option<&str>) -> Response<Full<Bytes>> {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("vallum:vallum-secret")
        );
        let apple = self.state.lock().unwrap().mode == Mode::Apple;
        let client_ok = (auth == Some(expected.as_str()) && !apple)
            || (form.get("client_id").map(String::as_str) == Some("vallum")
                && form.get("client_secret").map(String::as_str) == Some("vallum-secret"));
        if !client_ok {
            return respond(
                401,
                "application/json",
                json!({"error": "invalid_client"}).to_string(),
            );
        }
        let mut s = self.state.lock().unwrap();
        let (sub, nonce) = match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                let Some(g) = form.get("code").and_then(|c| s.codes.remove(c)) else {
                    return respond(
                        400,
                        "application/json",
                        json!({"error": "invalid_grant"}).to_string(),
                    );
                };
                let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                if B64.encode(sha2::Sha256::digest(verifier.as_bytes())) != g.challenge {
                    return respond(
                        400,
                        "application/json",
                        json!({"error": "invalid_grant", "error_description": "PKCE"}).to_string(),
                    );
                }
                (g.sub, g.nonce)
            }
            Some("refresh_token") => {
                let Some(sub) = form
                    .get("refresh_token")
                    .and_then(|r| s.refresh.get(r))
                    .cloned()
                else {
                    return respond(
                        400,
                        "application/json",
                        json!({"error": "invalid_grant"}).to_string(),
                    );
                };
                (sub, None)
            }
            _ => {
                return respond(
                    400,
                    "application/json",
                    json!({"error": "unsupported_grant_type"}).to_string(),
                )
            }
        };
        let u = s.users[&sub].clone();
        let t = now();
        let mut claims = json!({
            "iss": self.issuer, "sub": u.sub, "aud": self.client_id, "iat": t, "exp": t + 300,
            "email": u.email, "email_verified": u.email_verified, "name": u.name, "groups": u.groups,
        });
        if let Some(n) = &nonce {
            claims["nonce"] = json!(n);
        }
        for (k, v) in &s.extra_claims {
            claims[k] = v.clone();
        }
        match s.mode {
            Mode::WrongIssuer => claims["iss"] = json!("https://evil.example"),
            Mode::WrongAudience => claims["aud"] = json!("someone-else"),
            Mode::NoNonce => {
                claims.as_object_mut().unwrap().remove("nonce");
            }
            Mode::WrongNonce => claims["nonce"] = json!("not-the-nonce"),
            Mode::Expired => {
                claims["iat"] = json!(t - 7200);
                claims["exp"] = json!(t - 3600);
            }
            Mode::FutureIat => claims["iat"] = json!(t + 3600),
            _ => {}
        }
        let key = &s.keys[s.active];
        let id_token = match s.mode {
            Mode::BadSignature => {
                let forged = SigningKey {
                    kid: key.kid.clone(),
                    ..SigningKey::generate("x")
                };
                forged.sign(&claims)
            }
            Mode::AlgNone => {
                format!(
                    "{}.{}.",
                    B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
                    B64.encode(claims.to_string())
                )
            }
            Mode::Hs256WithPublicKey => {
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
                header.kid = Some(key.kid.clone());
                jsonwebtoken::encode(
                    &header,
                    &claims,
                    &jsonwebtoken::EncodingKey::from_secret(&key.public_raw),
                )
                .unwrap()
            }
            Mode::ZeroSignature => {
                let honest = key.sign(&claims);
                let (signed, _) = honest.rsplit_once('.').unwrap();
                format!("{signed}.{}", B64.encode([0u8; 64]))
            }
            Mode::KeysFromHeader => {
                let attacker = SigningKey::generate("attacker-key");
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                header.kid = Some(attacker.kid.clone());
                header.jku = Some("https://attacker.example/jwks.json".into());
                header.x5u = Some("https://attacker.example/cert.pem".into());
                jsonwebtoken::encode(
                    &header,
                    &claims,
                    &jsonwebtoken::EncodingKey::from_ec_pem(attacker.pem.as_bytes()).unwrap(),
                )
                .unwrap()
            }
            _ => key.sign(&claims),
        };
        let access = format!("at-{}", rand_id());
        let refresh = format!("rt-{}", rand_id());
        s.access.insert(access.clone(), sub.clone());
        s.refresh.insert(refresh.clone(), sub);
        respond(
            200,
            "application/json",
            json!({
                "access_token": access, "token_type": "Bearer", "expires_in": s.access_ttl,
                "refresh_token": refresh, "id_token": id_token,
            })
            .to_string(),
        )
    }
}

fn rand_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    B64.encode(b)
}
