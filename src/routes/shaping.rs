//! The shaping half of a route: the `Host` the upstream sees, the request headers set and
//! removed, and the response headers set and rewritten.

use super::route::*;
use crate::config::error::Errors;
use crate::config::raw::{HeaderOrFlag, RawRoute};
use crate::config::settings::header_pairs;
use http::{HeaderName, HeaderValue};

/// `preserve_host_header`, `host_rewrite` or `host_rewrite_header` (at most one).
pub fn host_header(raw: &RawRoute, p: &dyn Fn(&str) -> String, e: &mut Errors) -> HostHeader {
    let from_header = match &raw.host_rewrite_header {
        Some(HeaderOrFlag::Name(n)) => Some(n),
        Some(HeaderOrFlag::Flag(b)) => {
            e.warn(
                p("host_rewrite_header"),
                format!("takes the name of the request header whose value becomes Host; {b} names none, so it changes nothing (as in Pomerium); to keep the client's Host, use preserve_host_header: true"),
            );
            None
        }
        None => None,
    };
    match (&raw.host_rewrite, from_header, raw.preserve_host_header) {
        (Some(h), None, false) => match HeaderValue::from_str(h) {
            Ok(v) => HostHeader::Fixed(v),
            Err(_) => {
                e.push(p("host_rewrite"), "not a valid host");
                HostHeader::Auto
            }
        },
        (None, Some(h), false) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => HostHeader::FromHeader(n),
            Err(_) => {
                e.push(p("host_rewrite_header"), "not a valid header name");
                HostHeader::Auto
            }
        },
        (None, None, true) => HostHeader::Preserve,
        (None, None, false) => HostHeader::Auto,
        _ => {
            e.push(
                p("preserve_host_header"),
                "preserve_host_header, host_rewrite and host_rewrite_header are mutually exclusive",
            );
            HostHeader::Auto
        }
    }
}

/// The compiled header options of one route.
pub struct Headers {
    pub set_request_headers: Vec<(HeaderName, HeaderTemplate)>,
    pub remove_request_headers: Vec<HeaderName>,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    pub rewrite_response_headers: Vec<ResponseHeaderRewrite>,
}

/// `set_request_headers`, `remove_request_headers`, `set_response_headers` (over the global
/// ones) and `rewrite_response_headers`.
pub fn headers(
    raw: &RawRoute,
    global_response: &[(HeaderName, HeaderValue)],
    p: &dyn Fn(&str) -> String,
    e: &mut Errors,
) -> Headers {
    let mut set_request_headers = Vec::new();
    for (k, v) in &raw.set_request_headers {
        let path = format!("{}.{k}", p("set_request_headers"));
        let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
            e.push(path, "not a valid HTTP header name");
            continue;
        };
        match HeaderTemplate::parse(&v.0) {
            Ok(t) => set_request_headers.push((name, t)),
            Err(m) => e.push(path, m),
        }
    }
    let mut remove_request_headers = Vec::new();
    for (i, h) in raw.remove_request_headers.iter().enumerate() {
        match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => remove_request_headers.push(n),
            Err(_) => e.push(
                format!("{}[{i}]", p("remove_request_headers")),
                "not a valid header name",
            ),
        }
    }
    let mut response_headers = global_response.to_vec();
    for (name, value) in header_pairs(
        &p("set_response_headers"),
        raw.set_response_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.0.as_str())),
        e,
    ) {
        response_headers.retain(|(n, _)| n != name);
        response_headers.push((name, value));
    }
    let mut rewrite_response_headers = Vec::new();
    for (i, rw) in raw.rewrite_response_headers.iter().enumerate() {
        match HeaderName::from_bytes(rw.header.as_bytes()) {
            Ok(n) => rewrite_response_headers.push(ResponseHeaderRewrite {
                header: n,
                prefix: rw.prefix.clone(),
                value: rw.value.clone(),
            }),
            Err(_) => e.push(
                format!("{}[{i}].header", p("rewrite_response_headers")),
                "not a valid header name",
            ),
        }
    }

    Headers {
        set_request_headers,
        remove_request_headers,
        response_headers,
        rewrite_response_headers,
    }
}
