//! Test harness: the real `vallum` binary on a free loopback port, real upstream servers, a raw
//! HTTP client for targets that URL libraries would normalise away.

#![allow(dead_code)]

pub mod certs;
pub mod dns;
pub mod github;
pub mod h2;
pub mod idp;
pub mod otlp;
pub mod pebble;
pub mod postgres;
pub mod redis;
pub mod upstream;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use upstream::Upstream;

/// A free loopback port, released for the caller to bind (a gateway, pebble, PostgreSQL), often
/// seconds later. It comes from below Linux's ephemeral range (32768–60999), so no outgoing
/// connection's local port can take it in the meantime, and from a counter, so no two tests of
/// this run are handed the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 12_000;
    const SPAN: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        // 28080: the default `health_check_addr`, which gateways in other tests bind.
        if port != 28_080 && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vallum")
}

/// `vallum check-config` on `text`: whether it passed, and what it printed on stderr.
pub fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config.yaml");
    std::fs::write(&f, text).unwrap();
    let out = Command::new(bin())
        .arg("check-config")
        .arg(&f)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Ends the test run if it is still going after 20 minutes (it takes about five): a stuck
/// test then fails the run with a message instead of holding CI until its time limit.
fn watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(20 * 60));
            eprintln!("the integration tests are still running after 20 minutes: one is stuck");
            std::process::exit(1);
        });
    });
}

/// A running gateway process.
pub struct Gateway {
    pub port: u16,
    /// The loopback address it listens on (from `address:`; fleets use 127.0.0.x).
    pub ip: std::net::IpAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Child,
}

impl Gateway {
    /// Starts plain-HTTP on a free port; `body` is everything after the listener keys.
    pub async fn insecure(body: &str) -> Gateway {
        let port = free_port();
        let text = format!("address: 127.0.0.1:{port}\ninsecure_server: true\n{body}");
        Gateway::start_with(port, &text, &[]).await
    }

    /// Starts plain-HTTP on a free port with extra environment variables.
    pub async fn start_with_env(body: &str, env: &[(&str, &str)]) -> Gateway {
        let port = free_port();
        let text = format!("address: 127.0.0.1:{port}\ninsecure_server: true\n{body}");
        Gateway::start_with(port, &text, env).await
    }

    /// Starts with the full config text (it must listen on `port`).
    pub async fn start_with(port: u16, text: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        Gateway::start_in(dir, port, text, env).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        port: u16,
        text: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        Gateway::start_with_args(dir, port, text, env, &[]).await
    }

    /// Starts `vallum run ARGS… -c <dir>/vallum.yaml`, logging to `<dir>/vallum.log`.
    pub async fn start_with_args(
        dir: tempfile::TempDir,
        port: u16,
        text: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Gateway {
        watchdog();
        let config = dir.path().join("vallum.yaml");
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.path().join("vallum.log")).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .args(args)
            .arg("-c")
            .arg(&config)
            .env("VALLUM_LOG_FORMAT", "text")
            .env("VALLUM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let ip = text
            .lines()
            .find_map(|l| l.strip_prefix("address: "))
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .map(|a| a.ip())
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let gw = Gateway {
            port,
            ip,
            dir,
            config,
            child,
        };
        gw.wait_ready(text.contains("insecure_server: true")).await;
        gw
    }

    async fn wait_ready(&self, plain: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect((self.ip, self.port)).await {
                if !plain {
                    return; // a TLS listener: accepting connections is enough
                }
                let _ = s
                    .write_all(b"GET /ping HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n")
                    .await;
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
                if buf.starts_with(b"HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The log as written so far. Log lines are written by the gateway's writer threads, which
    /// drain their queues every 10 ms: this waits 50 ms first, so a line for a request that has
    /// been answered is in the file.
    pub fn log(&self) -> String {
        std::thread::sleep(Duration::from_millis(50));
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("vallum.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether the log says `needle`, waiting up to 3 s for the gateway's log writers to
    /// write it out (they drain every 10 ms, later on a loaded machine).
    pub fn log_has(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `QUIT`, …) to the gateway process.
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} failed");
    }

    /// How long the process took to exit, if it did within `limit`.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.child.try_wait().ok().flatten().is_some() {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Rewrites the config file atomically (write + rename, as editors and config managers do).
    pub fn rewrite_config(&self, text: &str) {
        let tmp = self.dir.path().join("vallum.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// GET with a Host header.
    pub async fn get(&self, host: &str, path: &str) -> Resp {
        self.request(reqwest::Method::GET, host, path, &[]).await
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = client()
            .request(method, self.url(path))
            .header("host", host);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        Resp::from(rb.send().await.unwrap()).await
    }

    /// Sends raw bytes and returns the parsed response (one request, `Connection: close`).
    pub async fn raw(&self, request: &str) -> Resp {
        raw_request(self.addr(), request).await
    }

    /// Polls until `f` holds, or fails with the log.
    pub async fn eventually<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !f().await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value(header: &str, name: &str) -> Option<String> {
    header.split(';').map(str::trim).find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// The status and body of an answer that should be JSON (a body that is not stays a string, so
/// a failing assertion shows it).
pub async fn status_and_json(r: reqwest::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// `GET /metrics` on a metrics listener, with an `Authorization` header if given.
pub async fn scrape(port: u16, auth: Option<&str>) -> (u16, String) {
    let mut rb = client().get(format!("http://127.0.0.1:{port}/metrics"));
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub async fn from(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = r.text().await.unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The echo upstream's JSON report.
    pub fn echo(&self) -> upstream::Echo {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an echo response ({e}): {self:?}"))
    }
}

pub async fn raw_request(addr: SocketAddr, request: &str) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
