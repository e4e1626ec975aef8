//! Step 5: what the route lets through besides plain requests. Connection upgrades only where the
//! route allows them (a tunnel route takes only `Upgrade: tcp`, what `vallum tcp` sends), the
//! websocket `Origin` check, and a declared body over `max_request_bytes` (chunked bodies are
//! counted as they stream, in `request_body_filter`).

use crate::respond::refusal::Refusal;
use crate::routes::route::{Action, Route};
use http::HeaderMap;

/// `Ok(true)`: an upgrade the route admits (websocket, spdy); `Ok(false)`: a plain request.
pub fn admit(headers: &HeaderMap, is_upgrade: bool, route: &Route) -> Result<bool, Refusal> {
    let upgrade = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|t| t.trim().to_ascii_lowercase());
    if let Action::Tunnel(_) = &route.action {
        if !is_upgrade || upgrade.as_deref() != Some("tcp") {
            return Err(Refusal::TunnelOnly);
        }
        return Ok(false);
    }
    if !is_upgrade {
        return Ok(false);
    }
    let token = upgrade
        .as_deref()
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .unwrap_or_default();
    // h2c would turn the connection into HTTP/2 that Vallum never parses: never relayed.
    if token == "h2c" || !route.allows_upgrade(token) {
        return Err(Refusal::UpgradeNotAllowed);
    }
    // Cross-site websocket hijacking: a page on another origin riding the user's cookie.
    if !route.websocket_origins.is_empty() {
        let origin = headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
        if !origin.is_some_and(|o| route.websocket_origins.contains(&o)) {
            return Err(Refusal::WebsocketOrigin);
        }
    }
    Ok(true)
}

/// A `Content-Length` over the route's limit is refused before any of the body is read.
pub fn declared_body(headers: &HeaderMap, limit: Option<u64>) -> Result<(), Refusal> {
    let Some(max) = limit else {
        return Ok(());
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max => Err(Refusal::BodyTooLarge),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn upgrades_only_where_the_route_allows_them() {
        let snap = crate::proxy::testing::snapshot(
            "- from: http://plain.test\n  to: http://127.0.0.1:9\n  allow_public_unauthenticated_access: true\n\
             - from: http://ws.test\n  to: http://127.0.0.1:9\n  allow_public_unauthenticated_access: true\n  allow_websockets: true\n  websocket_allowed_origins: [https://ws.test]\n\
             - from: tcp+http://db.test:5432\n  to: tcp://127.0.0.1:5432\n  allow_public_unauthenticated_access: true\n",
        );
        let route = |h| crate::proxy::testing::route(&snap, h, "/");
        let ws = headers(&[("upgrade", "websocket"), ("origin", "https://ws.test/")]);
        assert_eq!(
            admit(&HeaderMap::new(), false, &route("plain.test")),
            Ok(false)
        );
        assert_eq!(admit(&ws, true, &route("ws.test")), Ok(true));
        assert_eq!(
            admit(&ws, true, &route("plain.test")),
            Err(Refusal::UpgradeNotAllowed)
        );
        let foreign = headers(&[("upgrade", "websocket"), ("origin", "https://evil.test")]);
        assert_eq!(
            admit(&foreign, true, &route("ws.test")),
            Err(Refusal::WebsocketOrigin)
        );
        let h2c = headers(&[("upgrade", "h2c")]);
        assert_eq!(
            admit(&h2c, true, &route("ws.test")),
            Err(Refusal::UpgradeNotAllowed)
        );
        let db = crate::proxy::testing::snapshot(
            "- from: tcp+http://db.test:5432\n  to: tcp://127.0.0.1:5432\n  allow_public_unauthenticated_access: true\n",
        );
        let tunnel = Arc::clone(db.routes.find("db.test", 5432, "/").unwrap());
        let tcp = headers(&[("upgrade", "tcp")]);
        assert_eq!(admit(&tcp, true, &tunnel), Ok(false));
        assert_eq!(
            admit(&HeaderMap::new(), false, &tunnel),
            Err(Refusal::TunnelOnly)
        );
        assert_eq!(admit(&ws, true, &tunnel), Err(Refusal::TunnelOnly));
    }

    #[test]
    fn declared_bodies_over_the_limit_are_refused() {
        let h = headers(&[("content-length", "11")]);
        assert_eq!(declared_body(&h, Some(10)), Err(Refusal::BodyTooLarge));
        assert_eq!(declared_body(&h, Some(11)), Ok(()));
        assert_eq!(declared_body(&h, None), Ok(()));
        assert_eq!(declared_body(&HeaderMap::new(), Some(1)), Ok(()));
    }
}
