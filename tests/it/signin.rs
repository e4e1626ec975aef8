//! Sign-in through the running gateway against the in-process OpenID provider: the flow,
//! single sign-on across app domains, the relying-party checks, CSRF, cookies, redirects and
//! sign-out.

use crate::support::idp::{Idp, Mode};
use crate::support::{free_port, Gateway, Resp, Upstream};
use reqwest::header::HeaderValue;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub const COOKIE_SECRET: &str = "8GIP1sU0aqXJZ8T8XkL1zB0cR2P0kTmYxw0a3DkBwsw=";
pub const SHARED_SECRET: &str = "Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=";

#[allow(dead_code)] // `up` is kept alive for the gateway to reach
pub struct Env {
    pub idp: Idp,
    pub up: Upstream,
    pub gw: Gateway,
}

impl Env {
    pub async fn start(extra: &str) -> Env {
        Env::with_routes(extra, "").await
    }

    /// `routes` (YAML list items, `{u}` = the echo upstream) come after the default routes.
    pub async fn with_routes(extra: &str, routes: &str) -> Env {
        let idp = Idp::start().await;
        let up = Upstream::echo("app").await;
        let port = free_port();
        let text = format!(
            "address: 127.0.0.1:{port}\ninsecure_server: true\nauthenticate_service_url: http://authenticate.localhost:{port}\n\
             {idp}cookie_secret: {COOKIE_SECRET}\nshared_secret: {SHARED_SECRET}\n{limit}{extra}\
             routes:\n  - from: http://app.localhost\n    to: {u}\n    allow_any_authenticated_user: true\n\
             \x20 - from: http://app2.localhost\n    to: {u}\n    allow_any_authenticated_user: true\n\
             \x20 - from: http://public.localhost\n    to: {u}\n    allow_public_unauthenticated_access: true\n{routes}",
            idp = idp.config(),
            // Tests sign in many times a second from one address; the limit has its own test.
            limit = if extra.contains("signin_rate_limit") { "" } else { "signin_rate_limit: 0\n" },
            u = up.url(),
            routes = routes.replace("{u}", &up.url()),
        );
        let gw = Gateway::start_with(port, &text, &[]).await;
        gw.eventually("identity provider discovered", || async {
            gw.log().contains("identity provider discovered")
        })
        .await;
        Env { idp, up, gw }
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}.localhost:{}{path}", self.gw.port)
    }

    /// A browser: its own cookie jar, `*.localhost` resolved to the gateway, no auto-redirects.
    pub fn browser(&self) -> Browser {
        let addr = self.gw.addr();
        let names: Vec<String> = HOSTS.iter().map(|h| format!("{h}.localhost")).collect();
        Browser::resolving(&names.iter().map(|n| (n.as_str(), addr)).collect::<Vec<_>>())
    }
}

/// The CSRF token of a sign-out form.
pub fn csrf_field(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string()
}

/// The `*.localhost` names a test browser resolves to the gateway.
pub const HOSTS: &[&str] = &[
    "app",
    "app2",
    "public",
    "authenticate",
    "email",
    "group",
    "domain",
    "claim",
    "deny",
    "jwt",
    "time",
    "notime",
    "cors",
    "ring",
    "device",
    "strict",
];

pub struct Browser {
    pub client: reqwest::Client,
    pub jar: Arc<reqwest::cookie::Jar>,
}

impl Browser {
    /// A browser with its own cookie jar that resolves these names to these addresses and does
    /// not follow redirects by itself.
    pub fn resolving(names: &[(&str, std::net::SocketAddr)]) -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let mut builder = reqwest::Client::builder().cookie_provider(jar.clone());
        for (name, addr) in names {
            builder = builder.resolve(name, *addr);
        }
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Browser { client, jar }
    }

    pub async fn get(&self, url: &str) -> (Resp, String) {
        let r = self
            .client
            .get(url)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        let u = r.url().to_string();
        (Resp::from(r).await, u)
    }

    /// Follows redirects like a browser; returns the final response and every URL visited.
    pub async fn browse(&self, url: &str) -> (Resp, Vec<String>) {
        self.browse_until(url, |_| false).await
    }

    /// Follows redirects until `stop(url)` says to stop before requesting a URL.
    pub async fn browse_until(
        &self,
        url: &str,
        stop: impl Fn(&str) -> bool,
    ) -> (Resp, Vec<String>) {
        let mut hops = vec![url.to_string()];
        let mut current = url.to_string();
        for _ in 0..15 {
            let (resp, _) = self.get(&current).await;
            match (resp.status, resp.header("location")) {
                (301 | 302 | 303 | 307 | 308, Some(loc)) => {
                    let next = url::Url::parse(&current)
                        .unwrap()
                        .join(loc)
                        .unwrap()
                        .to_string();
                    hops.push(next.clone());
                    if stop(&next) {
                        return (resp, hops);
                    }
                    current = next;
                }
                _ => return (resp, hops),
            }
        }
        panic!("redirect loop: {hops:#?}");
    }

    /// Signs out at `sign_out` as a person would (the page, then its form with the CSRF field);
    /// the form's answer.
    pub async fn sign_out(&self, sign_out: &str) -> u16 {
        let (page, _) = self.get(sign_out).await;
        self.client
            .post(sign_out)
            .form(&[("csrf", csrf_field(&page.body))])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub fn cookie_for(&self, url: &str) -> Option<String> {
        use reqwest::cookie::CookieStore;
        self.jar
            .cookies(&url.parse().unwrap())
            .map(|v| v.to_str().unwrap().to_string())
    }
}

