//! Step 1: is this a well-formed request at all? A strict request line, unambiguous framing, the
//! header count and size limits, and what to do with underscored header names. A request whose
//! length is ambiguous is refused and its connection closed: anything after it on the wire could
//! be smuggled.

use crate::config::settings::{Settings, Underscores};
use crate::respond::refusal::Refusal;
use http::HeaderMap;
use pingora_proxy::Session;

pub fn check(session: &mut Session, settings: &Settings, request_id: &str) -> Result<(), Refusal> {
    let problem = match session.as_downstream().as_http1() {
        Some(h1) => {
            let raw = h1.get_headers_raw_bytes();
            let line = first_line(&raw);
            request_line_problem(line)
                .or_else(|| {
                    // Pingora repaired the line the client sent: refuse what was sent.
                    super::wire::tap_of(h1.stream())
                        .filter(|tap| tap.repaired_line(line))
                        .map(|_| "malformed request line")
                })
                .or_else(|| framing_problem_h1(&raw))
        }
        None => framing_problem_h2(&session.req_header().headers),
    };
    if let Some(problem) = problem {
        tracing::info!(
            request_id,
            problem,
            "request refused: malformed request or ambiguous framing"
        );
        return Err(Refusal::Malformed(problem));
    }
    let head = &session.req_header().headers;
    limits(head, settings.ops.max_request_headers, settings.ops.max_request_header_bytes)
        .inspect_err(|r| tracing::info!(request_id, count = head.len(), refusal = ?r, "request refused: headers over the limits"))?;
    if settings.underscores != Underscores::Allow {
        let bad: Vec<_> = head
            .keys()
            .filter(|k| k.as_str().contains('_'))
            .cloned()
            .collect();
        if !bad.is_empty() {
            if settings.underscores == Underscores::RejectRequest {
                return Err(Refusal::UnderscoreHeader);
            }
            for k in bad {
                session.req_header_mut().remove_header(&k);
            }
        }
    }
    Ok(())
}

/// The request line of a raw HTTP/1 head, without its line ending.
pub fn first_line(raw: &[u8]) -> &[u8] {
    let end = raw
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(raw.len());
    raw.get(..end).unwrap_or(&[])
}

/// RFC 9112 §3: `method SP request-target SP HTTP-version`, exactly. Extra or other whitespace
/// (a space inside the target, a tab, a doubled separator) means parsers may split it differently,
/// so it is refused rather than repaired.
pub fn request_line_problem(line: &[u8]) -> Option<&'static str> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some("malformed request line");
    };
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if method.is_empty() || !method.iter().all(tchar) {
        return Some("malformed request line");
    }
    if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        return Some("malformed request line");
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Some("malformed request line");
    }
    None
}

/// Why an HTTP/1 head's framing is ambiguous, if it is: duplicate or malformed `Content-Length`,
/// `Content-Length` together with `Transfer-Encoding`, a coding other than `chunked`, or obsolete
/// line folding (the classic request-smuggling spellings). The raw head is read because Pingora
/// drops `Content-Length` from the parsed headers when `Transfer-Encoding` is present (RFC 9112
/// §6.3), which hides exactly the conflict to refuse.
pub fn framing_problem_h1(raw: &[u8]) -> Option<&'static str> {
    let mut cl: Vec<&[u8]> = Vec::new();
    let mut te: Vec<&[u8]> = Vec::new();
    // Line ends found with memchr: this pass reads every header byte of every request.
    let mut start = memchr::memchr(b'\n', raw).map_or(raw.len(), |i| i + 1); // past the request line
    while start < raw.len() {
        let end = memchr::memchr(b'\n', &raw[start..]).map_or(raw.len(), |i| start + i);
        let line = &raw[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Some("obsolete header line folding");
        }
        // Only `Content-Length` and `Transfer-Encoding` matter: skip other names at once.
        if !matches!(line.first(), Some(b'c' | b'C' | b't' | b'T')) {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or(&[]).trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            cl.push(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te.push(value);
        }
    }
    length_problem(&cl, &te)
}

