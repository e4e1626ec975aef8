//! gRPC through the gateway: a refused call gets a gRPC answer (`grpc-status` and
//! `grpc-message` in a Trailers-Only response), never a sign-in redirect or an HTML page.

use crate::support::idp::Idp;
use crate::support::{free_port, Gateway, Upstream};
use std::net::SocketAddr;

/// An HTTP/2 client (ALPN over TLS) that reaches every `*.test` name at the gateway.
fn h2_client(port: u16, hosts: &[&str]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none());
    for h in hosts {
        b = b.resolve(h, SocketAddr::from(([127, 0, 0, 1], port)));
    }
    b.build().unwrap()
}

async fn call(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        // One empty message: the 5-byte gRPC frame header of a zero-length protobuf.
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap()
}

fn grpc(r: &reqwest::Response) -> (u16, String, String) {
    let h = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (r.status().as_u16(), h("grpc-status"), h("grpc-message"))
}

#[tokio::test]
async fn a_refused_grpc_call_gets_a_grpc_status_with_the_reason_and_request_id() {
    let idp = Idp::start().await;
    let up = Upstream::echo("grpc").await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\nauthenticate_service_url: https://auth.test:{port}\n{idp}\
         routes:\n\
         - from: https://signed.test\n  to: {u}\n  allow_any_authenticated_user: true\n\
         - from: https://nopost.test\n  to: {u}\n  policy:\n    allow: {{or: [{{accept: true}}]}}\n    deny: {{or: [{{http_method: {{is: POST}}}}]}}\n",
        idp = idp.config(),
        u = up.url()
    );
    let gw = Gateway::start_with(port, &text, &[]).await;
    let client = h2_client(port, &["signed.test", "nopost.test", "nowhere.test"]);

    let r = call(&client, &format!("https://signed.test:{port}/pkg.Svc/Call")).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let (status, code, message) = grpc(&r);
    assert_eq!(
        (status, code.as_str()),
        (200, "16"),
        "UNAUTHENTICATED, not a redirect: {message}\n{}",
        gw.log()
    );
    assert_eq!(r.headers()["content-type"], "application/grpc");
    assert!(r.headers().get("location").is_none());
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(message.contains(&format!("request id {rid}")), "{message}");

    let r = call(&client, &format!("https://nopost.test:{port}/pkg.Svc/Call")).await;
    let (status, code, message) = grpc(&r);
    assert_eq!(
        (status, code.as_str()),
        (200, "7"),
        "PERMISSION_DENIED: {message}"
    );
    assert!(r.text().await.unwrap().is_empty(), "no HTML page");

    let r = call(
        &client,
        &format!("https://nowhere.test:{port}/pkg.Svc/Call"),
    )
    .await;
    assert_eq!(grpc(&r).1, "12", "no route: UNIMPLEMENTED");

    // The same refusal to a browser is still a page.
    let r = client
        .get(format!("https://nopost.test:{port}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET is allowed");
}

/// A TLS gateway whose certificate (from its own test CA) covers `grpc.test`, with a public
/// route to an `h2c://` upstream. Returns the gateway and the CA's PEM.
async fn h2c_gateway() -> (Gateway, String) {
    let upstream = crate::support::h2::h2c_upstream().await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::support::certs::TestCa::new("grpc test CA");
    let (cert, key) = ca.server(&["grpc.test"]).write(dir.path(), "gw");
    let text = format!(
        "address: 127.0.0.1:{port}\ncertificate_file: {}\ncertificate_key_file: {}\n\
         routes:\n- from: https://grpc.test\n  to: h2c://{upstream}\n  allow_public_unauthenticated_access: true\n  timeout: 0s\n",
        cert.display(),
        key.display()
    );
    (
        Gateway::start_in(dir, port, &text, &[]).await,
        ca.pem.clone(),
    )
}

