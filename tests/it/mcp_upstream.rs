//! MCP servers that need the user's own token (`upstream_oauth2`, or discovered at the server's
//! own authorization server) and MCP client apps (`mcp.client`), through the running gateway:
//! the grant at the upstream's consent, its use, refresh and revocation, kept sealed in every
//! store; the client app's delegated token, the server listing, connect and disconnect; and a
//! second Vallum gateway as a remote MCP server whose authorization server Vallum registers at.

use crate::mcp_auth::*;
use crate::signin::{Browser, Env};
use crate::support::client;
use crate::support::upstream::Echo;
use serde_json::{json, Value};

#[tokio::test]
async fn an_mcp_server_gets_the_users_own_upstream_token_refreshed_and_never_the_clients() {
    upstream_grant_suite("", None).await;
}

/// The same with the upstream tokens in Redis and in PostgreSQL: sealed there too (the store
/// never holds a token in the clear).
#[tokio::test]
async fn upstream_tokens_are_kept_sealed_in_redis_and_postgresql() {
    let redis = crate::support::redis::RedisServer::start().await;
    upstream_grant_suite(&crate::fleet::redis_keys(&redis.url()), Some(&redis)).await;
    let pg = crate::support::postgres::PgServer::start().await;
    upstream_grant_suite(&crate::fleet::postgres_keys(&pg.url()), None).await;
}

/// Whether any value in `redis` holds `needle` in the clear.
async fn redis_holds(redis: &crate::support::redis::RedisServer, needle: &str) -> bool {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the grant is in Redis");
    for k in keys {
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        if v.unwrap_or_default()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            return true;
        }
    }
    false
}

/// The upstream grant, its use and refresh, and its revocation, with `store` (config keys);
/// with `redis`, also that the store never holds the user's upstream token in the clear.
async fn upstream_grant_suite(store: &str, redis: Option<&crate::support::redis::RedisServer>) {
    let upstream_as = crate::support::idp::Idp::start().await;
    upstream_as.state.lock().unwrap().access_ttl = 30; // due for refresh (30 s margin) at once
    let issuer = upstream_as.issuer();
    let env = Env::with_routes(
        &format!("runtime_flags:\n  mcp_dynamic_client_registration: true\n{store}"),
        &format!(
            "  - from: http://mcp.localhost\n    to: {{u}}\n    allow_any_authenticated_user: true\n    mcp:\n      server:\n        path: /mcp\n\
             \x20       upstream_oauth2:\n          client_id: {id}\n          client_secret: {secret}\n          scopes: [repo, read]\n\
             \x20         endpoint:\n            auth_url: {issuer}/authorize\n            token_url: {issuer}/token\n            auth_style: in_params\n",
            id = upstream_as.client_id,
            secret = upstream_as.client_secret,
        ),
    )
    .await;
    let client_id = register_public(&env).await;
    let b = browser(&env);
    let back = authorize(&env, &b, "alice-id", &client_id, &[]).await;
    let asked = upstream_as.state.lock().unwrap().authorize_queries.clone();
    assert_eq!(
        asked.len(),
        1,
        "the person was sent to the upstream's consent once"
    );
    assert_eq!(asked[0].get("scope").map(String::as_str), Some("repo read"));
    assert_eq!(
        asked[0].get("redirect_uri").cloned(),
        Some(format!("{}/.pomerium/mcp/oauth/callback", origin(&env)))
    );
    let (status, tokens) =
        exchange(&env, &client_id, &param(&back, "code").unwrap(), VERIFIER).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();

    // The upstream gets the user's upstream token, not Vallum's, and it is refreshed when due.
    let seen = |body: Value| {
        serde_json::from_value::<Echo>(body)
            .unwrap()
            .header("authorization")
            .map(str::to_string)
    };
    let (status, _, first) = call(&env, Some(access), "echo").await;
    assert_eq!(status, 200, "{first}");
    let first = seen(first).unwrap();
    assert!(first.starts_with("Bearer at-"), "{first}");
    let (_, _, second) = call(&env, Some(access), "echo").await;
    let second = seen(second).unwrap();
    assert!(
        second.starts_with("Bearer at-") && second != first,
        "refreshed: {first} then {second}"
    );

    // A second authorization of the same user does not ask the upstream again.
    let again = authorize(&env, &b, "alice-id", &client_id, &[]).await;
    assert!(param(&again, "code").is_some());
    assert_eq!(upstream_as.state.lock().unwrap().authorize_queries.len(), 1);

    if let Some(redis) = redis {
        let token = second.trim_start_matches("Bearer ");
        assert!(
            !redis_holds(redis, token).await,
            "the upstream token is sealed in Redis"
        );
    }

    // The upstream revokes the grant: the next call is a 401 for the client, and its refresh
    // is refused, so it must authorize again (and the person grant access again).
    upstream_as.revoke_refresh_tokens();
    let (status, challenge, _) = call(&env, Some(access), "echo").await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"), "{challenge}");
    let (status, refused) = post_form(
        &env,
        "/.pomerium/mcp/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant")),
        "{refused}"
    );
    assert!(
        !env.gw.log().contains("at-"),
        "upstream tokens never reach the log"
    );
}

