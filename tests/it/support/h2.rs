//! HTTP/2 peers for the gRPC tests: an upstream that speaks only HTTP/2 with prior knowledge
//! (`h2c://`), answering like a gRPC server (frames echoed, `grpc-status` in trailers), and an
//! HTTP/2 client over TLS that reads trailers (which `reqwest` does not expose).

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

type Frames =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;

fn trailers(status: &str) -> Frame<Bytes> {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", status.parse().unwrap());
    t.insert("grpc-message", "done".parse().unwrap());
    Frame::trailers(t)
}

/// `/test.Echo/Bidi`: each request data frame is sent back as soon as it arrives; then trailers.
/// `/test.Echo/Stream`: the whole request, then the same 50 times over, then trailers.
/// `/test.Echo/Reset`: three messages, then the stream is reset.
/// `/test.Echo/Slow`: as anything else, after 3 s.
/// Anything else: the request body back, then trailers. Response headers say what the upstream
/// saw (`x-saw-authority`, `x-saw-te`, and whether an assertion and an `authorization` came).
async fn serve(
    req: Request<Incoming>,
    serving: Arc<AtomicBool>,
) -> Result<Response<Frames>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/grpc.health.v1.Health/Check" {
        return Ok(health(req, serving.load(Ordering::SeqCst)).await);
    }
    if path == "/test.Echo/Slow" {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let has = |name: &str| {
        if req.headers().contains_key(name) {
            "yes"
        } else {
            "no"
        }
    };
    let (assertion, authorization) = (has("x-pomerium-jwt-assertion"), has("authorization"));
    let te = req
        .headers()
        .get("te")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let body = req.into_body();
    let frames: futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>> =
        if path == "/test.Echo/Reset" {
            // Three messages, then the stream fails: hyper resets it (RST_STREAM).
            futures_util::stream::iter((0..3).map(|_| Ok(Frame::data(message(b"partial")))).chain(
                std::iter::once(Err(std::io::Error::other("upstream gave up"))),
            ))
            .boxed()
        } else if path == "/test.Echo/Bidi" {
            futures_util::stream::unfold(Some(body), |state| async move {
                let mut body = state?;
                match body.frame().await {
                    Some(Ok(f)) if f.is_data() => Some((
                        Ok(Frame::data(f.into_data().unwrap_or_default())),
                        Some(body),
                    )),
                    Some(Ok(_)) => Some((Ok(Frame::data(Bytes::new())), Some(body))),
                    _ => Some((Ok(trailers("0")), None)),
                }
            })
            .boxed()
        } else {
            let all = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let times = if path == "/test.Echo/Stream" { 50 } else { 1 };
            futures_util::stream::iter(
                (0..times)
                    .map(move |_| Ok(Frame::data(all.clone())))
                    .chain(std::iter::once(Ok(trailers("0")))),
            )
            .boxed()
        };
    let mut resp = Response::new(StreamBody::new(frames));
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    resp.headers_mut()
        .insert("x-saw-authority", authority.parse().unwrap());
    resp.headers_mut().insert("x-saw-te", te.parse().unwrap());
    resp.headers_mut()
        .insert("x-saw-assertion", assertion.parse().unwrap());
    resp.headers_mut()
        .insert("x-saw-authorization", authorization.parse().unwrap());
    Ok(resp)
}

/// `grpc.health.v1.Health/Check`: SERVING (1) or NOT_SERVING (2) for service `test.Echo`;
/// another service name is NOT_FOUND (grpc-status 5, Trailers-Only).
async fn health(req: Request<Incoming>, serving: bool) -> Response<Frames> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let service = body.get(7..).unwrap_or_default();
    let mut resp = if service.is_empty() || service == b"test.Echo" {
        let status = if serving { 1u8 } else { 2 };
        let frames = vec![Ok(Frame::data(message(&[0x08, status]))), Ok(trailers("0"))];
        Response::new(StreamBody::new(futures_util::stream::iter(frames).boxed()))
    } else {
        let mut r = Response::new(StreamBody::new(futures_util::stream::empty().boxed()));
        r.headers_mut().insert("grpc-status", "5".parse().unwrap());
        r
    };
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    resp
}

/// Starts the upstream; it serves until the test's runtime ends.
pub async fn h2c_upstream() -> SocketAddr {
    h2c_upstream_with_health().await.0
}

/// The same upstream over TLS, offering `h2` by ALPN, with a certificate for `127.0.0.1` from
/// `ca` (for the route's `tls_custom_ca`).
pub async fn h2_tls_upstream(ca: &super::certs::TestCa) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let leaf = ca.server(&["127.0.0.1"]);
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|req| serve(req, Arc::new(AtomicBool::new(true))));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// The upstream and the switch its health service reports (true: SERVING).
pub async fn h2c_upstream_with_health() -> (SocketAddr, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&serving);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let flag = Arc::clone(&flag);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| serve(req, Arc::clone(&flag)));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, serving)
}

/// The sending half of a call's body: the test sends frames one at a time.
pub type FrameTx = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>;
/// A call's body, fed by a `FrameTx`.
pub type CallBody = StreamBody<Rx>;
pub type Sender = hyper::client::conn::http2::SendRequest<CallBody>;

pub struct Rx(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl futures_util::Stream for Rx {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// An HTTP/2 connection over TLS to the gateway at `port`, for `host`, trusting `ca_pem`.
pub async fn client(port: u16, host: &str, ca_pem: &str) -> Sender {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/2 connection with prior knowledge (h2c) to a plaintext gateway at `port`.
pub async fn client_h2c(port: u16) -> Result<Sender, hyper::Error> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A gRPC message: the 5-byte prefix (uncompressed, length) and the payload.
pub fn message(payload: &[u8]) -> Bytes {
    let mut m = Vec::with_capacity(5 + payload.len());
    m.push(0);
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    Bytes::from(m)
}

/// A gRPC call: the request (headers set) and the sender of its body frames.
pub fn call(host: &str, port: u16, path: &str) -> (Request<CallBody>, FrameTx) {
    call_over("https", host, port, path)
}

pub fn call_over(scheme: &str, host: &str, port: u16, path: &str) -> (Request<CallBody>, FrameTx) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let req = Request::post(format!("{scheme}://{host}:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(Rx(rx)))
        .unwrap();
    (req, tx)
}