async fn trailers_of(body: &mut hyper::body::Incoming) -> (Vec<bytes::Bytes>, http::HeaderMap) {
    use http_body_util::BodyExt;
    let mut data = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(f)) if f.is_data() => data.push(f.into_data().unwrap()),
            Some(Ok(f)) => return (data, f.into_trailers().unwrap()),
            other => panic!("the stream ended without trailers: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_calls_of_every_kind_reach_an_h2c_upstream_with_their_trailers() {
    use crate::support::h2::{call, client, message};
    use hyper::body::Frame;
    let (gw, ca) = h2c_gateway().await;
    let port = gw.port;
    let mut sender = client(port, "grpc.test", &ca).await;

    // Unary, with a large message (1 MiB): the body and the trailers arrive.
    let (req, tx) = call("grpc.test", port, "/test.Echo/Unary");
    let big = message(&vec![7u8; 1 << 20]);
    tx.send(Ok(Frame::data(big.clone()))).await.unwrap();
    drop(tx);
    let resp = sender
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.log()));
    assert_eq!(resp.status(), 200, "{}", gw.log());
    assert_eq!(
        resp.headers()["x-saw-te"],
        "trailers",
        "te: trailers reaches the upstream"
    );
    let mut body = resp.into_body();
    let (data, trailers) = trailers_of(&mut body).await;
    assert_eq!(data.concat(), big.to_vec());
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");

    // Client streaming: 20 messages in, one answer (all of them) out.
    let (req, tx) = call("grpc.test", port, "/test.Echo/Unary");
    let sent: Vec<bytes::Bytes> = (0..20)
        .map(|i| message(format!("part {i}").as_bytes()))
        .collect();
    for m in &sent {
        tx.send(Ok(Frame::data(m.clone()))).await.unwrap();
    }
    drop(tx);
    let mut body = sender.send_request(req).await.unwrap().into_body();
    let (data, trailers) = trailers_of(&mut body).await;
    assert_eq!(data.concat(), sent.concat());
    assert_eq!(trailers["grpc-status"], "0");

    // Server streaming: 50 messages, then trailers.
    let (req, tx) = call("grpc.test", port, "/test.Echo/Stream");
    tx.send(Ok(Frame::data(message(b"tick")))).await.unwrap();
    drop(tx);
    let mut body = sender.send_request(req).await.unwrap().into_body();
    let (data, trailers) = trailers_of(&mut body).await;
    assert_eq!(data.concat(), message(b"tick").repeat(50));
    assert_eq!(trailers["grpc-status"], "0");

    // Bidirectional: each message comes back before the next is sent, so neither direction is
    // buffered by the gateway.
    use http_body_util::BodyExt;
    let (req, tx) = call("grpc.test", port, "/test.Echo/Bidi");
    tx.send(Ok(Frame::data(message(b"ping 0")))).await.unwrap();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    for i in 0..20 {
        let echoed = loop {
            let f = body.frame().await.unwrap().unwrap();
            if let Ok(d) = f.into_data() {
                if !d.is_empty() {
                    break d;
                }
            }
        };
        assert_eq!(echoed, message(format!("ping {i}").as_bytes()));
        if i < 19 {
            tx.send(Ok(Frame::data(message(
                format!("ping {}", i + 1).as_bytes(),
            ))))
            .await
            .unwrap();
        }
    }
    drop(tx);
    let (_, trailers) = trailers_of(&mut body).await;
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_health_check_takes_a_not_serving_backend_out_and_back() {
    let (upstream, serving) = crate::support::h2::h2c_upstream_with_health().await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\n\
         routes:\n- from: https://grpc.test\n  to: h2c://{upstream}\n  allow_public_unauthenticated_access: true\n\
         \x20 health_checks:\n  - grpc_health_check: {{service_name: test.Echo}}\n    interval: 0.2s\n    timeout: 1s\n"
    );
    let gw = Gateway::start_with(port, &text, &[]).await;
    let client = h2_client(port, &["grpc.test"]);
    let url = format!("https://grpc.test:{port}/test.Echo/Unary");
    let until = |want: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let r = call(&client, &url).await;
                // A served call carries its status in trailers, so no grpc-status header.
                let got = grpc(&r).1;
                let got = if got.is_empty() { "0".to_string() } else { got };
                if got == want {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "still {got}, want {want}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    until("0").await;
    serving.store(false, std::sync::atomic::Ordering::SeqCst);
    until("14").await; // UNAVAILABLE: no healthy backend
    serving.store(true, std::sync::atomic::Ordering::SeqCst);
    until("0").await;
    assert!(
        gw.log_has("unhealthy") || gw.log_has("health"),
        "{}",
        gw.log()
    );
}

