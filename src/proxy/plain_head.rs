//! Pingora's request and response heads keep a second map beside the headers, of each name as
//! it was spelled on the wire, and every header added through them is title-cased, re-parsed and
//! written to both maps. Vallum shapes each forwarded head in one go on the plain `http` parts
//! instead, and hands Pingora back a head without the case map: the upstream and the client get
//! lower-case names (standard ones title-cased by Pingora's writer), as from Pomerium's Envoy.
//! Pingora sizes a parsed head's map to the headers it has, so the caller says how many it may
//! add: room is made once (or not at all when they fit), not by a rehash on each doubling.

use http::HeaderMap;
use pingora_http::{RequestHeader, ResponseHeader};

/// Runs `shape` on the request's headers (with room for `added` more), with the request line
/// as the URI gives it. The caller has put the URI in origin form (its path and query are the
/// request-target), so the line the upstream reads is the one routed on.
pub fn request<T>(
    req: &mut RequestHeader,
    added: usize,
    shape: impl FnOnce(&mut HeaderMap) -> T,
) -> T {
    let end_stream = req.send_end_stream();
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(req, empty));
    parts.headers.reserve(added);
    let out = shape(&mut parts.headers);
    *req = RequestHeader::from(parts);
    if let Some(end) = end_stream {
        req.set_send_end_stream(end);
    }
    out
}

/// Runs `shape` on the response's headers (with room for `added` more); a reason phrase other
/// than the status code's own is kept.
pub fn response<T>(
    resp: &mut ResponseHeader,
    added: usize,
    shape: impl FnOnce(&mut HeaderMap) -> T,
) -> T {
    let reason = resp.get_reason_phrase().map(str::to_owned);
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, empty));
    parts.headers.reserve(added);
    let out = shape(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        // The phrase was accepted once (Pingora parsed it): setting it again cannot fail.
        let _ = resp.set_reason_phrase(reason.as_deref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keeps_line_and_end_of_stream_and_drops_case() {
        let mut req = RequestHeader::build("POST", b"/a?b=1", None).unwrap();
        req.insert_header("X-Mixed-Case", "1").unwrap();
        // Only an HTTP/2 request has an end-of-stream flag to keep.
        req.set_version(http::Version::HTTP_2);
        req.set_send_end_stream(false);
        assert!(req.has_case());
        request(&mut req, 1, |h| {
            h.insert("x-added", http::HeaderValue::from_static("2"));
        });
        assert!(!req.has_case());
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(req.raw_path(), b"/a?b=1");
        assert_eq!(req.send_end_stream(), Some(false));
        assert_eq!(req.headers["x-mixed-case"], "1");
        assert_eq!(req.headers["x-added"], "2");
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.contains("x-mixed-case: 1\r\n"), "{wire}");
    }

    #[test]
    fn response_keeps_status_and_a_custom_reason() {
        let mut resp = ResponseHeader::build(404, None).unwrap();
        resp.set_reason_phrase(Some("Gone Fishing")).unwrap();
        resp.insert_header("X-Up", "1").unwrap();
        response(&mut resp, 1, |h| {
            h.insert("x-request-id", http::HeaderValue::from_static("r"));
        });
        assert!(!resp.has_case());
        assert_eq!(resp.status.as_u16(), 404);
        assert_eq!(resp.get_reason_phrase(), Some("Gone Fishing"));
        assert_eq!(resp.headers["x-up"], "1");
        assert_eq!(resp.headers["x-request-id"], "r");
        let mut plain = ResponseHeader::build(200, None).unwrap();
        response(&mut plain, 0, |_| ());
        assert_eq!(plain.get_reason_phrase(), Some("OK"));
    }
}
