//! Access without a browser cookie: the programmatic login flow, each bearer form, tokens that
//! die with their session, the redirect whitelist against the usual bypass spellings, and
//! `vallum login` end to end.

use crate::signin::{csrf_field, Env};
use crate::support::client;

fn token_from(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "pomerium_jwt")
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("no pomerium_jwt in {url}"))
}

/// A programmatic-login token for `host`, the way a script gets one: the login API gives a
/// sign-in URL, the user signs in in a browser, and the token arrives at a local listener.
pub async fn login_token(env: &Env, b: &crate::signin::Browser, host: &str) -> String {
    let back = "http://127.0.0.1:45678/cb?state=1";
    let mut api = url::Url::parse(&env.url(host, "/.pomerium/api/v1/login")).unwrap();
    api.query_pairs_mut()
        .append_pair("pomerium_redirect_uri", back);
    let (r, _) = b.get(api.as_str()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let sign_in = r.body.trim().to_string();
    assert!(sign_in.contains("/.pomerium/sign_in?"), "{sign_in}");
    let (_, hops) = b
        .browse_until(&sign_in, |u| u.starts_with("http://127.0.0.1:45678/"))
        .await;
    let landed = hops.last().unwrap();
    assert!(
        landed.starts_with("http://127.0.0.1:45678/cb?state=1&pomerium_jwt="),
        "{landed}"
    );
    token_from(landed)
}

#[tokio::test]
async fn programmatic_login_and_bearer_forms() {
    let env = Env::start("").await;
    let b = env.browser();
    let token = login_token(&env, &b, "app").await;

    let app = env.url("app", "/api/data");
    let host = format!("app.localhost:{}", env.gw.port);
    let send = |name: &'static str, value: String, host: String| {
        let c = client();
        let url = env.gw.url("/api/data");
        async move {
            c.get(url)
                .header("host", host)
                .header(name, value)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
        }
    };
    for (name, value) in [
        ("authorization", format!("Pomerium {token}")),
        ("authorization", format!("Bearer Pomerium-{token}")),
        // Accepted with odd spacing, so stripped with it too: one parser decides both.
        ("authorization", format!("Bearer  Pomerium-{token}")),
        ("authorization", format!("  Pomerium   {token} ")),
        ("x-pomerium-authorization", token.clone()),
    ] {
        let r = send(name, value.clone(), host.clone()).await;
        assert_eq!(r.status(), 200, "{name}: {value:.30}…");
        let echo: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let headers = echo["headers"].as_object().unwrap();
        assert!(
            !headers.contains_key("authorization"),
            "stripped: {headers:?}"
        );
        assert!(!headers.contains_key("x-pomerium-authorization"));
    }
    let r = send(
        "authorization",
        format!("Pomerium {token}"),
        format!("app2.localhost:{}", env.gw.port),
    )
    .await;
    assert_eq!(
        r.status(),
        401,
        "the token is bound to the host it was issued for"
    );
    let r = send("authorization", "Pomerium forged".into(), host.clone()).await;
    assert_eq!(r.status(), 401);
    let _ = app;

    // Sign out in the browser: the token dies with the session.
    assert_eq!(
        b.sign_out(&env.url("app", "/.pomerium/sign_out")).await,
        302
    );
    for (name, value) in [
        ("authorization", format!("Pomerium {token}")),
        ("x-pomerium-authorization", token.clone()),
    ] {
        assert_eq!(
            send(name, value, host.clone()).await.status(),
            401,
            "revoked"
        );
    }
}