/// One unary call to `grpc.test` over h2c with one message: the messages and trailers back.
async fn unary_h2c(gw: &Gateway, payload: &[u8]) -> (Vec<u8>, http::HeaderMap) {
    use crate::support::h2::{call_over, client_h2c, message};
    let mut sender = client_h2c(gw.port).await.unwrap();
    let (req, tx) = call_over("http", "grpc.test", gw.port, "/test.Echo/Unary");
    tx.send(Ok(hyper::body::Frame::data(message(payload))))
        .await
        .unwrap();
    drop(tx);
    let resp = sender
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.log()));
    assert_eq!(resp.status(), 200, "{}", gw.log());
    let (data, trailers) = trailers_of(&mut resp.into_body()).await;
    (data.concat(), trailers)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_listener_takes_h2c_from_grpc_clients_unless_codec_type_is_http1() {
    use crate::support::h2::{call_over, client_h2c, message};
    let upstream = crate::support::h2::h2c_upstream().await;
    let route = format!(
        "routes:\n- from: http://grpc.test\n  to: h2c://{upstream}\n  allow_public_unauthenticated_access: true\n"
    );
    let gw = Gateway::insecure(&route).await;
    let (data, trailers) = unary_h2c(&gw, b"over h2c").await;
    assert_eq!(data, message(b"over h2c").to_vec());
    assert_eq!(trailers["grpc-status"], "0");
    // HTTP/1.1 on the same listener still works.
    assert_eq!(gw.get("grpc.test", "/").await.status, 200);

    // codec_type: http1 turns h2c off.
    let gw = Gateway::insecure(&format!("codec_type: http1\n{route}")).await;
    let refused = match client_h2c(gw.port).await {
        Err(_) => true,
        Ok(mut sender) => {
            let (req, tx) = call_over("http", "grpc.test", gw.port, "/test.Echo/Unary");
            drop(tx);
            sender.send_request(req).await.is_err()
        }
    };
    assert!(refused, "h2c must not be spoken with codec_type: http1");
    assert_eq!(gw.get("grpc.test", "/").await.status, 200);
}

