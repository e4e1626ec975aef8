//! A split deployment: an authenticate-only node and proxy-only nodes sharing sessions through
//! Redis. Sign-in on one, service on the others, and a sign-out that holds everywhere.

use crate::signin::Browser;
use crate::support::idp::Idp;
use crate::support::redis::RedisServer;
use crate::support::{free_port, Gateway, Upstream};
use std::sync::atomic::Ordering;

const SECRETS: &str = "cookie_secret: 8GIP1sU0aqXJZ8T8XkL1zB0cR2P0kTmYxw0a3DkBwsw=\nshared_secret: Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=\n";

#[tokio::test]
async fn authenticate_and_proxy_nodes_share_sessions_through_redis() {
    let redis = RedisServer::start().await;
    let idp = Idp::start().await;
    let up = Upstream::echo("app").await;
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let common = format!(
        "insecure_server: true\nauthenticate_service_url: http://authenticate.localhost:{pa}\n{SECRETS}\
         databroker_storage_type: redis\ndatabroker_storage_connection_string: {}\n\
         routes:\n  - from: http://app.localhost\n    to: {}\n    allow_any_authenticated_user: true\n",
        redis.url(),
        up.url()
    );
    let authn = Gateway::start_with(
        pa,
        &format!(
            "address: 127.0.0.1:{pa}\nservices: authenticate\n{}{common}",
            idp.config()
        ),
        &[],
    )
    .await;
    let proxy_b = Gateway::start_with(
        pb,
        &format!("address: 127.0.0.1:{pb}\nservices: proxy\n{common}"),
        &[],
    )
    .await;
    let proxy_c = Gateway::start_with(
        pc,
        &format!("address: 127.0.0.1:{pc}\nservices: proxy\n{common}"),
        &[],
    )
    .await;
    authn
        .eventually("identity provider discovered", || async {
            authn.log().contains("identity provider discovered")
        })
        .await;

    let b = Browser::resolving(&[
        ("authenticate.localhost", authn.addr()),
        ("app.localhost", proxy_b.addr()),
    ]);
    let app = format!("http://app.localhost:{pb}/hello");
    let (resp, hops) = b.browse(&app).await;
    assert_eq!(
        resp.status,
        200,
        "{hops:#?}\nauthenticate:\n{}\nproxy:\n{}",
        authn.log(),
        proxy_b.log()
    );
    assert_eq!(idp.authorize_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        authn.get("app.localhost", "/").await.status,
        404,
        "the authenticate node serves no routes"
    );

    // Node C never saw this browser, yet serves it: the session lives in Redis.
    let cookie = b.cookie_for(&app).unwrap();
    let via_c = |cookie: String| {
        let c = crate::support::client();
        let url = proxy_c.url("/hello");
        async move {
            c.get(url)
                .header("host", format!("app.localhost:{pb}"))
                .header("cookie", cookie)
                .header("accept", "text/html")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(via_c(cookie.clone()).await, 200);

    // Sign out through node B; node C refuses the same cookie at once.
    let (page, _) = b
        .get(&format!("http://app.localhost:{pb}/.pomerium/sign_out"))
        .await;
    let csrf = crate::signin::csrf_field(&page.body);
    let r = b
        .client
        .post(format!("http://app.localhost:{pb}/.pomerium/sign_out"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    // Node C cached the session; the revocation message reaches it within milliseconds.
    let signed_out = std::time::Instant::now();
    while via_c(cookie.clone()).await != 302 {
        assert!(
            signed_out.elapsed() < std::time::Duration::from_millis(500),
            "signed out on every node"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