#[tokio::test]
async fn programmatic_redirects_only_to_the_whitelist() {
    let env = Env::start("").await;
    let b = env.browser();
    // (redirect target, source)
    let refused = [
        ("http://evil.example/cb", "Pomerium CVE-2021-29651"),
        ("http://localhost.evil.example/cb", "suffix look-alike"),
        ("http://localhost@evil.example/cb", "userinfo confusion"),
        ("http://evil.example/#localhost", "fragment confusion"),
        ("http://127.0.0.1.nip.io/cb", "wildcard DNS look-alike"),
        ("javascript://localhost/%0aalert(1)", "script scheme"),
        ("//localhost/cb", "scheme-relative"),
    ];
    for (target, source) in refused {
        let mut u = url::Url::parse(&env.url("app", "/.pomerium/api/v1/login")).unwrap();
        u.query_pairs_mut()
            .append_pair("pomerium_redirect_uri", target);
        assert_eq!(b.get(u.as_str()).await.0.status, 400, "{target} ({source})");
    }
    let custom = Env::start("programmatic_redirect_domain_whitelist: [cli.example.com]\n").await;
    let mut u = url::Url::parse(&custom.url("app", "/.pomerium/api/v1/login")).unwrap();
    u.query_pairs_mut()
        .append_pair("pomerium_redirect_uri", "https://cli.example.com/cb");
    assert_eq!(custom.browser().get(u.as_str()).await.0.status, 200);
    let mut u = url::Url::parse(&custom.url("app", "/.pomerium/api/v1/login")).unwrap();
    u.query_pairs_mut()
        .append_pair("pomerium_redirect_uri", "http://localhost:1/cb");
    assert_eq!(
        custom.browser().get(u.as_str()).await.0.status,
        400,
        "localhost is not implied once a whitelist is set"
    );
    // The token endpoint itself only works through a signed link.
    let (r, _) = b
        .get(&env.url(
            "app",
            "/.pomerium/programmatic?pomerium_redirect_uri=http%3A%2F%2Flocalhost%3A1%2F",
        ))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn vallum_login_end_to_end() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    let env = Env::start("").await;
    let cache = tempfile::tempdir().unwrap();
    let app = env.url("app", "/");
    let mut cli = Command::new(crate::support::bin())
        .args(["login", &app, "--no-browser", "--json", "--timeout", "30"])
        .env("VALLUM_CACHE_DIR", cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The CLI prints the sign-in URL; the test plays the user's browser.
    let stderr = BufReader::new(cli.stderr.take().unwrap());
    let sign_in = tokio::task::spawn_blocking(move || {
        stderr
            .lines()
            .map_while(Result::ok)
            .map(|l| l.trim().to_string())
            .find(|l| l.starts_with("http"))
            .expect("the CLI prints a sign-in URL")
    })
    .await
    .unwrap();
    let b = env.browser();
    let (_, hops) = b
        .browse_until(&sign_in, |u| u.contains("pomerium_jwt="))
        .await;
    let callback = hops.last().unwrap().clone();
    let (landed, _) = b.get(&callback).await;
    assert_eq!(landed.status, 200, "the CLI's listener answers the browser");
    let out = tokio::task::spawn_blocking(move || cli.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = printed["token"].as_str().unwrap().to_string();
    assert_eq!(printed["host"], format!("app.localhost:{}", env.gw.port));

    let files: Vec<_> = std::fs::read_dir(cache.path().join("tokens"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the cached token is private");
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap().trim(), token);

    let r = client()
        .get(env.gw.url("/"))
        .header("host", format!("app.localhost:{}", env.gw.port))
        .header("authorization", format!("Pomerium {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the token works with curl-style requests");

    let reuse = |timeout: &'static str| {
        let (app, dir) = (app.clone(), cache.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            Command::new(crate::support::bin())
                .args([
                    "login",
                    "--print-token",
                    "--no-browser",
                    "--timeout",
                    timeout,
                    &app,
                ])
                .env("VALLUM_CACHE_DIR", dir)
                .output()
                .unwrap()
        })
    };
    let again = reuse("1").await.unwrap();
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        token,
        "the cached token is reused"
    );

    // After sign-out the cached token is no longer valid: --print-token starts a new sign-in.
    let sign_out = env.url("app", "/.pomerium/sign_out");
    let (page, _) = b.get(&sign_out).await;
    b.client
        .post(&sign_out)
        .form(&[("csrf", csrf_field(&page.body))])
        .send()
        .await
        .unwrap();
    let stale = reuse("1").await.unwrap();
    assert!(!stale.status.success(), "no reuse of a revoked token");
    assert!(String::from_utf8_lossy(&stale.stderr).contains("Sign in at:"));
}
