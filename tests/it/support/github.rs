//! An in-process GitHub for tests: OAuth 2.0 authorize (auto-approves the current user) and
//! token (code + PKCE), and the REST API's `/user`, `/user/emails` and `/user/teams` — able to
//! misbehave the ways GitHub does: a token it no longer accepts, a rate limit, a user without a
//! verified primary e-mail, a refused code.

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
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Honest,
    /// Every API call: 403 with `x-ratelimit-remaining: 0`.
    RateLimited,
    /// The user has no verified primary e-mail.
    NoVerifiedEmail,
}

/// A user: name, e-mail, teams as (org, slug).
type Profile = (String, String, Vec<(String, String)>);

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    /// login → (name, email, teams as (org, slug)).
    users: HashMap<String, Profile>,
    current: String,
    /// code → (login, PKCE challenge).
    codes: HashMap<String, (String, String)>,
    /// access token → login.
    tokens: HashMap<String, String>,
    api_calls: usize,
}

pub struct GitHub {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitHub {
    pub async fn start() -> GitHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut state = State {
            current: "octocat".into(),
            ..State::default()
        };
        let team = |o: &str, s: &str| (o.to_string(), s.to_string());
        state.users.insert(
            "octocat".into(),
            (
                "The Octocat".into(),
                "octocat@example.com".into(),
                vec![team("acme", "platform"), team("acme", "sre")],
            ),
        );
        state.users.insert(
            "hubot".into(),
            (
                "Hubot".into(),
                "hubot@example.com".into(),
                vec![team("acme", "marketing")],
            ),
        );
        let state = Arc::new(Mutex::new(state));
        let s = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = Arc::clone(&s);
                        async move { Ok::<_, std::convert::Infallible>(handle(&s, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        GitHub { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The keys a gateway config needs to sign in through this GitHub.
    pub fn config(&self) -> String {
        format!(
            "idp_provider: github\nidp_provider_url: {}\nidp_client_id: vallum-gh\nidp_client_secret: gh-secret\n",
            self.url()
        )
    }

    pub fn login_as(&self, login: &str) {
        self.state.lock().unwrap().current = login.into();
    }

    pub fn set_mode(&self, m: Mode) {
        self.state.lock().unwrap().mode = Some(m);
    }

    pub fn set_teams(&self, login: &str, teams: &[(&str, &str)]) {
        if let Some(u) = self.state.lock().unwrap().users.get_mut(login) {
            u.2 = teams
                .iter()
                .map(|(o, s)| (o.to_string(), s.to_string()))
                .collect();
        }
    }

    /// GitHub stops accepting every token it issued (an app authorization revoked).
    pub fn revoke_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    pub fn api_calls(&self) -> usize {
        self.state.lock().unwrap().api_calls
    }
}

fn respond(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    state: &Mutex<State>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
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
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut s = state.lock().unwrap();
    match path.as_str() {
        "/" => respond(200, json!({"current_user_url": "/user"})),
        "/login/oauth/authorize" => {
            let code = format!("code-{}", s.codes.len() + 1);
            let login = s.current.clone();
            let challenge = query.get("code_challenge").cloned().unwrap_or_default();
            s.codes.insert(code.clone(), (login, challenge));
            let mut to =
                url::Url::parse(query.get("redirect_uri").map_or("http://invalid/", |v| v))
                    .unwrap();
            to.query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", query.get("state").map_or("", |v| v));
            Response::builder()
                .status(302)
                .header("location", to.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
        "/login/oauth/access_token" => {
            let ok_client = form.get("client_id").map(String::as_str) == Some("vallum-gh")
                && form.get("client_secret").map(String::as_str) == Some("gh-secret");
            let issued = form.get("code").and_then(|c| s.codes.remove(c));
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            match issued {
                Some((login, challenge))
                    if ok_client
                        && B64.encode(sha2::Sha256::digest(verifier.as_bytes())) == challenge =>
                {
                    let t = format!("gho_{}", s.tokens.len() + 100);
                    s.tokens.insert(t.clone(), login);
                    respond(
                        200,
                        json!({"access_token": t, "token_type": "bearer", "scope": "read:org,user:email"}),
                    )
                }
                // GitHub refuses a code with 200 and an error field.
                _ => respond(
                    200,
                    json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}),
                ),
            }
        }
        api => {
            s.api_calls += 1;
            if s.mode == Some(Mode::RateLimited) {
                return Response::builder()
                    .status(403)
                    .header("x-ratelimit-remaining", "0")
                    .body(Full::new(Bytes::from_static(
                        b"{\"message\":\"API rate limit exceeded\"}",
                    )))
                    .unwrap();
            }
            let Some(login) = token.and_then(|t| s.tokens.get(&t).cloned()) else {
                return respond(401, json!({"message": "Bad credentials"}));
            };
            let Some((name, email, teams)) = s.users.get(&login).cloned() else {
                return respond(404, json!({"message": "Not Found"}));
            };
            match api {
                "/user" => respond(
                    200,
                    json!({"login": login, "id": 583231, "name": name, "avatar_url": "https://avatars.example/u"}),
                ),
                "/user/emails" => {
                    let verified = s.mode != Some(Mode::NoVerifiedEmail);
                    respond(
                        200,
                        json!([
                            {"email": "old@example.com", "primary": false, "verified": true},
                            {"email": email, "primary": true, "verified": verified},
                        ]),
                    )
                }
                "/user/teams" => respond(
                    200,
                    Value::Array(
                        teams
                            .iter()
                            .map(|(o, t)| json!({"slug": t, "organization": {"login": o}}))
                            .collect(),
                    ),
                ),
                _ => respond(404, json!({"message": "Not Found"})),
            }
        }
    }
}
