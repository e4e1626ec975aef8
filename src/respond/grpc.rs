//! Refusals in gRPC's own terms. A gRPC client cannot follow a redirect or read an HTML page: it
//! reads `grpc-status` and `grpc-message`. Vallum answers it as a gRPC server would fail a call,
//! with a "Trailers-Only" response (HTTP 200, the status in the headers, no body), so a client
//! that must sign in sees UNAUTHENTICATED and one that policy refuses sees PERMISSION_DENIED,
//! with the reason and the request id in the message.

use super::refusal::Refusal;
use super::reply::Reply;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Whether the request is a gRPC call (`application/grpc`, `application/grpc+proto`, …;
/// gRPC-Web is not: browsers' gRPC-Web proxies read HTTP statuses).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim_start();
            ct.len() >= 16
                && ct[..16].eq_ignore_ascii_case("application/grpc")
                && !ct[16..].starts_with(['-', 'W', 'w'])
        })
}

/// The gRPC status code for a refusal (codes from `grpc/status.h`), from what the refusal means
/// rather than only from its HTTP status.
pub fn code(refusal: &Refusal, status: StatusCode) -> u8 {
    match status.as_u16() {
        _ if matches!(refusal, Refusal::SignInRateLimited) => 8, // RESOURCE_EXHAUSTED
        401 | 495 => 16,                                         // UNAUTHENTICATED
        403 | 450 => 7,                                          // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED (gRPC's HTTP mapping)
        408 | 504 => 4,        // DEADLINE_EXCEEDED
        413 | 429 => 8,        // RESOURCE_EXHAUSTED
        400 | 414 | 431 => 3,  // INVALID_ARGUMENT
        421 | 502 | 503 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%` itself.
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

fn percent_encode(message: &str) -> String {
    percent_encoding::utf8_percent_encode(message, GRPC_MESSAGE).to_string()
}

pub fn reply(refusal: &Refusal, status: StatusCode, request_id: &str) -> Reply {
    let message = percent_encode(&format!("{} (request id {request_id})", refusal.message()));
    let mut r = Reply::new(StatusCode::OK, "application/grpc", Bytes::new());
    r = r.with_header(
        HeaderName::from_static("grpc-status"),
        HeaderValue::from(u16::from(code(refusal, status))),
    );
    if let Ok(v) = HeaderValue::from_str(&message) {
        r = r.with_header(HeaderName::from_static("grpc-message"), v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Reason;

    fn headers(ct: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        m
    }

    #[test]
    fn grpc_calls_are_recognised_by_content_type() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;charset=x",
        ] {
            assert!(is_grpc(&headers(ct)), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/json",
            "text/grpc",
        ] {
            assert!(!is_grpc(&headers(ct)), "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn refusals_become_grpc_statuses_in_a_trailers_only_answer() {
        let cases = [
            (Refusal::SignInRequired { location: None }, 16),
            (Refusal::Forbidden(vec![Reason::EmailUnauthorized]), 7),
            (Refusal::NoRoute, 12),
            (Refusal::StoreUnavailable, 14),
            (Refusal::SignInRateLimited, 8),
            (Refusal::BodyTooLarge, 8),
        ];
        for (refusal, want) in cases {
            let status = refusal.status();
            let r = reply(&refusal, status, "rid-1");
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.content_type, "application/grpc");
            assert!(r.body.is_empty());
            let get = |n: &str| {
                r.extra
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.to_str().unwrap().to_string())
            };
            assert_eq!(get("grpc-status"), Some(want.to_string()), "{refusal:?}");
            assert!(get("grpc-message").unwrap().contains("request id rid-1"));
        }
    }

    #[test]
    fn the_message_is_percent_encoded() {
        assert_eq!(percent_encode("a 100% é\n"), "a 100%25 %C3%A9%0A");
    }
}
