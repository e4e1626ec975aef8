//! `Upgrade: tcp` routes: an authorised request becomes a raw TCP connection to the route's
//! address (what `vallum tcp` opens), re-checked against the session store like websockets.

use super::{Gateway, RequestCtx};
use crate::respond::refusal::{Answer, Format, Refusal};
use crate::respond::reply;
use crate::session::UserSession;
use http::StatusCode;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// How often an upgraded connection's session is re-confirmed while the client sends.
pub const UPGRADE_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a long-lived connection's session has ended: expired, or gone from the store
/// (signed out, revoked). A store outage does not end it (bounded staleness, as for requests).
pub async fn session_ended(gw: &Gateway, s: &UserSession) -> bool {
    s.is_expired(crate::clock::unix_now()) || matches!(gw.auth.store.get(&s.id).await, Ok(None))
}

/// Carries an authorised `Upgrade: tcp` request as a raw TCP connection: connects to the
/// route's address, answers 101, then copies bytes both ways until either side closes or
/// the session ends (re-checked like websockets). Pingora switches the downstream to
/// pass-through once it has sent the 101.
pub async fn run(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    addrs: &[std::net::SocketAddr],
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut upstream = None;
    for a in addrs {
        match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::net::TcpStream::connect(a),
        )
        .await
        {
            Ok(Ok(s)) => {
                upstream = Some(s);
                break;
            }
            _ => {
                tracing::warn!(request_id = %ctx.request_id, backend = %a, "tunnel backend unreachable")
            }
        }
    }
    let headers = ctx
        .route
        .as_ref()
        .map(|r| r.response_headers.clone())
        .unwrap_or_default();
    let Some(mut upstream) = upstream else {
        let answer = Answer {
            format: Format::of(&session.req_header().headers),
            request_id: &ctx.request_id,
            branding: ctx.snap.as_ref().map(|s| &s.settings.branding),
        };
        let r = answer.refuse(Refusal::TunnelBackend);
        let _ = reply::send(session, r, &headers, &ctx.request_id).await;
        return;
    };
    let Ok(mut resp) = ResponseHeader::build(StatusCode::SWITCHING_PROTOCOLS, Some(3)) else {
        return;
    };
    let _ = resp.insert_header(http::header::UPGRADE, "tcp");
    let _ = resp.insert_header(http::header::CONNECTION, "Upgrade");
    let _ = resp.insert_header("x-request-id", ctx.request_id.as_str());
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
    {
        return;
    }
    ctx.upstream_started = Some(std::time::Instant::now());
    tracing::info!(request_id = %ctx.request_id, "tunnel open");
    let mut buf = vec![0u8; 16 * 1024];
    let mut recheck = tokio::time::interval(UPGRADE_RECHECK);
    loop {
        tokio::select! {
            from_client = session.read_request_body() => match from_client {
                Ok(Some(bytes)) => {
                    if upstream.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                _ => break,
            },
            n = upstream.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = bytes::Bytes::copy_from_slice(buf.get(..n).unwrap_or(&[]));
                    if session.write_response_body(Some(chunk), false).await.is_err() {
                        break;
                    }
                }
            },
            _ = recheck.tick() => {
                let Some(s) = ctx.identity.clone() else { continue };
                if session_ended(gw, &s).await {
                    tracing::info!(request_id = %ctx.request_id, session_id = %s.id, "tunnel closed: session ended");
                    break;
                }
            }
        }
    }
    let _ = upstream.shutdown().await;
    let _ = session.write_response_body(None, true).await;
}