#[tokio::test]
async fn sign_in_then_single_sign_on_across_domains() {
    let env = Env::start("").await;
    let b = env.browser();
    let (resp, hops) = b.browse(&env.url("app", "/some/page?x=1&y=two")).await;
    assert_eq!(resp.status, 200, "{hops:#?}\n{}", env.gw.log());
    let echo = resp.echo();
    assert_eq!(
        echo.uri, "/some/page?x=1&y=two",
        "the original URL, query and all"
    );
    assert!(
        hops.iter().any(|h| h.contains("/.pomerium/sign_in?")),
        "{hops:#?}"
    );
    assert!(hops.iter().any(|h| h.contains("/authorize?")), "{hops:#?}");
    let authorize = hops.iter().find(|h| h.contains("/authorize?")).unwrap();
    assert!(
        authorize.contains("code_challenge_method=S256") && authorize.contains("nonce="),
        "PKCE and nonce: {authorize}"
    );
    assert_eq!(env.idp.authorize_hits.load(Ordering::SeqCst), 1);
    let cookies = echo.header("cookie").unwrap_or("");
    assert!(
        !cookies.contains("_pomerium"),
        "the session cookie never reaches the upstream: {cookies}"
    );

    // The second app domain needs no IdP round trip.
    let (resp, hops) = b.browse(&env.url("app2", "/")).await;
    assert_eq!(resp.status, 200, "{hops:#?}");
    assert_eq!(
        env.idp.authorize_hits.load(Ordering::SeqCst),
        1,
        "single sign-on: {hops:#?}"
    );

    // Signed in, the app keeps working without redirects; its own cookies still pass.
    let session_cookie = b.cookie_for(&env.url("app", "/")).unwrap();
    let r = crate::support::client()
        .get(format!("http://{}/again", env.gw.addr()))
        .header("host", format!("app.localhost:{}", env.gw.port))
        .header("cookie", format!("theme=dark; {session_cookie}"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let r = Resp::from(r).await;
    assert_eq!(r.status, 200);
    let cookies = r.echo().header("cookie").unwrap_or("").to_string();
    assert!(
        cookies.contains("theme=dark") && !cookies.contains("_pomerium"),
        "{cookies}"
    );
    // A cookie of another site's with non-ASCII bytes beside it (browsers send them) neither
    // hides the session nor keeps its cookie from being stripped.
    let jar = format!("lang=fran\u{e7}ais; {session_cookie}; theme=dark");
    let r = crate::support::client()
        .get(format!("http://{}/again", env.gw.addr()))
        .header("host", format!("app.localhost:{}", env.gw.port))
        .header("cookie", HeaderValue::from_bytes(jar.as_bytes()).unwrap())
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let r = Resp::from(r).await;
    assert_eq!(r.status, 200, "signed in despite the non-ASCII cookie");
    let cookies = r.echo().header("cookie").unwrap_or("").to_string();
    assert_eq!(cookies, "lang=fran\u{e7}ais; theme=dark", "{cookies}");

    // The cookie is Vallum's sealed handle: HttpOnly, SameSite=Lax, not Secure on plain HTTP.
    let fresh = env.browser();
    let (first, _) = fresh.get(&env.url("app", "/")).await;
    assert_eq!(first.status, 302);
}

#[tokio::test]
async fn api_clients_get_401_not_a_redirect() {
    let env = Env::start("").await;
    for (k, v) in [
        ("accept", "application/json"),
        ("x-requested-with", "XMLHttpRequest"),
        ("accept", "*/*"),
    ] {
        let r = env
            .browser()
            .client
            .get(env.url("app", "/"))
            .header(k, v)
            .send()
            .await
            .unwrap();
        let r = Resp::from(r).await;
        assert_eq!(r.status, 401, "{k}: {v}");
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "user-unauthenticated");
        assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }
    let (r, _) = env.browser().get(&env.url("public", "/")).await;
    assert_eq!(r.status, 200, "public routes need no sign-in");
}

#[tokio::test]
async fn relying_party_checks_refuse_bad_id_tokens() {
    let env = Env::start("").await;
    for mode in [
        Mode::BadSignature,
        Mode::AlgNone,
        Mode::Hs256WithPublicKey,
        Mode::WrongIssuer,
        Mode::WrongAudience,
        Mode::NoNonce,
        Mode::WrongNonce,
        Mode::Expired,
        Mode::FutureIat,
        Mode::UserinfoOtherSub,
    ] {
        env.idp.set_mode(mode);
        let b = env.browser();
        let (resp, hops) = b.browse(&env.url("app", "/")).await;
        assert_eq!(resp.status, 401, "{mode:?} must be refused: {hops:#?}");
        let (again, _) = b.get(&env.url("app", "/")).await;
        assert_eq!(again.status, 302, "{mode:?}: no session was created");
    }
    let log = env.gw.log();
    for reason in [
        "Signature verification failed",
        "Invalid issuer",
        "Invalid audiences",
        "Invalid nonce",
        "Expired",
        "issued in the future",
        "sub",
    ] {
        assert!(
            log.contains(reason),
            "log names the reason {reason:?}:\n{log}"
        );
    }
    env.idp.set_mode(Mode::Honest);
    let (resp, _) = env.browser().browse(&env.url("app", "/")).await;
    assert_eq!(resp.status, 200, "an honest provider still works");
}

#[tokio::test]
async fn key_rotation_refetches_the_jwks_once() {
    let env = Env::start("").await;
    assert_eq!(
        env.browser().browse(&env.url("app", "/")).await.0.status,
        200
    );
    let before = env.idp.jwks_fetches.load(Ordering::SeqCst);
    env.idp.rotate_key("key-2");
    let (resp, _) = env.browser().browse(&env.url("app", "/")).await;
    assert_eq!(
        resp.status,
        200,
        "a token signed with the new key is accepted\n{}",
        env.gw.log()
    );
    assert_eq!(
        env.idp.jwks_fetches.load(Ordering::SeqCst),
        before + 1,
        "exactly one refetch"
    );
    assert_eq!(
        env.browser().browse(&env.url("app", "/")).await.0.status,
        200
    );
    assert_eq!(
        env.idp.jwks_fetches.load(Ordering::SeqCst),
        before + 1,
        "the new key is cached"
    );
}

#[tokio::test]
async fn callback_state_is_checked_and_single_use() {
    let env = Env::start("").await;
    let b = env.browser();
    let is_callback = |u: &str| u.contains("/oauth2/callback?");
    let (_, hops) = b.browse_until(&env.url("app", "/"), is_callback).await;
    let callback = hops.last().unwrap().clone();
    assert!(is_callback(&callback), "{hops:#?}");

    // Another browser (no sign-in attempt of its own) cannot complete this one: login CSRF.
    let (r, _) = env.browser().get(&callback).await;
    assert_eq!(r.status, 400);

    let u = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
    let with = |state: Option<&str>| {
        let mut v = u.clone();
        {
            let mut q = v.query_pairs_mut();
            q.clear();
            for (k, val) in &pairs {
                if k == "state" {
                    if let Some(s) = state {
                        q.append_pair("state", s);
                    }
                } else {
                    q.append_pair(k, val);
                }
            }
        }
        v.to_string()
    };
    let state = pairs.iter().find(|(k, _)| k == "state").unwrap().1.clone();
    assert_eq!(b.get(&with(None)).await.0.status, 400, "missing state");
    let tampered = format!("{}x", &state[..state.len() - 1]);
    assert_eq!(
        b.get(&with(Some(&tampered))).await.0.status,
        400,
        "state mismatch"
    );
    let (ok, _) = b.get(&with(Some(&state))).await;
    assert_eq!(ok.status, 302, "the genuine callback completes");
    assert_eq!(
        b.get(&with(Some(&state))).await.0.status,
        400,
        "a replayed callback is refused"
    );
}

#[tokio::test]
async fn tampered_truncated_foreign_and_expired_cookies_are_no_session() {
    let env = Env::start("cookie_expire: 6s\n").await;
    let b = env.browser();
    // The session ends 6 s after its callback: the checks before that must not race it on a slow
    // machine, and the expiry check waits long enough past it (whole-second clock, slow sign-in).
    let signed_in_at = std::time::Instant::now();
    assert_eq!(b.browse(&env.url("app", "/")).await.0.status, 200);
    assert_eq!(b.browse(&env.url("app2", "/")).await.0.status, 200);
    let app_cookie = b.cookie_for(&env.url("app", "/")).unwrap();
    let app2_cookie = b.cookie_for(&env.url("app2", "/")).unwrap();
    let value = crate::support::cookie_value(&app_cookie, "_pomerium").unwrap();
    let value2 = crate::support::cookie_value(&app2_cookie, "_pomerium").unwrap();

    let send = |v: String| {
        let c = crate::support::client();
        let url = env.url("app", "/");
        let addr = env.gw.addr();
        async move {
            let r = c
                .get(format!("http://{}{}", addr, "/"))
                .header("host", url::Url::parse(&url).unwrap().authority())
                .header("cookie", format!("_pomerium={v}"))
                .header("accept", "text/html")
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(
        send(value.clone()).await,
        200,
        "the genuine cookie works from anywhere"
    );
    let mut chars: Vec<char> = value.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    assert_eq!(send(chars.into_iter().collect()).await, 302, "tampered");
    assert_eq!(
        send(value[..value.len() - 4].to_string()).await,
        302,
        "truncated"
    );
    assert_eq!(send(value2).await, 302, "a cookie for another host");
    assert_eq!(send(String::new()).await, 302, "empty");
    tokio::time::sleep(
        (signed_in_at + Duration::from_millis(7500))
            .saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    assert_eq!(send(value).await, 302, "expired with cookie_expire");
}

#[tokio::test]
async fn open_redirect_attempts_are_refused() {
    let env = Env::start("").await;
    let b = env.browser();
    let sign_in = env.url("authenticate", "/.pomerium/sign_in");
    for target in [
        "//evil.example/",
        "/\\evil.example",
        "https:evil.example",
        "https://user@evil.example/",
        "https://evil.example/",
        "%2F%2Fevil.example",
        " https://evil.example",
        "https://app.localhost@evil.example/",
    ] {
        let mut u = url::Url::parse(&sign_in).unwrap();
        u.query_pairs_mut()
            .append_pair("pomerium_redirect_uri", target);
        let (r, _) = b.get(u.as_str()).await;
        assert_eq!(r.status, 400, "unsigned {target:?}");
        u.query_pairs_mut()
            .append_pair("pomerium_issued", "1")
            .append_pair("pomerium_expiry", "99999999999")
            .append_pair("pomerium_signature", "forged");
        let (r, _) = b.get(u.as_str()).await;
        assert_eq!(r.status, 400, "forged signature {target:?}");
    }
    // A real sign-in link with its target swapped.
    let (_, hops) = b
        .browse_until(&env.url("app", "/"), |u| u.contains("/.pomerium/sign_in?"))
        .await;
    let real = hops.last().unwrap();
    let swapped = real.replace("app.localhost", "evil.example");
    assert_eq!(b.get(&swapped).await.0.status, 400);
    // The hand-off of one host does not work on another.
    assert_eq!(
        env.browser().browse(&env.url("app", "/")).await.0.status,
        200
    );
    let (_, hops) = b
        .browse_until(&env.url("app", "/"), |u| u.contains("/.pomerium/callback/"))
        .await;
    let handoff = hops
        .last()
        .unwrap()
        .replace("app.localhost", "app2.localhost");
    assert_eq!(
        b.get(&handoff).await.0.status,
        400,
        "hand-off bound to its host"
    );
}

#[tokio::test]
async fn sign_out_ends_the_session_for_every_copy_of_the_cookie() {
    let env = Env::start("").await;
    let b = env.browser();
    assert_eq!(b.browse(&env.url("app", "/")).await.0.status, 200);
    let stolen = b.cookie_for(&env.url("app", "/")).unwrap();

    let (page, _) = b.get(&env.url("app", "/.pomerium/sign_out")).await;
    assert_eq!(page.status, 200);
    let csrf = crate::signin::csrf_field(&page.body);

    let refused = b
        .client
        .post(env.url("app", "/.pomerium/sign_out"))
        .form(&[("csrf", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "no CSRF token, no sign-out");

    let r = b
        .client
        .post(env.url("app", "/.pomerium/sign_out"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let next = r.headers()["location"].to_str().unwrap().to_string();
    let (done, hops) = b.browse(&next).await;
    assert_eq!(done.status, 200, "{hops:#?}");
    assert!(done.body.contains("signed out"), "{}", done.body);
    let logouts = env.idp.state.lock().unwrap().logouts.clone();
    assert_eq!(
        logouts.len(),
        1,
        "RP-initiated logout at the IdP: {hops:#?}"
    );
    assert!(logouts[0].contains_key("id_token_hint"));

    let c = crate::support::client();
    let r = c
        .get(format!("http://{}/", env.gw.addr()))
        .header("host", format!("app.localhost:{}", env.gw.port))
        .header("cookie", stolen)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        302,
        "a cookie copied before sign-out no longer works"
    );
    assert_eq!(
        b.get(&env.url("app2", "/")).await.0.status,
        302,
        "signed out on the other app domain too"
    );
}

async fn user_json(b: &Browser, env: &Env) -> (u16, serde_json::Value) {
    user_json_at(b, env, "app").await
}

/// `/.pomerium/user` on `host`: the status and the JSON.
pub async fn user_json_at(b: &Browser, env: &Env, host: &str) -> (u16, serde_json::Value) {
    let r = b
        .client
        .get(env.url(host, "/.pomerium/user"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap_or_default(),
    )
}

#[tokio::test]
async fn refresh_brings_group_changes_and_a_refused_refresh_ends_the_session() {
    let env = Env::start("idp_refresh_claims_interval: 1s\n").await;
    let b = env.browser();
    assert_eq!(b.browse(&env.url("app", "/")).await.0.status, 200);
    let (status, user) = user_json(&b, &env).await;
    assert_eq!(status, 200);
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["groups"], serde_json::json!(["admins", "engineering"]));
    for secret in ["access_token", "refresh_token", "id_token"] {
        assert!(
            user.get(secret).is_none(),
            "/.pomerium/user never shows {secret}"
        );
    }

    env.idp.set_groups("alice-id", &["finance"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.gw
        .eventually("new groups after refresh", || async {
            user_json(&b, &env).await.1["groups"] == serde_json::json!(["finance"])
        })
        .await;

    env.idp.revoke_refresh_tokens();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.gw
        .eventually("session ended after a refused refresh", || async {
            user_json(&b, &env).await.0 == 401
        })
        .await;
    assert_eq!(b.get(&env.url("app", "/")).await.0.status, 302);
    assert!(env
        .gw
        .log()
        .contains("the identity provider refused the refresh"));
}

/// A refresh that is still waiting on the IdP when the user signs out must not write the
/// session back when the IdP answers (it did: the e2e suite's front-channel logout caught it).
#[tokio::test]
async fn a_refresh_that_crosses_a_sign_out_does_not_bring_the_session_back() {
    let env = Env::start("idp_refresh_claims_interval: 1s\n").await;
    let b = env.browser();
    assert_eq!(b.browse(&env.url("app", "/")).await.0.status, 200);
    env.idp.state.lock().unwrap().refresh_delay = Duration::from_millis(1500);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Starts the refresh in the background; the request itself is served.
    assert_eq!(b.get(&env.url("app", "/")).await.0.status, 200);

    assert_eq!(
        b.sign_out(&env.url("app", "/.pomerium/sign_out")).await,
        302
    );
    env.gw
        .eventually("the refresh answered after the sign-out", || async {
            env.gw.log().contains("session ended during its refresh")
        })
        .await;
    assert_eq!(
        b.get(&env.url("app", "/")).await.0.status,
        302,
        "still signed out after the refresh came back"
    );
}

#[tokio::test]
async fn ring_hash_keys_on_the_session() {
    let other = Upstream::echo("other").await;
    let routes = format!(
        "  - from: http://ring.localhost\n    to: [{{u}}, {}]\n    load_balancing_policy: RING_HASH\n    allow_any_authenticated_user: true\n",
        other.url()
    );
    let env = Env::with_routes("", &routes).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..16 {
        let b = env.browser();
        let (first, _) = b.browse(&env.url("ring", "/")).await;
        assert_eq!(first.status, 200);
        let server = first.echo().server;
        for _ in 0..3 {
            assert_eq!(
                b.browse(&env.url("ring", "/")).await.0.echo().server,
                server,
                "a session sticks to its backend"
            );
        }
        seen.insert(server);
    }
    assert_eq!(
        seen.len(),
        2,
        "sessions from one client IP still spread over both backends"
    );
}
