//! `unix://` upstreams (Pomerium v0.33): a route served over a Unix socket, its Host, and its
//! health check taking the socket out of rotation when its server goes away.

use crate::support::Gateway;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant};

/// An HTTP/1.1 server on a Unix socket that answers `<path> <host>`.
fn serve(sock: &Path) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(sock).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let body = format!("{} {host}", req.uri().path());
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

#[tokio::test]
async fn a_unix_socket_upstream_serves_its_route_and_leaves_rotation_when_it_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let server = serve(&sock);
    let gw = Gateway::insecure(&format!(
        "routes:\n- from: http://unix.test\n  to: unix://{}\n  allow_public_unauthenticated_access: true\n  \
         health_checks:\n  - http_health_check: {{path: /healthz}}\n    interval: 0.2s\n    timeout: 1s\n",
        sock.display()
    ))
    .await;
    let r = gw.get("unix.test", "/hello").await;
    assert_eq!(r.status, 200, "{}", gw.log());
    assert_eq!(
        r.body, "/hello localhost",
        "the upstream is told Host: localhost"
    );

    // The server goes away: the health check takes the socket out, and the route answers 503.
    server.abort();
    std::fs::remove_file(&sock).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.get("unix.test", "/hello").await.status != 503 {
        assert!(Instant::now() < deadline, "still served\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw.log_has("upstream backend is unhealthy"), "{}", gw.log());
    // Back: the same path, a new server.
    let _server = serve(&sock);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.get("unix.test", "/again").await.status != 200 {
        assert!(Instant::now() < deadline, "not back\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_unix_url_must_name_an_absolute_socket_path() {
    let (ok, err) = crate::support::check_config(
        "insecure_server: true\nroutes:\n- from: http://a.test\n  to: unix://relative.sock\n  allow_public_unauthenticated_access: true\n",
    );
    assert!(!ok);
    assert!(
        err.contains("routes[0].to") && err.contains("absolute socket path"),
        "{err}"
    );
}
