//! `enable_google_cloud_serverless_authentication`: the upstream gets an ID token for
//! `https://<to host>` from the metadata server (a fake one here, through `GCE_METADATA_HOST`),
//! reused until shortly before it expires; a metadata server that says no means 502, never a
//! request without the credential or with its error page as a token.

use crate::support::{free_port, Gateway, Upstream};
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

struct Metadata {
    port: u16,
    calls: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

fn id_token(audience: &str, exp: u64) -> String {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2ln",
        b.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        b.encode(format!(r#"{{"aud":"{audience}","exp":{exp}}}"#))
    )
}

async fn metadata() -> Metadata {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, d, s) = (Arc::clone(&calls), Arc::clone(&down), Arc::clone(&seen));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (c, d, s) = (Arc::clone(&c), Arc::clone(&d), Arc::clone(&s));
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (c, d, s) = (Arc::clone(&c), Arc::clone(&d), Arc::clone(&s));
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        let flavor = req
                            .headers()
                            .get("metadata-flavor")
                            .is_some_and(|v| v == "Google");
                        let uri = req.uri().to_string();
                        s.lock().unwrap().push(uri.clone());
                        let audience =
                            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                                .find(|(k, _)| k == "audience")
                                .map(|(_, v)| v.to_string())
                                .unwrap_or_default();
                        let ok = flavor
                            && !d.load(Ordering::SeqCst)
                            && req.uri().path()
                                == "/computeMetadata/v1/instance/service-accounts/default/identity";
                        let exp = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs()
                            + 3600;
                        let (status, body) = match ok {
                            true => (200, id_token(&audience, exp)),
                            false => (404, "Not Found\n".to_string()),
                        };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Metadata {
        port,
        calls,
        down,
        seen,
        _task: task,
    }
}

#[tokio::test]
async fn the_upstream_gets_an_id_token_for_its_audience_reused_until_it_expires() {
    let md = metadata().await;
    let up = Upstream::echo("run").await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\n\
         routes:\n  - from: http://hello.test\n    to: {}\n    enable_google_cloud_serverless_authentication: true\n    allow_public_unauthenticated_access: true\n\
         \x20 - from: http://plain.test\n    to: {}\n    allow_public_unauthenticated_access: true\n",
        up.url(),
        up.url()
    );
    let md_host = format!("127.0.0.1:{}", md.port);
    let gw = Gateway::start_with(port, &text, &[("GCE_METADATA_HOST", md_host.as_str())]).await;

    let first = gw
        .request(
            reqwest::Method::GET,
            "hello.test",
            "/",
            &[("authorization", "Bearer client-token")],
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let auth = first
        .echo()
        .header("authorization")
        .unwrap_or_default()
        .to_string();
    let token = auth
        .strip_prefix("Bearer ")
        .expect("a bearer token upstream");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    assert!(
        String::from_utf8_lossy(&payload).contains(r#""aud":"https://127.0.0.1""#),
        "Pomerium's audience, https:// and the to host: {}",
        String::from_utf8_lossy(&payload)
    );
    for _ in 0..5 {
        let r = gw.get("hello.test", "/").await;
        assert_eq!(r.echo().header("authorization"), Some(auth.as_str()));
    }
    assert_eq!(
        md.calls.load(Ordering::SeqCst),
        1,
        "one fetch, then the cache: {:?}",
        md.seen.lock().unwrap()
    );
    assert!(md.seen.lock().unwrap()[0].contains("format=full"));
    // Other routes get nothing of it.
    let r = gw.get("plain.test", "/").await;
    assert_eq!(r.echo().header("authorization"), None);
}

#[tokio::test]
async fn no_token_no_request() {
    let md = metadata().await;
    md.down.store(true, Ordering::SeqCst);
    let up = Upstream::echo("run").await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\n\
         routes:\n  - from: http://hello.test\n    to: {}\n    enable_google_cloud_serverless_authentication: true\n    allow_public_unauthenticated_access: true\n",
        up.url()
    );
    let md_host = format!("127.0.0.1:{}", md.port);
    let gw = Gateway::start_with(port, &text, &[("GCE_METADATA_HOST", md_host.as_str())]).await;
    let r = gw.get("hello.test", "/").await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        0,
        "the upstream never saw the request"
    );
    assert!(
        gw.log().contains("metadata server answered 404"),
        "{}",
        gw.log()
    );
    md.down.store(false, Ordering::SeqCst);
    assert_eq!(gw.get("hello.test", "/").await.status, 200, "and recovers");
}
