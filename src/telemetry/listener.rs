//! The operator listeners: `metrics_address` (`/metrics`) and `health_check_addr` (`/healthz`,
//! `/readyz`, `/startupz`, `/status`). They answer a handful of GETs from scrapers and
//! orchestrators, so they are a small HTTP/1.1 responder of their own rather than Pingora
//! services: they bind with `SO_REUSEPORT`, so during a graceful upgrade the new process can bind
//! the same address while the old one still holds it, and a probe address already taken by
//! something else is reported and skipped instead of stopping the gateway.

use super::probes::Readiness;
use crate::crypto::ct_eq;
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a listener serves.
pub enum Endpoints {
    Metrics {
        metrics: Arc<Metrics>,
        /// The exact `Authorization` value required, when `metrics_basic_auth` is set.
        authorization: Option<String>,
    },
    Probes {
        readiness: Arc<Readiness>,
    },
}

pub struct OpsListener {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub endpoints: Arc<Endpoints>,
}

struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    extra: &'static str,
}

fn answer(status: u16, content_type: &'static str, body: impl Into<String>) -> Answer {
    Answer {
        status,
        content_type,
        body: body.into(),
        extra: "",
    }
}

impl Endpoints {
    fn serve(&self, method: &str, path: &str, authorization: Option<&str>) -> Answer {
        if method != "GET" && method != "HEAD" {
            return answer(405, "text/plain", "method not allowed\n");
        }
        let path = path.split('?').next().unwrap_or("");
        match self {
            Endpoints::Metrics {
                metrics,
                authorization: want,
            } => {
                if path != "/metrics" {
                    return answer(404, "text/plain", "not found\n");
                }
                if let Some(want) = want {
                    if !authorization.is_some_and(|got| ct_eq(got.trim(), want)) {
                        return Answer {
                            extra: "WWW-Authenticate: Basic realm=\"metrics\"\r\n",
                            ..answer(401, "text/plain", "unauthorized\n")
                        };
                    }
                }
                let mut body = metrics.render();
                // Pingora's own metrics live in the default registry.
                let mut pingora = Vec::new();
                let _ = prometheus::Encoder::encode(
                    &prometheus::TextEncoder::new(),
                    &prometheus::gather(),
                    &mut pingora,
                );
                body.push_str(&String::from_utf8_lossy(&pingora));
                answer(200, "text/plain; version=0.0.4", body)
            }
            Endpoints::Probes { readiness } => match path {
                "/healthz" | "/ping" => answer(200, "text/plain", "OK\n"),
                "/readyz" | "/startupz" => {
                    let s = readiness.report();
                    if s.ready() {
                        answer(200, "text/plain", "ready\n")
                    } else {
                        answer(503, "text/plain", format!("not ready\n{}\n", s.to_json()))
                    }
                }
                "/status" => {
                    let s = readiness.report();
                    answer(
                        if s.ready() { 200 } else { 503 },
                        "application/json",
                        s.to_json().to_string(),
                    )
                }
                _ => answer(404, "text/plain", "not found\n"),
            },
        }
    }
}

/// Reads one request head (bounded in size and time) and answers it; one request per connection.
async fn handle(endpoints: &Endpoints, mut conn: tokio::net::TcpStream) {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or(&[])),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let head = String::from_utf8_lossy(&buf);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let authorization = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("authorization")
            .then_some(v.trim())
    });
    let a = endpoints.serve(method, path, authorization);
    let reason = http::StatusCode::from_u16(a.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}Connection: close\r\n\r\n",
        a.status,
        a.content_type,
        a.body.len(),
        a.extra
    );
    let _ = conn.write_all(head.as_bytes()).await;
    if method != "HEAD" {
        let _ = conn.write_all(a.body.as_bytes()).await;
    }
    let _ = conn.shutdown().await;
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

#[async_trait]
impl BackgroundService for OpsListener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let listener = match bind(self.addr) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listener = self.name, address = %self.addr, error = %e, "cannot listen; this listener is off");
                return;
            }
        };
        tracing::info!(listener = self.name, address = %self.addr, "listening");
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                accepted = listener.accept() => {
                    if let Ok((conn, _)) = accepted {
                        let endpoints = Arc::clone(&self.endpoints);
                        tokio::spawn(async move { handle(&endpoints, conn).await });
                    }
                }
            }
        }
    }
}
