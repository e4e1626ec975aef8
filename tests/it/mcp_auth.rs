//! The authorization server MCP clients use (RFC 9728 → RFC 8414 → RFC 7591 → code + PKCE →
//! tokens), through the running gateway and a real sign-in at the test OpenID provider: the
//! challenge, the metadata, registration, authorization, the token exchange and refresh, tokens
//! on MCP requests (and kept from the upstream), and every refusal on the way.

use crate::signin::{Browser, Env};
use crate::support::client;
use crate::support::upstream::Echo;
use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;

pub(crate) const CALLBACK: &str = "http://127.0.0.1:9/cb";
pub(crate) const VERIFIER: &str = "a-verifier-that-is-long-enough-for-pkce-0123456789abcdef";

pub(crate) fn challenge_for(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

pub(crate) async fn mcp_env(extra: &str) -> Env {
    Env::with_routes(
        &format!("mcp_access_token_lifetime: 2s\n{extra}"),
        "  - from: http://mcp.localhost\n    to: {u}\n    mcp:\n      server:\n        path: /mcp\n\
         \x20   policy:\n      - allow:\n          or:\n            - email:\n                is: alice@example.com\n\
         \x20     - deny:\n          or:\n            - mcp_tool:\n                is: delete\n",
    )
    .await
}

pub(crate) fn mcp_host(env: &Env) -> String {
    format!("mcp.localhost:{}", env.gw.port)
}

pub(crate) fn origin(env: &Env) -> String {
    format!("http://{}", mcp_host(env))
}

pub(crate) fn browser(env: &Env) -> Browser {
    let addr = env.gw.addr();
    Browser::resolving(&[("mcp.localhost", addr), ("authenticate.localhost", addr)])
}

pub(crate) async fn get_json(env: &Env, path: &str) -> (u16, Value) {
    let r = client()
        .get(env.gw.url(path))
        .header("host", mcp_host(env))
        .send()
        .await
        .unwrap();
    crate::support::status_and_json(r).await
}

pub(crate) async fn post_form(env: &Env, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = client()
        .post(env.gw.url(path))
        .header("host", mcp_host(env))
        .form(form)
        .send()
        .await
        .unwrap();
    crate::support::status_and_json(r).await
}

/// One JSON-RPC call to the MCP endpoint with `token`: the status, `WWW-Authenticate`, body.
pub(crate) async fn call(env: &Env, token: Option<&str>, tool: &str) -> (u16, String, Value) {
    let mut req = client()
        .post(env.gw.url("/mcp"))
        .header("host", mcp_host(env))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":tool,"arguments":{}}})
                .to_string(),
        );
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
    (status, challenge, body)
}

pub(crate) async fn register(env: &Env, metadata: Value) -> (u16, Value) {
    let url = env.gw.url("/.pomerium/mcp/register");
    register_via(client().post(url).header("host", mcp_host(env)), metadata).await
}

/// A registration at the authorization server of `origin` (a name the test client resolves).
pub(crate) async fn register_at(origin: &str, metadata: Value) -> (u16, Value) {
    register_via(
        client().post(format!("{origin}/.pomerium/mcp/register")),
        metadata,
    )
    .await
}

async fn register_via(req: reqwest::RequestBuilder, metadata: Value) -> (u16, Value) {
    let r = req
        .header("content-type", "application/json")
        .body(metadata.to_string())
        .send()
        .await
        .unwrap();
    crate::support::status_and_json(r).await
}

/// Follows redirects like `browse_until`, allowing the agent on every consent page on the way
/// (as the person would click "Allow"); the last response and every URL visited.
pub(crate) async fn browse_consenting(
    b: &Browser,
    url: &str,
    stop: &str,
) -> (crate::support::Resp, Vec<String>) {
    let mut all = Vec::new();
    let mut next = url.to_string();
    loop {
        let (resp, hops) = b.browse_until(&next, |u| u.starts_with(stop)).await;
        all.extend(hops);
        let last = all.last().cloned().unwrap_or_default();
        if resp.status != 200 || !resp.body.contains("name=\"decision\"") || last.starts_with(stop)
        {
            return (resp, all);
        }
        let r = b
            .client
            .post(&last)
            .form(&[
                ("csrf", crate::signin::csrf_field(&resp.body).as_str()),
                ("decision", "allow"),
            ])
            .send()
            .await
            .unwrap();
        let to = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let Some(to) = to else {
            return (crate::support::Resp::from(r).await, all);
        };
        next = url::Url::parse(&last)
            .unwrap()
            .join(&to)
            .unwrap()
            .to_string();
        if next.starts_with(stop) {
            all.push(next);
            return (crate::support::Resp::from(r).await, all);
        }
    }
}

