//! `SIGTERM` stops a gateway as soon as nothing is in flight: at once when idle, after the last
//! response when busy — not after a fixed grace period that orchestrators cut short with
//! `SIGKILL`.

use crate::security::public_gateway;
use crate::support::client;
use std::time::Duration;

#[tokio::test]
async fn an_idle_gateway_stops_at_once_on_sigterm() {
    let (mut gw, _up) = public_gateway("", "").await;
    assert_eq!(gw.get("app.test", "/").await.status, 200);
    gw.signal("TERM");
    let took = gw.exited_within(Duration::from_secs(10)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(3)),
        "took {took:?}\n{}",
        gw.log()
    );
    assert!(gw.log_has("no request in flight"), "{}", gw.log());
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits() {
    let (mut gw, _up) = public_gateway("", "").await;
    let url = gw.url("/slow?sleep_ms=1500");
    let slow = tokio::spawn(async move {
        client()
            .get(url)
            .header("host", "app.test")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    gw.signal("TERM");
    assert_eq!(
        slow.await.unwrap().ok(),
        Some(200),
        "the request in flight was answered"
    );
    let took = gw.exited_within(Duration::from_secs(10)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(3)),
        "exited {took:?} after the response, not after the grace period\n{}",
        gw.log()
    );
}
