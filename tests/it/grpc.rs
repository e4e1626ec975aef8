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
