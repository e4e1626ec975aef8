//! Private `redis-server` processes on free ports for one test (a single server, or a Redis
//! Cluster of masters), stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    pub tls: bool,
    child: Option<Child>,
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Child {
    let plain_port = if extra.iter().any(|a| a == "--tls-port") {
        0
    } else {
        port
    };
    Command::new("redis-server")
        .args(["--port", &plain_port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}); install it (Debian: apt-get install redis-server)")
        })
}

/// Waits until the server answers: `PING` on a plain port (any reply, so a password-protected
/// server counts), an accepted connection on a TLS one.
async fn wait_ready(port: u16, plain: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if !plain {
                return;
            }
            let _ = s.write_all(b"PING\r\n").await;
            let mut buf = [0u8; 1];
            if s.read_exact(&mut buf).await.is_ok() && (buf[0] == b'+' || buf[0] == b'-') {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "redis-server did not start on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        Self::start_with(super::free_port(), &["--appendonly", "no"]).await
    }

    /// A server that keeps its data across `kill` + `restart` (append-only file, fsync always).
    pub async fn start_durable() -> RedisServer {
        Self::start_with(
            super::free_port(),
            &["--appendonly", "yes", "--appendfsync", "always"],
        )
        .await
    }

    /// A server that requires `AUTH` with this password.
    pub async fn start_with_password(password: &str) -> RedisServer {
        Self::start_with(
            super::free_port(),
            &["--appendonly", "no", "--requirepass", password],
        )
        .await
    }

    /// A TLS-only server (`rediss://`) with this certificate, trusting `ca` for client
    /// certificates, which it requires when `client_certs` is set.
    pub async fn start_tls(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
        client_certs: bool,
    ) -> RedisServer {
        let port = super::free_port();
        let (port_s, ca, cert, key) = (
            port.to_string(),
            ca.display().to_string(),
            cert.display().to_string(),
            key.display().to_string(),
        );
        let mut s = Self::start_with(
            port,
            &[
                "--appendonly",
                "no",
                "--tls-port",
                &port_s,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                if client_certs { "yes" } else { "no" },
            ],
        )
        .await;
        s.tls = true;
        s
    }

    async fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn(port, dir.path(), &extra);
        wait_ready(port, !extra.iter().any(|a| a == "--tls-port")).await;
        RedisServer {
            port,
            tls: false,
            child: Some(child),
            extra,
            dir,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: no goodbye to clients, like a crashed or partitioned Redis.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(self.port, self.dir.path(), &self.extra));
        wait_ready(self.port, !self.extra.iter().any(|a| a == "--tls-port")).await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of `n` masters (no replicas), created with `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// A port whose cluster-bus port (port + 10000) is also free.
fn cluster_port() -> u16 {
    loop {
        let p = super::free_port();
        if p > 55_000 {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl RedisCluster {
    pub async fn start(n: usize) -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..n {
            let port = cluster_port();
            nodes.push(
                RedisServer::start_with(
                    port,
                    &[
                        "--appendonly",
                        "no",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-cli ({e}); install it (Debian: apt-get install redis-tools)"
                )
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ok = true;
            for s in &cluster.nodes {
                let info: String = cluster.query(s, redis::cmd("CLUSTER").arg("INFO")).await;
                ok &= info.contains("cluster_state:ok");
            }
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster
    }

    async fn query<T: redis::FromRedisValue>(&self, s: &RedisServer, cmd: &redis::Cmd) -> T {
        let client = redis::Client::open(s.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut c).await.unwrap()
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// How many keys each master holds.
    pub async fn key_counts(&self) -> Vec<i64> {
        let mut out = Vec::new();
        for s in &self.nodes {
            out.push(self.query(s, &redis::cmd("DBSIZE")).await);
        }
        out
    }
}