#[tokio::test]
async fn codec_type_chooses_what_the_tls_listener_offers() {
    let up = Upstream::echo("app").await;
    for (codec, want) in [
        ("auto", reqwest::Version::HTTP_2),
        ("http1", reqwest::Version::HTTP_11),
        ("http2", reqwest::Version::HTTP_2),
    ] {
        let port = free_port();
        let text = format!(
            "address: 127.0.0.1:{port}\ncodec_type: {codec}\nroutes:\n- from: https://app.test\n  to: {u}\n  allow_public_unauthenticated_access: true\n",
            u = up.url()
        );
        let _gw = Gateway::start_with(port, &text, &[]).await;
        let r = h2_client(port, &["app.test"])
            .get(format!("https://app.test:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!((codec, r.version()), (codec, want));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_its_grpc_timeout_ends_as_deadline_exceeded() {
    let upstream = crate::support::h2::h2c_upstream().await;
    let gw = plaintext_gateway(&format!("h2c://{upstream}"), "  timeout: 30s\n").await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("grpc.test", gw.addr())
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    let r = client
        .post(format!("http://grpc.test:{}/test.Echo/Slow", gw.port))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    let took = start.elapsed();
    let (status, code, message) = grpc(&r);
    assert_eq!(
        (status, code.as_str()),
        (200, "4"),
        "DEADLINE_EXCEEDED: {message}\n{}",
        gw.log()
    );
    assert!(
        took < std::time::Duration::from_secs(2),
        "answered at the deadline, not the upstream's 3 s: {took:?}"
    );
}

/// A plaintext gateway whose public `grpc.test` route goes to `to`, with `extra` route keys.
async fn plaintext_gateway(to: &str, extra: &str) -> Gateway {
    Gateway::insecure(&format!(
        "routes:\n- from: http://grpc.test\n  to: {to}\n  allow_public_unauthenticated_access: true\n{extra}"
    ))
    .await
}

/// A plaintext gateway whose `grpc.test` route goes to an h2-only TLS upstream (trusted through
/// `tls_custom_ca_file`), with `extra` route keys.
async fn gateway_to_h2_tls_upstream(extra: &str) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::support::certs::TestCa::new("upstream CA");
    let ca_file = ca.write(dir.path(), "upstream-ca");
    let upstream = crate::support::h2::h2_tls_upstream(&ca).await;
    let gw = Gateway::insecure(&format!(
        "routes:\n- from: http://grpc.test\n  to: https://{upstream}\n  tls_custom_ca_file: {}\n  allow_public_unauthenticated_access: true\n{extra}",
        ca_file.display()
    ))
    .await;
    (gw, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_upstream_that_offers_h2_gets_http2_by_alpn() {
    let (gw, _dir) = gateway_to_h2_tls_upstream("").await;
    let (data, trailers) = unary_h2c(&gw, b"over TLS h2").await;
    assert_eq!(data, crate::support::h2::message(b"over TLS h2").to_vec());
    assert_eq!(
        trailers["grpc-status"], "0",
        "trailers cross an HTTP/2 upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_token_in_grpc_metadata_signs_the_call_in_and_the_upstream_gets_the_assertion() {
    let upstream = crate::support::h2::h2c_upstream().await;
    let env = crate::signin::Env::with_routes(
        "",
        &format!("  - from: http://grpc.localhost\n    to: h2c://{upstream}\n    allow_any_authenticated_user: true\n    pass_identity_headers: true\n"),
    )
    .await;
    // A token for the gRPC host, the way a script gets one (the browser also resolves it).
    let addr = env.gw.addr();
    let names: Vec<String> = crate::signin::HOSTS
        .iter()
        .chain(&["grpc"])
        .map(|h| format!("{h}.localhost"))
        .collect();
    let browser = crate::signin::Browser::resolving(
        &names.iter().map(|n| (n.as_str(), addr)).collect::<Vec<_>>(),
    );
    let token = crate::programmatic::login_token(&env, &browser, "grpc").await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("grpc.localhost", env.gw.addr())
        .build()
        .unwrap();
    let url = env.url("grpc", "/test.Echo/Unary");
    let send = |auth: Option<String>| {
        let mut rb = client
            .post(&url)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8, 0, 0, 0, 0]);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send()
    };
    let r = send(None).await.unwrap();
    assert_eq!(grpc(&r).1, "16", "no token: UNAUTHENTICATED");
    let r = send(Some(format!("Bearer Pomerium-{token}")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        grpc(&r).1,
        "",
        "served: the status comes in trailers, {}",
        env.gw.log()
    );
    assert_eq!(
        r.headers()["x-saw-assertion"],
        "yes",
        "identity reaches the upstream as metadata"
    );
    assert_eq!(
        r.headers()["x-saw-authorization"],
        "no",
        "Vallum's token does not"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_resets_mid_stream_is_not_reported_as_success() {
    use crate::support::h2::{call_over, client_h2c, message};
    use http_body_util::BodyExt;
    let upstream = crate::support::h2::h2c_upstream().await;
    let gw = plaintext_gateway(&format!("h2c://{upstream}"), "").await;
    let mut sender = client_h2c(gw.port).await.unwrap();
    let (req, tx) = call_over("http", "grpc.test", gw.port, "/test.Echo/Reset");
    drop(tx);
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut data = Vec::new();
    let ended = loop {
        match body.frame().await {
            Some(Ok(f)) if f.is_data() => data.extend_from_slice(&f.into_data().unwrap()),
            Some(Ok(f)) => break format!("trailers {:?}", f.into_trailers().ok()),
            Some(Err(e)) => break format!("error {e}"),
            None => break "end without trailers".to_string(),
        }
    };
    // What came before the reset may or may not have been relayed by then; the end must show it.
    assert!(
        data.is_empty() || data.starts_with(&message(b"partial")),
        "{data:?}"
    );
    assert!(
        !ended.contains("grpc-status\": \"0"),
        "a reset is never a successful call: {ended}"
    );
    assert!(
        ended.starts_with("error") || ended == "end without trailers",
        "{ended}"
    );
}

/// A real gRPC server: tonic's standard health service, on an h2c listener. Returns its address
/// and the reporter that flips a service's status.
async fn tonic_health_server() -> (std::net::SocketAddr, tonic_health::server::HealthReporter) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("test.Echo", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, reporter)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tonic_client_and_server_talk_through_the_gateway_unary_and_streaming() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let (upstream, reporter) = tonic_health_server().await;
    let gw = Gateway::insecure(&format!(
        "routes:\n- from: http://grpc.test\n  to: h2c://{upstream}\n  allow_public_unauthenticated_access: true\n  timeout: 0s\n  \
         health_checks:\n  - grpc_health_check: {{service_name: test.Echo}}\n    interval: 0.5s\n"
    ))
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", gw.port))
        .unwrap()
        .origin(format!("http://grpc.test:{}", gw.port).parse().unwrap())
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let ask = |service: &str| {
        tonic::Request::new(HealthCheckRequest {
            service: service.into(),
        })
    };
    // Unary.
    let status = client
        .check(ask("test.Echo"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // The server's own error status crosses the gateway as the client's error.
    let err = client.check(ask("no.Such")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    // Server streaming: Watch sends the current status, then each change as it happens.
    let mut watch = client.watch(ask("test.Echo")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap().status;
    assert_eq!(
        first,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    reporter
        .set_service_status("test.Echo", tonic_health::ServingStatus::NotServing)
        .await;
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message())
        .await
        .expect("the change is streamed at once")
        .unwrap()
        .unwrap()
        .status;
    assert_eq!(
        next,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    // The gateway's own gRPC health check now takes the backend out: the call is refused by Vallum.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match client.check(ask("test.Echo")).await {
            Err(e) if e.code() == tonic::Code::Unavailable => break,
            other => assert!(std::time::Instant::now() < deadline, "still {other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_codec_type_chooses_the_upstream_http_version() {
    // `http://` with `codec_type: http2`: HTTP/2 with prior knowledge, like `h2c://`.
    let upstream = crate::support::h2::h2c_upstream().await;
    let gw = plaintext_gateway(&format!("http://{upstream}"), "  codec_type: http2\n").await;
    let (data, trailers) = unary_h2c(&gw, b"codec").await;
    assert_eq!(data, crate::support::h2::message(b"codec").to_vec());
    assert_eq!(trailers["grpc-status"], "0");

    // `https://` with `codec_type: http1` to an upstream that speaks only h2: refused by ALPN.
    let (gw, _dir) = gateway_to_h2_tls_upstream("  codec_type: http1\n").await;
    assert_eq!(
        gw.get("grpc.test", "/").await.status,
        502,
        "HTTP/1.1 only: no common protocol"
    );

    // A contradiction is a config error.
    let (ok, err) = crate::support::check_config(&format!(
        "insecure_server: true\nroutes:\n- from: http://a.test\n  to: h2c://{upstream}\n  codec_type: http1\n  allow_public_unauthenticated_access: true\n"
    ));
    assert!(!ok && err.contains("routes[0].codec_type"), "{err}");
}
