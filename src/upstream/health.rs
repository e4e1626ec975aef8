//! Active health checks (Envoy's `health_checks` as Pomerium exposes them): HTTP with expected
//! status ranges, and TCP with optional send/receive payloads. Pingora's load balancer keeps the
//! health state and skips unhealthy backends; the supervisor runs the checks of whatever pools
//! the live snapshot holds.

use super::pool::PoolSpec;
use async_trait::async_trait;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::Backend;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
pub enum HealthKind {
    Http {
        host: Option<String>,
        path: String,
        /// `[start, end)` ranges; default `[200, 201)`.
        expected: Vec<(u16, u16)>,
    },
    Tcp {
        send: Vec<u8>,
        receive: Vec<Vec<u8>>,
    },
    /// `grpc.health.v1.Health/Check` over HTTP/2; `service` empty asks about the whole server.
    Grpc {
        service: String,
        authority: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct HealthSpec {
    pub kind: HealthKind,
    pub timeout: Duration,
    pub interval: Duration,
    pub healthy_threshold: usize,
    pub unhealthy_threshold: usize,
    /// Envoy's `always_log_health_check_success` / `_failures`: log every check's result, not
    /// only the changes between healthy and unhealthy.
    pub log_success: bool,
    pub log_failures: bool,
}

enum Probe {
    Http(Box<HttpHealthCheck>),
    Grpc(Box<super::grpc_health::GrpcCheck>),
    Tcp {
        send: Vec<u8>,
        receive: Vec<Vec<u8>>,
        timeout: Duration,
    },
}

/// All of a pool's checks; a backend is healthy when every one passes.
struct PoolCheck {
    probes: Vec<Probe>,
    healthy: usize,
    unhealthy: usize,
    pool: String,
    log_success: bool,
    log_failures: bool,
}

pub(super) fn build_check(spec: &PoolSpec) -> Option<Box<dyn HealthCheck + Send + Sync>> {
    let first = spec.health.first()?;
    let tls_target = spec.targets.first();
    let probes = spec
        .health
        .iter()
        .map(|h| match &h.kind {
            HealthKind::Http {
                host,
                path,
                expected,
            } => {
                let tls = tls_target.map(|t| t.tls).unwrap_or(false);
                let default_host = tls_target.map(|t| t.authority.clone()).unwrap_or_default();
                let host = host.clone().unwrap_or(default_host);
                let mut hc = HttpHealthCheck::new(&host, tls);
                if tls {
                    let host = tls_target.map(|t| t.host.as_str()).unwrap_or_default();
                    spec.tls.secure(&mut hc.peer_template, host);
                }
                if tls_target.is_some_and(|t| t.codec == super::pool::UpstreamCodec::Http2) {
                    hc.peer_template.options.alpn = pingora_core::protocols::ALPN::H2;
                }
                hc.peer_template.options.connection_timeout = Some(h.timeout);
                hc.peer_template.options.read_timeout = Some(h.timeout);
                hc.req
                    .set_uri(path.parse().unwrap_or_else(|_| http::Uri::from_static("/")));
                let expected = expected.clone();
                hc.validator = Some(Box::new(move |resp| {
                    let s = resp.status.as_u16();
                    if expected.iter().any(|(a, b)| s >= *a && s < *b) {
                        Ok(())
                    } else {
                        pingora_core::Error::e_explain(
                            pingora_core::ErrorType::Custom("unexpected health check status"),
                            format!("status {s}"),
                        )
                    }
                }));
                Probe::Http(Box::new(hc))
            }
            HealthKind::Grpc { service, authority } => Probe::Grpc(Box::new(
                super::grpc_health::GrpcCheck::new(spec, service, authority.as_deref(), h.timeout),
            )),
            HealthKind::Tcp { send, receive } => Probe::Tcp {
                send: send.clone(),
                receive: receive.clone(),
                timeout: h.timeout,
            },
        })
        .collect();
    Some(Box::new(PoolCheck {
        probes,
        healthy: first.healthy_threshold.max(1),
        unhealthy: first.unhealthy_threshold.max(1),
        pool: spec.key.clone(),
        log_success: spec.health.iter().any(|h| h.log_success),
        log_failures: spec.health.iter().any(|h| h.log_failures),
    }))
}

pub(super) fn hc_error(msg: String) -> Box<pingora_core::Error> {
    pingora_core::Error::explain(pingora_core::ErrorType::Custom("health check failed"), msg)
}

async fn tcp_probe(target: &Backend, send: &[u8], receive: &[Vec<u8>]) -> pingora_core::Result<()> {
    use pingora_core::protocols::l4::socket::SocketAddr as Addr;
    let connect = |e: std::io::Error| hc_error(format!("connect: {e}"));
    match &target.addr {
        Addr::Inet(a) => {
            let s = tokio::net::TcpStream::connect(a).await.map_err(connect)?;
            exchange(s, send, receive).await
        }
        Addr::Unix(u) => {
            let path = u
                .as_pathname()
                .ok_or_else(|| hc_error("an unnamed socket".into()))?;
            let s = tokio::net::UnixStream::connect(path)
                .await
                .map_err(connect)?;
            exchange(s, send, receive).await
        }
    }
}

/// Sends the probe's payload and waits for its expected blocks.
async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    mut s: S,
    send: &[u8],
    receive: &[Vec<u8>],
) -> pingora_core::Result<()> {
    if !send.is_empty() {
        s.write_all(send)
            .await
            .map_err(|e| hc_error(format!("send: {e}")))?;
    }
    // Envoy's fuzzy match: each block must appear, in order, not necessarily contiguous.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut want = receive.iter().peekable();
    let mut from = 0;
    while let Some(block) = want.peek() {
        if let Some(pos) = find(buf.get(from..).unwrap_or(&[]), block) {
            from += pos + block.len();
            want.next();
            continue;
        }
        if buf.len() > 64 * 1024 {
            return Err(hc_error("expected payload not received".into()));
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| hc_error(format!("receive: {e}")))?;
        if n == 0 {
            return Err(hc_error(
                "connection closed before the expected payload".into(),
            ));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

impl PoolCheck {
    async fn probe_all(&self, target: &Backend) -> pingora_core::Result<()> {
        for p in &self.probes {
            match p {
                Probe::Http(hc) => hc.check(target).await?,
                Probe::Grpc(g) => g.check(target).await?,
                Probe::Tcp {
                    send,
                    receive,
                    timeout,
                } => match tokio::time::timeout(*timeout, tcp_probe(target, send, receive)).await {
                    Ok(r) => r?,
                    Err(_) => return Err(hc_error("timed out".into())),
                },
            }
        }
        Ok(())
    }
}

#[async_trait]
impl HealthCheck for PoolCheck {
    async fn check(&self, target: &Backend) -> pingora_core::Result<()> {
        let result = self.probe_all(target).await;
        match &result {
            Ok(()) if self.log_success => {
                tracing::info!(pool = %self.pool, backend = ?target.addr, "upstream health check passed")
            }
            Err(e) if self.log_failures => {
                tracing::warn!(pool = %self.pool, backend = ?target.addr, error = %e, "upstream health check failed")
            }
            _ => {}
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if healthy {
            tracing::info!(pool = %self.pool, backend = ?target.addr, "upstream backend is healthy");
        } else {
            tracing::warn!(pool = %self.pool, backend = ?target.addr, "upstream backend is unhealthy");
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.healthy
        } else {
            self.unhealthy
        }
    }
}