#[tokio::test]
async fn an_mcp_client_app_calls_the_servers_for_its_user_and_manages_their_grants() {
    let upstream_as = crate::support::idp::Idp::start().await;
    let issuer = upstream_as.issuer();
    let env = Env::with_routes(
        "",
        &format!(
            "  - from: http://chat.localhost\n    to: {{u}}\n    allow_any_authenticated_user: true\n    mcp:\n      client: {{}}\n\
             \x20 - from: http://mcp.localhost\n    to: {{u}}\n    name: Tools\n    mcp:\n      server:\n        path: /mcp\n\
             \x20   policy:\n      - allow:\n          or:\n            - email:\n                is: alice@example.com\n\
             \x20     - deny:\n          or:\n            - mcp_tool:\n                is: delete\n\
             \x20 - from: http://gh.localhost\n    to: {{u}}\n    allow_any_authenticated_user: true\n    mcp:\n      server:\n        path: /mcp\n\
             \x20       upstream_oauth2:\n          client_id: {id}\n          client_secret: {secret}\n\
             \x20         endpoint:\n            auth_url: {issuer}/authorize\n            token_url: {issuer}/token\n",
            id = upstream_as.client_id,
            secret = upstream_as.client_secret,
        ),
    )
    .await;
    let addr = env.gw.addr();
    let b = Browser::resolving(&[
        ("chat.localhost", addr),
        ("mcp.localhost", addr),
        ("gh.localhost", addr),
        ("authenticate.localhost", addr),
    ]);
    let at = |host: &str, path: &str| format!("http://{host}.localhost:{}{path}", env.gw.port);
    env.idp.login_as("alice-id");
    let (resp, hops) = b.browse(&at("chat", "/")).await;
    assert_eq!(resp.status, 200, "{hops:#?}");
    let echo: Echo = serde_json::from_str(&resp.body).unwrap();
    let delegated = echo
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    assert!(
        delegated.starts_with("vmcp_at."),
        "the app gets a token for its user"
    );

    // The app's token works on the MCP servers, under their policies.
    let mcp_call = |host: &'static str, tool: &'static str| {
        let (token, port) = (delegated.clone(), env.gw.port);
        let url = env.gw.url("/mcp");
        async move {
            let r = client()
                .post(url)
                .header("host", format!("{host}.localhost:{port}"))
                .header("content-type", "application/json")
                .bearer_auth(token)
                .body(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":{}}}).to_string())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (
                status,
                serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = mcp_call("mcp", "echo").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mcp_call("mcp", "delete").await.1["error"]["code"], -32001);

    // The server listing, for the app (its token) and for the browser (its cookie).
    let list = |token: Option<String>| {
        let (port, url) = (env.gw.port, env.gw.url("/.pomerium/mcp/routes"));
        async move {
            let mut r = client()
                .get(url)
                .header("host", format!("chat.localhost:{port}"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            crate::support::status_and_json(r.send().await.unwrap()).await
        }
    };
    let (status, listed) = list(Some(delegated.clone())).await;
    assert_eq!(status, 200, "{listed}");
    let server = |l: &Value, host: &str| {
        l["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["url"].as_str().unwrap().contains(host))
            .cloned()
            .unwrap()
    };
    assert_eq!(server(&listed, "mcp.localhost")["name"], "Tools");
    assert_eq!(server(&listed, "mcp.localhost")["connected"], true);
    assert_eq!(server(&listed, "gh.localhost")["needs_oauth"], true);
    assert_eq!(server(&listed, "gh.localhost")["connected"], false);
    assert_eq!(list(None).await.0, 401, "nobody without a session or token");
    // Without the user's upstream grant the server refuses the app's token with a challenge.
    assert_eq!(mcp_call("gh", "echo").await.0, 401);

    // Connect in the browser: the upstream's consent, then back to the app.
    let back = at("chat", "/connected");
    let connect = format!(
        "{}?redirect_url={}",
        at("gh", "/.pomerium/mcp/connect"),
        url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
    );
    let (resp, hops) = b.browse(&connect).await;
    assert_eq!(resp.status, 200, "{hops:#?}");
    assert_eq!(hops.last().unwrap(), &back, "{hops:#?}");
    assert_eq!(
        server(&list(Some(delegated.clone())).await.1, "gh.localhost")["connected"],
        true
    );
    let (status, body) = mcp_call("gh", "echo").await;
    assert_eq!(status, 200, "{body}");
    let seen: Echo = serde_json::from_value(body).unwrap();
    assert!(
        seen.header("authorization")
            .unwrap()
            .starts_with("Bearer at-"),
        "the user's upstream token"
    );
    // A connect that would send the browser to a host that is not an MCP client app: refused.
    let evil = format!(
        "{}?redirect_url=http%3A%2F%2Fapp.localhost%3A{}%2F",
        at("gh", "/.pomerium/mcp/connect"),
        env.gw.port
    );
    assert_eq!(b.get(&evil).await.0.status, 400);

    // Disconnect drops the grant.
    let r = client()
        .post(env.gw.url("/.pomerium/mcp/routes/disconnect"))
        .header("host", format!("chat.localhost:{}", env.gw.port))
        .bearer_auth(&delegated)
        .header("content-type", "application/json")
        .body(json!({"routes": [at("gh", "/mcp")]}).to_string())
        .send()
        .await
        .unwrap();
    let (status, after) = crate::support::status_and_json(r).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(server(&after, "gh.localhost")["connected"], false);

    // Sign-out ends the app's token too.
    assert!(b.sign_out(&at("chat", "/.pomerium/sign_out")).await < 400);
    assert_eq!(mcp_call("mcp", "echo").await.0, 401);
}

/// Gateway B: an MCP server on `localhost` behind its own Vallum authorization server, with
/// dynamic registration; A fronts it and must obtain the user's token there.
async fn remote_gateway(env: &Env) -> crate::support::Gateway {
    let port = crate::support::free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\nauthenticate_service_url: http://authenticate-b.localhost:{port}\n\
         {idp}cookie_secret: {c}\nshared_secret: {c}\ncookie_name: _vallum_b\nsigninrate: 0\n\
         runtime_flags:\n  mcp_dynamic_client_registration: true\n\
         routes:\n  - from: http://localhost\n    to: {u}\n    mcp:\n      server:\n        path: /mcp\n\
         \x20   policy:\n      - allow:\n          or:\n            - email:\n                is: alice@example.com\n",
        idp = env.idp.config(),
        c = "q2Yw4cR1d3B3pXk9b0d1c3Jlc2VjcmV0X2Zvcl9iYWE=",
        u = env.up.url(),
    )
    .replace("signinrate: 0\n", "signin_rate_limit: 0\n");
    let gw = crate::support::Gateway::start_with(port, &text, &[]).await;
    gw.eventually("identity provider discovered", || async {
        gw.log().contains("identity provider discovered")
    })
    .await;
    gw
}

#[tokio::test]
async fn vallum_registers_itself_at_an_mcp_servers_own_authorization_server() {
    // A's route to B is added once B's port is known: A reloads its config.
    let env = mcp_env("runtime_flags:\n  mcp_dynamic_client_registration: true\n").await;
    let b = remote_gateway(&env).await;
    let (pa, pb) = (env.gw.port, b.port);
    let config = std::fs::read_to_string(&env.gw.config).unwrap();
    env.gw.rewrite_config(&format!(
        "{config}  - from: http://localhost\n    to: http://localhost:{pb}\n    allow_any_authenticated_user: true\n    mcp:\n      server:\n        path: /mcp\n\
         \x20       authorization_server_url: http://localhost:{pb}\n"
    ));
    env.gw
        .eventually("the route to B is served", || async {
            env.gw.log().contains("config reloaded")
        })
        .await;
    let a = format!("http://localhost:{pa}");
    let (_, reg) = register_at(
        &a,
        json!({"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none"}),
    )
    .await;
    let client_id = reg["client_id"].as_str().unwrap().to_string();
    let addr = env.gw.addr();
    let browser = Browser::resolving(&[
        ("authenticate.localhost", addr),
        ("authenticate-b.localhost", b.addr()),
    ]);
    env.idp.login_as("alice-id");
    let mut url = url::Url::parse(&format!("{a}/.pomerium/mcp/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", CALLBACK)
        .append_pair("code_challenge", &challenge_for(VERIFIER))
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", &format!("{a}/mcp"));
    let (_, hops) = browse_consenting(&browser, url.as_str(), CALLBACK).await;
    let back = url::Url::parse(hops.last().unwrap()).unwrap();
    assert!(
        hops.iter()
            .any(|h| h.starts_with(&format!("http://localhost:{pb}/.pomerium/mcp/authorize"))),
        "the person was sent to B's authorization: {hops:#?}\n{}",
        env.gw.log()
    );
    assert!(
        b.log().contains("MCP client registered client=\"Vallum\""),
        "A registered at B:\n{}",
        b.log()
    );
    let code = param(&back, "code").unwrap_or_else(|| panic!("{hops:#?}\n{}", env.gw.log()));
    let r = client()
        .post(format!("{a}/.pomerium/mcp/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    let (status, tokens) = crate::support::status_and_json(r).await;
    assert_eq!(status, 200, "{tokens}");
    // A call through A reaches B with B's token for this user, and B's policy decides it.
    let r = client()
        .post(format!("{a}/mcp"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .header("content-type", "application/json")
        .body(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}\nA:\n{}\nB:\n{}", env.gw.log(), b.log());
    let echo: Echo = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echo.header("authorization"),
        None,
        "B kept its token from its upstream"
    );
    assert!(
        b.log().contains("user=\"alice-id\"") || b.log().contains("alice@example.com"),
        "{}",
        b.log()
    );
}

#[tokio::test]
async fn discovery_from_resource_metadata_follows_only_allowed_public_authorization_servers() {
    let env = mcp_env(
        "runtime_flags:\n  mcp_dynamic_client_registration: true\nmcp_allowed_as_metadata_domains: [localhost]\n",
    )
    .await;
    let client_id = register_public(&env).await;
    // mcp.localhost's upstream publishes no protected-resource metadata: no token is needed, and
    // the authorization goes through as on any MCP route.
    let b = browser(&env);
    let back = authorize(&env, &b, "alice-id", &client_id, &[]).await;
    let (status, tokens) =
        exchange(&env, &client_id, &param(&back, "code").unwrap(), VERIFIER).await;
    assert_eq!(status, 200, "{tokens}");
    let (status, _, body) = call(&env, tokens["access_token"].as_str(), "echo").await;
    assert_eq!(status, 200, "{body}");
    assert!(env
        .gw
        .log()
        .contains("publishes no protected-resource metadata"));

    // A server whose metadata names an authorization server that is not https on an allowed
    // domain, at a public address (here: Vallum B on loopback) is refused, and says why.
    let remote = remote_gateway(&env).await;
    let config = std::fs::read_to_string(&env.gw.config).unwrap();
    env.gw.rewrite_config(&format!(
        "{config}  - from: http://localhost\n    to: http://localhost:{}\n    allow_any_authenticated_user: true\n    mcp:\n      server:\n        path: /mcp\n",
        remote.port
    ));
    env.gw
        .eventually("reloaded", || async {
            env.gw.log().contains("config reloaded")
        })
        .await;
    let a = format!("http://localhost:{}", env.gw.port);
    let (_, reg) = register_at(
        &a,
        json!({"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none"}),
    )
    .await;
    let browser = Browser::resolving(&[("authenticate.localhost", env.gw.addr())]);
    let mut url = url::Url::parse(&format!("{a}/.pomerium/mcp/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", reg["client_id"].as_str().unwrap())
        .append_pair("redirect_uri", CALLBACK)
        .append_pair("code_challenge", &challenge_for(VERIFIER))
        .append_pair("code_challenge_method", "S256");
    let (resp, hops) = browse_consenting(&browser, url.as_str(), CALLBACK).await;
    assert_eq!(resp.status, 502, "{hops:#?}");
    assert!(
        resp.body.contains("mcp_allowed_as_metadata_domains"),
        "{}",
        resp.body
    );
    assert!(
        !remote.log().contains("MCP client registered"),
        "nothing was registered at B"
    );
}