/// The same rules over HTTP/2 (or any parsed) headers.
pub fn framing_problem_h2(h: &HeaderMap) -> Option<&'static str> {
    let cl: Vec<&[u8]> = h
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let te: Vec<&[u8]> = h
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    length_problem(&cl, &te)
}

fn length_problem(cl: &[&[u8]], te: &[&[u8]]) -> Option<&'static str> {
    if cl.len() > 1 {
        return Some("duplicate Content-Length");
    }
    if let Some(v) = cl.first() {
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Some("malformed Content-Length");
        }
    }
    if !te.is_empty() {
        if !cl.is_empty() {
            return Some("both Content-Length and Transfer-Encoding");
        }
        let mut codings = te.iter().flat_map(|v| v.split(|&b| b == b','));
        let only_chunked = codings
            .next()
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        if !only_chunked {
            return Some("unsupported Transfer-Encoding");
        }
    }
    None
}

/// `max_request_headers` and `max_request_header_bytes` (names plus values).
pub fn limits(head: &HeaderMap, max_count: usize, max_bytes: usize) -> Result<(), Refusal> {
    if head.len() > max_count {
        return Err(Refusal::TooManyHeaders);
    }
    let bytes: usize = head.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if bytes > max_bytes {
        return Err(Refusal::HeadersTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_is_exactly_three_parts() {
        for ok in [
            &b"GET / HTTP/1.1"[..],
            b"POST /a?b=c HTTP/1.0",
            b"OPTIONS * HTTP/1.1",
            b"GET http://a.example/x HTTP/1.1",
        ] {
            assert_eq!(
                request_line_problem(ok),
                None,
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &b"GET /a b HTTP/1.1"[..],
            b"GET  / HTTP/1.1",
            b"GET / HTTP/1.1 ",
            b"GET\t/ HTTP/1.1",
            b"GET /\t HTTP/1.1",
            b"GET / HTTP/2.0",
            b"GET /",
            b"G(T / HTTP/1.1",
            b" / HTTP/1.1",
            b"",
        ] {
            assert!(
                request_line_problem(bad).is_some(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            first_line(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            b"GET / HTTP/1.1"
        );
    }

    #[test]
    fn smuggling_spellings_are_refused() {
        let head = |h: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n").into_bytes();
        assert_eq!(framing_problem_h1(&head("Content-Length: 5")), None);
        assert_eq!(
            framing_problem_h1(&head("Transfer-Encoding: chunked")),
            None
        );
        for (h, why) in [
            (
                "Content-Length: 5\r\nContent-Length: 6",
                "duplicate Content-Length",
            ),
            ("Content-Length: +5", "malformed Content-Length"),
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked",
                "both Content-Length and Transfer-Encoding",
            ),
            (
                "Transfer-Encoding: gzip, chunked",
                "unsupported Transfer-Encoding",
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                "unsupported Transfer-Encoding",
            ),
            ("X-A: 1\r\n folded", "obsolete header line folding"),
        ] {
            assert_eq!(framing_problem_h1(&head(h)), Some(why), "{h}");
        }
        let mut h2 = HeaderMap::new();
        h2.append(http::header::CONTENT_LENGTH, "1".parse().unwrap());
        assert_eq!(framing_problem_h2(&h2), None);
        h2.append(http::header::CONTENT_LENGTH, "2".parse().unwrap());
        assert_eq!(framing_problem_h2(&h2), Some("duplicate Content-Length"));
    }

    #[test]
    fn header_limits() {
        let mut h = HeaderMap::new();
        h.insert("a", "12345".parse().unwrap());
        h.insert("b", "1".parse().unwrap());
        assert_eq!(limits(&h, 2, 100), Ok(()));
        assert_eq!(limits(&h, 1, 100), Err(Refusal::TooManyHeaders));
        assert_eq!(limits(&h, 2, 7), Err(Refusal::HeadersTooLarge));
    }
}
