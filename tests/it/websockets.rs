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

/// An upstream whose `101` is already waiting when the gateway sends the request (it answers
/// on accept, as a fast upstream on a loaded machine can look): the tunnel must stay open.
/// Pingora 0.9.1 tore such tunnels down after the `101` when it handled the upgrade request's
/// own empty body after reading the answer (cloudflare/pingora#946); Vallum carries the fix.
#[tokio::test]
async fn a_tunnel_survives_an_upstream_that_answers_before_the_request_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                // Echo what follows the request head.
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let rest = seen.split_off(end + 4);
                        if !rest.is_empty() && s.write_all(&rest).await.is_err() {
                            return;
                        }
                        break;
                    }
                }
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let gw = Gateway::insecure(&format!(
        r#"
routes:
  - from: http://ws.test
    to: http://{addr}
    allow_websockets: true
    allow_public_unauthenticated_access: true
"#
    ))
    .await;
    let mut torn_down = 0;
    for i in 0..40 {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
            .await
            .unwrap();
        c.write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = c.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection {i}: closed before the 101");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 101"),
            "connection {i}: {}",
            String::from_utf8_lossy(&got)
        );
        let msg = format!("frame {i}");
        c.write_all(msg.as_bytes()).await.unwrap();
        let mut echo = vec![0u8; msg.len()];
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), c.read_exact(&mut echo)).await;
        if !matches!(read, Ok(Ok(_))) || echo != msg.as_bytes() {
            torn_down += 1;
        }
    }
    assert_eq!(
        torn_down, 0,
        "of 40 upgraded connections, {torn_down} were torn down after the 101"
    );
}
