//! Attacks through the running gateway, one file per bug class, each a table of spellings with
//! the advisory (or the class of advisories) it comes from and the exact outcome. The threat
//! model in `docs/security.md` links each defence to its table here.

mod framing;
mod headers;
mod limits;
mod paths;
mod redirects;
mod sessions;
mod tokens;

use crate::support::{free_port, Gateway, Upstream};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What came back on a raw connection: the status of the first response, whether more than
/// one response came, and whether the gateway closed the connection.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub responses: usize,
    pub closed: bool,
    pub text: String,
}

/// Writes `bytes` on one connection and reads until the gateway closes it (or 3 s pass).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> Raw {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Raw {
        status,
        responses: text.matches("HTTP/1.1 ").count(),
        closed,
        text,
    }
}

/// A plain-HTTP gateway with a public echo route (`app.test`), a websocket route (`ws.test`)
/// and whatever `extra` adds (global keys first, then `routes` items).
pub async fn public_gateway(globals: &str, routes: &str) -> (Gateway, Upstream) {
    let up = Upstream::echo("app").await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\nhealth_check_addr: ''\n{globals}\
         routes:\n  - from: http://app.test\n    to: {u}\n    allow_public_unauthenticated_access: true\n\
         \x20 - from: http://ws.test\n    to: {u}\n    allow_public_unauthenticated_access: true\n    allow_websockets: true\n{routes}",
        u = up.url(),
        routes = routes.replace("{u}", &up.url()),
    );
    (Gateway::start_with(port, &text, &[]).await, up)
}
