//! A response Vallum writes itself, and the one function that writes it: every reply carries the
//! request id and the configured response headers, whoever built it.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    pub location: Option<HeaderValue>,
    /// `Set-Cookie` values.
    pub cookies: Vec<String>,
    /// Extra headers, set after the defaults (so they may replace `Cache-Control`).
    pub extra: Vec<(HeaderName, HeaderValue)>,
    /// Close the connection after this reply: whatever follows on it cannot be trusted (an
    /// ambiguous frame, a refused upgrade).
    pub close: bool,
}

impl Reply {
    pub(super) fn new(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
        Reply {
            status,
            content_type,
            body,
            location: None,
            cookies: Vec::new(),
            extra: Vec::new(),
            close: false,
        }
    }

    pub fn text(status: StatusCode, body: Bytes) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn html(status: StatusCode, body: String) -> Reply {
        Reply::new(status, "text/html; charset=utf-8", Bytes::from(body))
    }

    pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
        Reply::new(status, "application/json", Bytes::from(value.to_string()))
    }

    /// A 302 to `url`. Callers pass URLs they built or validated (a `url::Url` serialises to a
    /// valid header value); anything else goes to `/` rather than into a broken header.
    pub fn found(url: &str) -> Reply {
        let location = HeaderValue::from_str(url).unwrap_or(HeaderValue::from_static("/"));
        Reply::redirect(StatusCode::FOUND, location)
    }

    pub fn redirect(status: StatusCode, location: HeaderValue) -> Reply {
        let mut r = Reply::new(status, "text/plain; charset=utf-8", Bytes::new());
        r.location = Some(location);
        r
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.extra.push((name, value));
        self
    }

    pub fn with_cookie(mut self, cookie: String) -> Reply {
        self.cookies.push(cookie);
        self
    }
}

/// Writes `reply` with the request id and `headers` (the route's `set_response_headers`, or the
/// global ones when no route matched).
pub async fn send(
    session: &mut Session,
    reply: Reply,
    headers: &[(HeaderName, HeaderValue)],
    request_id: &str,
) -> pingora_core::Result<()> {
    if reply.close {
        session.set_keepalive(None);
    }
    let mut resp = ResponseHeader::build(reply.status, Some(5 + headers.len()))?;
    resp.insert_header("x-request-id", request_id)?;
    for (k, v) in headers {
        resp.insert_header(k.clone(), v.clone())?;
    }
    resp.insert_header(CONTENT_TYPE, reply.content_type)?;
    resp.insert_header(CONTENT_LENGTH, reply.body.len().to_string())?;
    resp.insert_header(CACHE_CONTROL, "no-store")?;
    if let Some(loc) = reply.location {
        resp.insert_header(LOCATION, loc)?;
    }
    for (k, v) in reply.extra {
        resp.insert_header(k, v)?;
    }
    for c in reply.cookies {
        resp.append_header(http::header::SET_COOKIE, c)?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(reply.body), true).await?;
    }
    Ok(())
}
