//! Real upstream servers on loopback: an echo server that reports what it received (and can be
//! told to be unhealthy, slow, or to send a header), optionally over TLS with client-certificate
//! checking, and a websocket echo server.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// What the echo server saw.
#[derive(Debug, Deserialize)]
pub struct Echo {
    pub server: String,
    pub method: String,
    pub uri: String,
    pub headers: BTreeMap<String, String>,
    pub client_cert: bool,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicUsize>,
    pub healthy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct State {
    name: String,
    hits: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub async fn echo(name: &str) -> Upstream {
        Self::start(name, None).await
    }

    /// An HTTPS echo server; `client_ca` makes a client certificate from that CA mandatory.
    pub async fn echo_tls(
        name: &str,
        leaf: &super::certs::Leaf,
        client_ca: Option<&str>,
    ) -> Upstream {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<_> = rustls_pemfile_certs(&leaf.cert_pem);
        let key = {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap()
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let config = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pemfile_certs(ca) {
                    roots.add(c).unwrap();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(certs, key)
                    .unwrap()
            }
            None => builder
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        };
        Self::start(
            name,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn start(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        Self::start_at(name, tls, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// An echo server on a given address (to bring a stopped backend back on its port).
    pub async fn echo_at(name: &str, addr: SocketAddr) -> Upstream {
        Self::start_at(name, None, addr).await
    }

    /// Takes the server down: the listener and every open connection close.
    pub fn stop(&self) {
        self.task.abort();
    }

    async fn start_at(
        name: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        addr: SocketAddr,
    ) -> Upstream {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = State {
            name: name.to_string(),
            hits: Arc::default(),
            healthy: Arc::new(AtomicBool::new(true)),
        };
        let (hits, healthy) = (state.hits.clone(), state.healthy.clone());
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the server closes them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let tls = tls.clone();
                while conns.try_join_next().is_some() {}
                conns.spawn(async move {
                    match tls {
                        Some(acc) => {
                            let Ok(s) = acc.accept(stream).await else {
                                return;
                            };
                            let client_cert = s.get_ref().1.peer_certificates().is_some();
                            serve(TokioIo::new(s), state, client_cert).await;
                        }
                        None => serve(TokioIo::new(stream), state, false).await,
                    }
                });
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            hits,
            healthy,
            task,
        }
    }
}

async fn serve<I>(io: I, state: State, client_cert: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(req, &state, client_cert).await) }
    });
    let _ = http1::Builder::new()
        .serve_connection(io, svc)
        .with_upgrades()
        .await;
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    state: &State,
    client_cert: bool,
) -> Response<Full<Bytes>> {
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    if req.uri().path() == "/health" {
        let ok = state.healthy.load(Ordering::SeqCst);
        return Response::builder()
            .status(if ok { 200 } else { 503 })
            .body(Full::new(Bytes::from_static(b"health")))
            .unwrap();
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    // `/flaky` fails (500) while the server is told to be unhealthy: a backend in trouble.
    if req.uri().path() == "/flaky" && !state.healthy.load(Ordering::SeqCst) {
        return Response::builder()
            .status(500)
            .body(Full::new(Bytes::from(format!("{} failed", state.name))))
            .unwrap();
    }
    if let Some(ms) = query.get("sleep_ms").and_then(|m| m.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_string())
            .and_modify(|e: &mut String| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let body = serde_json::json!({
        "server": state.name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
        "client_cert": client_cert,
    })
    .to_string();
    let mut resp = Response::builder()
        .status(
            query
                .get("status")
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(200),
        )
        .header("content-type", "application/json");
    if let Some((k, v)) = query.get("set_header").and_then(|h| h.split_once(':')) {
        resp = resp.header(k, v);
    }
    resp.body(Full::new(Bytes::from(body))).unwrap()
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

/// A websocket server that echoes every message back.
pub struct WsEcho {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsEcho {
    pub async fn start() -> WsEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            let _ = ws.send(msg).await;
                        }
                    }
                });
            }
        });
        WsEcho { addr, task }
    }
}
