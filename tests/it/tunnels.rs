//! TCP tunnels: `vallum tcp` carries real clients (`redis-cli`, `psql`) to real servers through
//! the gateway, authorised per connection by the route's policy.

use crate::signin::{Browser, Env};
use crate::support::redis::RedisServer;
use crate::support::{bin, free_port};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A programmatic-login token for `user` on `host` (the test plays the browser).
async fn token_for(env: &Env, host: &str, user: &str) -> String {
    env.idp.login_as(user);
    let addr = env.gw.addr();
    let b = Browser::resolving(&[
        ("authenticate.localhost", addr),
        (&format!("{host}.localhost"), addr),
    ]);
    let mut api = url::Url::parse(&env.url(host, "/.pomerium/api/v1/login")).unwrap();
    api.query_pairs_mut()
        .append_pair("pomerium_redirect_uri", "http://127.0.0.1:1/cb");
    let (r, _) = b.get(api.as_str()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, hops) = b
        .browse_until(r.body.trim(), |u| u.contains("pomerium_jwt="))
        .await;
    url::Url::parse(hops.last().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "pomerium_jwt")
        .map(|(_, v)| v.to_string())
        .unwrap()
}

struct Tunnel {
    child: Child,
    port: u16,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn tunnel(env: &Env, target: &str, token: &str) -> Tunnel {
    let port = free_port();
    let host = target.split(':').next().unwrap();
    let child = Command::new(bin())
        .args([
            "tcp",
            target,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--gateway",
            &format!("http://{host}:{}", env.gw.port),
            "--token",
            token,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "vallum tcp did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Tunnel { child, port }
}

async fn run(cmd: &str, args: Vec<String>) -> std::process::Output {
    let cmd = cmd.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new(&cmd)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd} ({e}); install it"))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn redis_and_postgres_through_tunnels_authorised_per_connection() {
    let redis = RedisServer::start().await;
    let env = Env::with_routes(
        "",
        &format!(
            "  - from: tcp+http://redis.localhost:6379\n    to: tcp://127.0.0.1:{}\n    policy:\n      allow:\n        and:\n          - email:\n              is: alice@example.com\n\
             \x20 - from: tcp+http://pg.localhost:5432\n    to: tcp://127.0.0.1:5432\n    allow_any_authenticated_user: true\n",
            redis.port
        ),
    )
    .await;
    let alice = token_for(&env, "redis", "alice-id").await;
    let t = tunnel(&env, "redis.localhost:6379", &alice).await;
    let out = run(
        "redis-cli",
        vec!["-p".into(), t.port.to_string(), "PING".into()],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "PONG",
        "{out:?}"
    );
    let out = run(
        "redis-cli",
        vec![
            "-p".into(),
            t.port.to_string(),
            "SET".into(),
            "k".into(),
            "through-vallum".into(),
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let out = run(
        "redis-cli",
        vec!["-p".into(), t.port.to_string(), "GET".into(), "k".into()],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "through-vallum"
    );

    // Bob may use PostgreSQL but not Redis.
    let bob_pg = token_for(&env, "pg", "bob-id").await;
    let pg = tunnel(&env, "pg.localhost:5432", &bob_pg).await;
    let out = run(
        "psql",
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            pg.port.to_string(),
            "-U".into(),
            "postgres".into(),
            "-d".into(),
            "postgres".into(),
            "-tAc".into(),
            "select 40 + 2".into(),
        ],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "psql through the tunnel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bob_redis = token_for(&env, "redis", "bob-id").await;
    let denied = tunnel(&env, "redis.localhost:6379", &bob_redis).await;
    let out = run(
        "redis-cli",
        vec!["-p".into(), denied.port.to_string(), "PING".into()],
    )
    .await;
    assert_ne!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "PONG",
        "the policy refuses bob"
    );
    let forged = tunnel(&env, "redis.localhost:6379", "forged-token").await;
    let out = run(
        "redis-cli",
        vec!["-p".into(), forged.port.to_string(), "PING".into()],
    )
    .await;
    assert_ne!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "PONG",
        "no session, no tunnel"
    );
    assert!(env.gw.log().contains("tunnel open"));
}
