//! TCP tunnels: `vallum tcp` carries real clients (`redis-cli`, `psql`) to real servers through
//! the gateway, authorised per connection by the route's policy.

use crate::signin::{Browser, Env};
use crate::support::bin;
use crate::support::redis::RedisServer;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    let host = target.split(':').next().unwrap();
    // Port 0: the tunnel binds a port itself and says which. A port picked here and bound there
    // could be taken in between by any other socket on the machine.
    let mut child = Command::new(bin())
        .args([
            "tcp",
            target,
            "--listen",
            "127.0.0.1:0",
            "--gateway",
            &format!("http://{host}:{}", env.gw.port),
            "--token",
            token,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        // Keep draining, so later lines never fill the pipe and stall the tunnel.
        std::thread::spawn(move || lines.for_each(drop));
        first
    });
    let first = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("vallum tcp said nothing for 10 s")
        .unwrap();
    // "listening on 127.0.0.1:PORT → target through gateway"
    let port = first
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("vallum tcp did not listen: {first:?}"));
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

/// `redis-cli PING` through the tunnel answers `PONG`.
async fn assert_pong(t: &Tunnel) {
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
}

#[tokio::test]
async fn redis_and_postgres_through_tunnels_authorised_per_connection() {
    let redis = RedisServer::start().await;
    let env = Env::with_routes(
        "",
        &format!(
            "  - from: tcp+http://redis.localhost:6379\n    to: tcp://127.0.0.1:{}\n    policy:\n      allow:\n        and:\n          - email:\n              is: alice@example.com\n\
             \x20 - from: tcp+http://pg.localhost:5432\n    to: tcp://127.0.0.1:5432\n    allow_any_authenticated_user: true\n\
             \x20 - from: tcp+http://cache.localhost:80\n    to: tcp://127.0.0.1:{}\n    allow_any_authenticated_user: true\n",
            redis.port, redis.port
        ),
    )
    .await;
    // A service on the scheme's default port (`tcp+http://…:80`, `tcp+https://…:443`, as real
    // Pomerium configs write) is a tunnel like any other.
    let bob = token_for(&env, "cache", "bob-id").await;
    let t = tunnel(&env, "cache.localhost:80", &bob).await;
    assert_pong(&t).await;
    drop(t);
    let alice = token_for(&env, "redis", "alice-id").await;
    let t = tunnel(&env, "redis.localhost:6379", &alice).await;
    assert_pong(&t).await;
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
    assert!(env.gw.log_has("tunnel open"));
}

/// Sends one CONNECT as `pomerium-cli tcp` writes it (Go's `http.Request.Write`) and returns the
/// response head and the open connection.
async fn pomerium_cli_connect(
    env: &Env,
    target: &str,
    token: Option<&str>,
) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(env.gw.addr()).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Pomerium {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: Go-http-client/1.1\r\n{auth}\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("an answer to CONNECT")
            .unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), s)
}

/// Pomerium's tunnel clients (`pomerium-cli tcp`, Pomerium Desktop) speak `CONNECT host:port`
/// with `Authorization: Pomerium <token>`: `200` and then the bytes; without a token, the 302
/// that makes them fetch one; a policy that says no, 403.
#[tokio::test]
async fn pomerium_cli_connect_opens_the_same_tunnels() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = RedisServer::start().await;
    let env = Env::with_routes(
        "",
        &format!(
            "  - from: tcp+http://redis.localhost:6379\n    to: tcp://127.0.0.1:{}\n    policy:\n      allow:\n        and:\n          - email:\n              is: alice@example.com\n",
            redis.port
        ),
    )
    .await;
    let alice = token_for(&env, "redis", "alice-id").await;
    let (head, mut s) = pomerium_cli_connect(&env, "redis.localhost:6379", Some(&alice)).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    s.write_all(b"PING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut pong))
        .await
        .expect("PONG through the tunnel")
        .unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    drop(s);

    let (head, _) = pomerium_cli_connect(&env, "redis.localhost:6379", None).await;
    assert!(head.starts_with("HTTP/1.1 302 "), "{head}");
    assert!(head.to_ascii_lowercase().contains("location: "), "{head}");

    let bob = token_for(&env, "redis", "bob-id").await;
    let (head, _) = pomerium_cli_connect(&env, "redis.localhost:6379", Some(&bob)).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");

    // An ordinary request on a connection is untouched by the look for a CONNECT.
    let r = env.gw.get("redis.localhost:6379", "/").await;
    assert_ne!(r.status, 200, "a tunnel route is no web page");
}