/// A public client (PKCE only) registered at the MCP host: its id.
pub(crate) async fn register_public(env: &Env) -> String {
    let metadata = json!({"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none"});
    let (status, reg) = register(env, metadata).await;
    assert_eq!(status, 201, "{reg}");
    reg["client_id"].as_str().unwrap().to_string()
}

/// An authorization request for `client_id` at the MCP host (`extra` replaces or adds params).
pub(crate) fn authorize_url(env: &Env, client_id: &str, extra: &[(&str, &str)]) -> String {
    let challenge = challenge_for(VERIFIER);
    let resource = format!("{}/mcp", origin(env));
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", CALLBACK),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-1"),
        ("resource", &resource),
    ];
    for (k, v) in extra {
        params.retain(|(n, _)| n != k);
        params.push((k, v));
    }
    let mut url = url::Url::parse(&format!("{}/.pomerium/mcp/authorize", origin(env))).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

/// Signs `user` in through the authorize endpoint, allowing the client; the URL the client is
/// sent back to.
pub(crate) async fn authorize(
    env: &Env,
    b: &Browser,
    user: &str,
    client_id: &str,
    extra: &[(&str, &str)],
) -> url::Url {
    env.idp.login_as(user);
    let url = authorize_url(env, client_id, extra);
    let (_, hops) = browse_consenting(b, &url, CALLBACK).await;
    url::Url::parse(hops.last().unwrap()).unwrap()
}

pub(crate) fn param(u: &url::Url, k: &str) -> Option<String> {
    u.query_pairs()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.into_owned())
}

pub(crate) async fn exchange(
    env: &Env,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> (u16, Value) {
    post_form(
        env,
        "/.pomerium/mcp/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier),
        ],
    )
    .await
}

