//! Responses Vallum writes itself (errors, direct `response` routes, redirects), in one place so
//! every one carries the configured response headers and the same body format.

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
}

impl Reply {
    /// An error page: JSON for clients that ask for it, plain text otherwise.
    pub fn error(status: StatusCode, reason: &str, wants_json: bool) -> Reply {
        if wants_json {
            let body =
                serde_json::json!({ "error": reason, "status": status.as_u16() }).to_string();
            return Reply {
                status,
                content_type: "application/json",
                body: Bytes::from(body),
                location: None,
                cookies: Vec::new(),
                extra: Vec::new(),
            };
        }
        let text = format!(
            "{} {}\n{reason}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(text),
            location: None,
            cookies: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn text(status: StatusCode, body: Bytes) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
            location: None,
            cookies: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn html(status: StatusCode, body: String) -> Reply {
        Reply {
            status,
            content_type: "text/html; charset=utf-8",
            body: Bytes::from(body),
            location: None,
            cookies: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: Bytes::from(value.to_string()),
            location: None,
            cookies: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// A 302 to `url` (already validated by the caller).
    pub fn found(url: &str) -> Reply {
        match HeaderValue::from_str(url) {
            Ok(v) => Reply::redirect(StatusCode::FOUND, v),
            Err(_) => Reply::error(StatusCode::BAD_REQUEST, "invalid redirect target", false),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.extra.push((name, value));
        self
    }

    pub fn with_cookie(mut self, cookie: String) -> Reply {
        self.cookies.push(cookie);
        self
    }

    pub fn redirect(status: StatusCode, location: HeaderValue) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::new(),
            location: Some(location),
            cookies: Vec::new(),
            extra: Vec::new(),
        }
    }
}

/// The 403 page: why, the request id, and a link to `/.pomerium/` to see who you are.
pub fn forbidden(reasons: &[&'static str], request_id: &str, wants_json: bool) -> Reply {
    if wants_json {
        let body = serde_json::json!({ "error": "forbidden", "reasons": reasons, "request_id": request_id });
        return Reply::json(StatusCode::FORBIDDEN, &body);
    }
    let items: String = reasons
        .iter()
        .map(|r| format!("<li><code>{r}</code></li>"))
        .collect();
    Reply::html(
        StatusCode::FORBIDDEN,
        crate::authn::pages::page(
            "403 Forbidden",
            &format!(
                "<p>You are not allowed to see this page.</p><ul>{items}</ul><p>Request id: <code>{}</code></p>\
                 <p><a href=\"/.pomerium/\">Who am I signed in as?</a></p>",
                crate::authn::pages::escape(request_id)
            ),
        ),
    )
}

/// Every reason is about the client certificate (none, or not trusted): answered with 495.
pub fn is_client_cert_problem(reasons: &[&'static str]) -> bool {
    !reasons.is_empty()
        && reasons.iter().all(|r| {
            matches!(
                *r,
                "client-certificate-required" | "invalid-client-certificate"
            )
        })
}

/// 495 (nginx's and Pomerium's "SSL Certificate Error"): the route needs a trusted client
/// certificate. Never a sign-in redirect: signing in cannot fix this.
pub fn client_cert_error(reason: &'static str, request_id: &str, wants_json: bool) -> Reply {
    let status = StatusCode::from_u16(495).unwrap_or(StatusCode::FORBIDDEN);
    if wants_json {
        let body = serde_json::json!({ "error": reason, "request_id": request_id });
        return Reply::json(status, &body);
    }
    let what = if reason == "client-certificate-required" {
        "This page needs a client certificate, and your browser did not present one."
    } else {
        "The client certificate your browser presented is not trusted here (unknown issuer, expired or revoked)."
    };
    Reply::html(
        status,
        crate::authn::pages::page(
            "495 SSL Certificate Error",
            &format!(
                "<p>{what}</p><ul><li><code>{reason}</code></li></ul><p>Install the certificate your organisation issued for this device, then reconnect.</p><p>Request id: <code>{}</code></p>",
                crate::authn::pages::escape(request_id)
            ),
        ),
    )
}

pub fn wants_json(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// Adds the request id to an error page Vallum wrote (text, HTML or JSON), so a user can quote
/// it and an operator find the matching log lines.
fn with_request_id(mut reply: Reply, request_id: &str) -> Reply {
    if reply.status.as_u16() < 400 || request_id.is_empty() {
        return reply;
    }
    let body = String::from_utf8_lossy(&reply.body);
    let next = if reply.content_type.starts_with("application/json") {
        match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(mut o)) if !o.contains_key("request_id") => {
                o.insert("request_id".into(), request_id.into());
                Some(serde_json::Value::Object(o).to_string())
            }
            _ => None,
        }
    } else if reply.content_type.starts_with("text/html") {
        (!body.contains("Request id") && body.contains("</body>")).then(|| {
            body.replacen(
                "</body>",
                &format!(
                    "<p class=\"rid\">Request id: <code>{}</code></p></body>",
                    crate::authn::pages::escape(request_id)
                ),
                1,
            )
        })
    } else if reply.content_type.starts_with("text/plain") {
        Some(format!("{body}request id: {request_id}\n"))
    } else {
        None
    };
    if let Some(b) = next {
        reply.body = Bytes::from(b);
    }
    reply
}

pub async fn send(
    session: &mut Session,
    reply: Reply,
    headers: &[(HeaderName, HeaderValue)],
    request_id: &str,
) -> pingora_core::Result<()> {
    let reply = with_request_id(reply, request_id);
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
