//! While bodies stream: a chunked request body counted against `max_request_bytes`, and an
//! upgraded (websocket) connection that lives only as long as its session.

use super::tunnel::{session_ended, UPGRADE_RECHECK};
use super::{Gateway, RequestCtx};
use pingora_core::{Error, ErrorType, Result};

pub async fn request_body(
    gw: &Gateway,
    body: Option<&bytes::Bytes>,
    ctx: &mut RequestCtx,
) -> Result<()> {
    // Re-confirmed in the store at most every UPGRADE_RECHECK while the client sends, and cut
    // when it ended (signed out, revoked, expired).
    if ctx.upgrade {
        if let Some(s) = ctx.identity.clone() {
            let now = std::time::Instant::now();
            if s.is_expired(crate::clock::unix_now()) {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(401),
                    "session expired",
                ));
            }
            let due = ctx
                .session_checked
                .is_none_or(|t| now.duration_since(t) >= UPGRADE_RECHECK);
            if due {
                ctx.session_checked = Some(now);
                if session_ended(gw, &s).await {
                    tracing::info!(request_id = %ctx.request_id, session_id = %s.id, "upgraded connection closed: session ended");
                    return Err(Error::explain(ErrorType::HTTPStatus(401), "session ended"));
                }
            }
        }
    }
    if let (Some(b), Some(max)) = (body, ctx.route.as_ref().and_then(|r| r.max_request_bytes)) {
        ctx.body_bytes += b.len() as u64;
        if ctx.body_bytes > max {
            tracing::info!(request_id = %ctx.request_id, limit = max, "request refused: body too large");
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "request body too large",
            ));
        }
    }
    Ok(())
}