#[tokio::test]
async fn an_agent_discovers_registers_signs_in_and_calls_tools() {
    let env = mcp_env("runtime_flags:\n  mcp_dynamic_client_registration: true\n").await;
    // No token: a 401 that points at the protected-resource metadata, never a sign-in redirect.
    let (status, challenge, _) = call(&env, None, "echo").await;
    let prm_url = format!("{}/.well-known/oauth-protected-resource/mcp", origin(&env));
    assert_eq!(status, 401);
    assert_eq!(challenge, format!("Bearer resource_metadata=\"{prm_url}\""));
    let (status, prm) = get_json(&env, "/.well-known/oauth-protected-resource/mcp").await;
    assert_eq!(status, 200);
    assert_eq!(prm["resource"], json!(format!("{}/mcp", origin(&env))));
    assert_eq!(prm["authorization_servers"], json!([origin(&env)]));
    let (_, asm) = get_json(&env, "/.well-known/oauth-authorization-server").await;
    assert_eq!(asm["issuer"], json!(origin(&env)));
    assert_eq!(asm["code_challenge_methods_supported"], json!(["S256"]));
    let reg_url = format!("{}/.pomerium/mcp/register", origin(&env));
    assert_eq!(asm["registration_endpoint"], json!(reg_url));

    // Registration: loopback or https redirect URIs only.
    let (status, bad) = register(&env, json!({"redirect_uris": ["http://evil.example/cb"]})).await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("invalid_redirect_uri"))
    );
    let (status, reg) = register(
        &env,
        json!({"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none", "client_name": "it agent"}),
    )
    .await;
    assert_eq!(status, 201, "{reg}");
    let client_id = reg["client_id"].as_str().unwrap().to_string();
    assert!(reg.get("client_secret").is_none());

    // Sign-in through the IdP, back to the client with a code, `state` and `iss`.
    let b = browser(&env);
    let back = authorize(&env, &b, "alice-id", &client_id, &[]).await;
    assert_eq!(param(&back, "state").as_deref(), Some("st-1"));
    assert_eq!(param(&back, "iss"), Some(origin(&env)));
    let code = param(&back, "code").expect("a code");

    // The code: a wrong verifier fails and does not spend it; the right one works once.
    let (status, err) = exchange(&env, &client_id, &code, &format!("{VERIFIER}x")).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, tokens) = exchange(&env, &client_id, &code, VERIFIER).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["expires_in"].as_u64().unwrap() <= 2);
    let (status, replay) = exchange(&env, &client_id, &code, VERIFIER).await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    // The token opens the MCP route; the upstream never sees it; the policy still decides.
    let (status, _, body) = call(&env, Some(&access), "echo").await;
    assert_eq!(status, 200, "{body}");
    let echo: Echo = serde_json::from_value(body).unwrap();
    assert_eq!(
        echo.header("authorization"),
        None,
        "Vallum's token is kept from the upstream"
    );
    let (status, _, refused) = call(&env, Some(&access), "delete").await;
    assert_eq!(
        (status, refused["error"]["code"].as_i64()),
        (200, Some(-32001))
    );

    // A forged token is refused as invalid, and so is the access token once it expires.
    let forged = format!("{}x", &access[..access.len() - 1]);
    let (status, challenge, _) = call(&env, Some(&forged), "echo").await;
    assert_eq!(status, 401);
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\", resource_metadata="),
        "{challenge}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(call(&env, Some(&access), "echo").await.0, 401, "expired");

    // Refresh: a new pair, and the old refresh token is spent (a replay is refused).
    let refresh_form = |rt: &str| {
        vec![
            ("grant_type", "refresh_token".to_string()),
            ("client_id", client_id.clone()),
            ("refresh_token", rt.to_string()),
        ]
    };
    let form = refresh_form(&refresh);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, renewed) = post_form(&env, "/.pomerium/mcp/token", &form).await;
    assert_eq!(status, 200, "{renewed}");
    let (status, replayed) = post_form(&env, "/.pomerium/mcp/token", &form).await;
    assert_eq!(
        (status, replayed["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let access2 = renewed["access_token"].as_str().unwrap().to_string();
    assert_eq!(call(&env, Some(&access2), "echo").await.0, 200);

    // Sign-out ends the session, and with it the token and its refresh token.
    let signed_out = b
        .sign_out(&format!("{}/.pomerium/sign_out", origin(&env)))
        .await;
    assert!(signed_out < 400, "{signed_out}");
    assert_eq!(
        call(&env, Some(&access2), "echo").await.0,
        401,
        "token ended with its session"
    );
    let form = refresh_form(renewed["refresh_token"].as_str().unwrap());
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, ended) = post_form(&env, "/.pomerium/mcp/token", &form).await;
    assert_eq!(
        (status, ended["error"].as_str()),
        (400, Some("invalid_grant")),
        "{ended}"
    );
}

#[tokio::test]
async fn the_authorization_server_refuses_what_it_cannot_check() {
    let env = mcp_env("runtime_flags:\n  mcp_dynamic_client_registration: true\n").await;
    let (_, reg) = register(
        &env,
        json!({"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    let (id, secret) = (
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );
    let b = browser(&env);

    // An unknown client or an unregistered redirect URI is a page, never a redirect.
    for (client_id, redirect) in [
        ("vmcp_ci.forged", CALLBACK),
        (id, "http://127.0.0.1:9/other"),
    ] {
        let mut url =
            url::Url::parse(&format!("{}/.pomerium/mcp/authorize", origin(&env))).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect)
            .append_pair("code_challenge", &challenge_for(VERIFIER))
            .append_pair("code_challenge_method", "S256");
        let (resp, _) = b.get(url.as_str()).await;
        assert_eq!(resp.status, 400, "{client_id} {redirect}");
        assert!(resp.header("location").is_none());
    }
    // Without S256 PKCE, or for another resource: an OAuth error at the client's URI.
    let back = authorize(
        &env,
        &b,
        "alice-id",
        id,
        &[("code_challenge_method", "plain")],
    )
    .await;
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_request"));
    let elsewhere = format!("{}/not-mcp", "http://app.localhost");
    let back = authorize(&env, &b, "alice-id", id, &[("resource", &elsewhere)]).await;
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_target"));

    // A confidential client must authenticate at the token endpoint.
    let back = authorize(&env, &b, "alice-id", id, &[]).await;
    let code = param(&back, "code").unwrap();
    let (status, err) = exchange(&env, id, &code, VERIFIER).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", id),
        ("client_secret", secret),
        ("code", &code),
        ("redirect_uri", CALLBACK),
        ("code_verifier", VERIFIER),
    ];
    let (status, tokens) = post_form(&env, "/.pomerium/mcp/token", &form).await;
    assert_eq!(status, 200, "{tokens}");
    // A token for one host is nothing on another host's MCP route, and unknown grants say so.
    let (status, _) = post_form(
        &env,
        "/.pomerium/mcp/token",
        &[
            ("grant_type", "password"),
            ("client_id", id),
            ("client_secret", secret),
        ],
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn registration_is_off_unless_the_flag_is_on_and_mcp_off_means_sign_in() {
    let env = mcp_env("").await;
    let (_, asm) = get_json(&env, "/.well-known/oauth-authorization-server").await;
    assert!(asm.get("registration_endpoint").is_none(), "{asm}");
    let (status, _) = register(&env, json!({"redirect_uris": [CALLBACK]})).await;
    assert_eq!(status, 404);

    let env = mcp_env("runtime_flags:\n  mcp: false\n").await;
    let (status, _) = get_json(&env, "/.well-known/oauth-authorization-server").await;
    assert_ne!(status, 200, "no authorization server with mcp off");
    let (status, challenge, _) = call(&env, None, "echo").await;
    assert_eq!(
        (status, challenge.as_str()),
        (401, ""),
        "an API client is told to sign in"
    );
}

#[tokio::test]
async fn client_metadata_urls_are_fetched_only_from_allowed_public_hosts() {
    let env = mcp_env("mcp_allowed_client_id_domains: [localhost, \"*.agents.test\"]\n").await;
    let (_, asm) = get_json(&env, "/.well-known/oauth-authorization-server").await;
    assert_eq!(asm["client_id_metadata_document_supported"], json!(true));
    let b = browser(&env);
    let page = |client_id: &str| {
        let mut url =
            url::Url::parse(&format!("{}/.pomerium/mcp/authorize", origin(&env))).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", CALLBACK)
            .append_pair("code_challenge", &challenge_for(VERIFIER))
            .append_pair("code_challenge_method", "S256");
        url
    };
    for (client_id, why) in [
        (
            "https://evil.test/client.json",
            "not on mcp_allowed_client_id_domains",
        ),
        // Allowed by name, but it resolves to loopback: never fetched (SSRF).
        (
            "https://localhost:1/client.json",
            "resolves only to internal addresses",
        ),
        ("https://localhost/", "not a valid metadata URL"),
        (
            "https://nowhere.agents.test/client.json",
            "could not be fetched",
        ),
    ] {
        let (resp, _) = b.get(page(client_id).as_str()).await;
        assert_eq!(resp.status, 400, "{client_id}");
        assert!(resp.header("location").is_none());
        assert!(resp.body.contains(why), "{client_id}: {}", resp.body);
    }
    // The token endpoint does not know such a client either.
    let (status, err) =
        exchange(&env, "https://evil.test/client.json", "vmcp_ac.x", VERIFIER).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (401, Some("invalid_client"))
    );
}

#[tokio::test]
async fn the_person_allows_each_client_once_and_can_refuse() {
    let env = mcp_env("runtime_flags:\n  mcp_dynamic_client_registration: true\n").await;
    let metadata = json!({"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none", "client_name": "<b>Agent</b>"});
    let client_id = register(&env, metadata).await.1["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = browser(&env);
    env.idp.login_as("alice-id");
    // Signed in, the person is asked first: no code goes anywhere without their click.
    let url = authorize_url(&env, &client_id, &[]);
    let (page, hops) = b.browse_until(&url, |u| u.starts_with(CALLBACK)).await;
    assert_eq!(page.status, 200, "{hops:#?}");
    assert!(page.body.contains("Allow this agent?"), "{}", page.body);
    assert!(
        page.body.contains("&lt;b&gt;Agent&lt;/b&gt;"),
        "the client's name is escaped"
    );
    assert!(page.body.contains(&format!("{}/mcp", origin(&env))));
    assert!(page.body.contains("alice@example.com"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"), "never framed");
    assert!(!hops.iter().any(|h| h.starts_with(CALLBACK)));
    let submit = |csrf: String, decision: &'static str| {
        let (client, url) = (b.client.clone(), url.clone());
        async move {
            let r = client
                .post(&url)
                .form(&[("csrf", csrf.as_str()), ("decision", decision)])
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.headers()
                    .get("location")
                    .map(|l| l.to_str().unwrap().to_string()),
            )
        }
    };
    // A forged form is refused; a refusal goes back to the client as access_denied.
    assert_eq!(submit("forged".into(), "allow").await.0, 403);
    let csrf = crate::signin::csrf_field(&page.body);
    let (status, to) = submit(csrf.clone(), "deny").await;
    assert_eq!(status, 302);
    let denied = url::Url::parse(&to.unwrap()).unwrap();
    assert_eq!(param(&denied, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&denied, "code"), None);
    // Allowed once, remembered: the next authorization of this client goes straight through.
    let (_, to) = submit(csrf, "allow").await;
    assert!(param(&url::Url::parse(&to.unwrap()).unwrap(), "code").is_some());
    let (_, hops) = b.browse_until(&url, |u| u.starts_with(CALLBACK)).await;
    let back = url::Url::parse(hops.last().unwrap()).unwrap();
    assert!(param(&back, "code").is_some(), "{hops:#?}");
    // Another client still asks.
    let other = register_public(&env).await;
    let (page, _) = b
        .browse_until(&authorize_url(&env, &other, &[]), |u| {
            u.starts_with(CALLBACK)
        })
        .await;
    assert!(page.body.contains("Allow this agent?"));
}
