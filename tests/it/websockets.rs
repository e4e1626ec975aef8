//! Websocket upgrades pass only where `allow_websockets` is set.

use crate::support::upstream::WsEcho;
use crate::support::Gateway;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn websockets_on_and_off() {
    let ws = WsEcho::start().await;
    let gw = Gateway::insecure(&format!(
        r#"
routes:
  - from: http://ws.test
    to: http://{a}
    allow_websockets: true
    allow_public_unauthenticated_access: true
  - from: http://plain.test
    to: http://{a}
    allow_public_unauthenticated_access: true
"#,
        a = ws.addr
    ))
    .await;

    let mut req = format!("ws://127.0.0.1:{}/chat", gw.port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("host", "ws.test".parse().unwrap());
    let (mut conn, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade through the gateway");
    assert_eq!(resp.status(), 101);
    conn.send(Message::text("ping one")).await.unwrap();
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::text("ping one")
    );
    conn.send(Message::text("ping two")).await.unwrap();
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::text("ping two")
    );

    let mut req = format!("ws://127.0.0.1:{}/chat", gw.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("host", "plain.test".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("upgrade should be refused, got {other:?}"),
    }
}
