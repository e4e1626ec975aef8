//! Step 2: what the request is for. One path truth (the raw target normalised once, by the rules
//! of the config), and one host (from `Host` or `:authority`, which must agree when both are
//! sent).

use crate::config::settings::Settings;
use crate::respond::refusal::Refusal;
use crate::respond::reply::Reply;
use crate::routes::path::{self, Normalized, PathRules, Target};
use http::{HeaderValue, StatusCode};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// Where a request is going.
pub struct Addressed {
    pub target: Target,
    /// Lower-case, without a trailing dot or port.
    pub host: String,
    /// The explicit port, else the listener's default (443 or 80).
    pub port: u16,
    /// `Host` as the browser sends it (with the port if one was given): what cookies and
    /// sign-in hand-offs are bound to.
    pub host_full: String,
    /// `https` or `http`, as the browser sees it: the URL a sign-in comes back to.
    pub scheme: &'static str,
}

impl Addressed {
    /// `host` (lower-case, no port) with the port the request named, if any, under `scheme`.
    pub fn new(
        target: Target,
        host: String,
        explicit_port: Option<u16>,
        scheme: &'static str,
    ) -> Self {
        let port = explicit_port.unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host_full = match explicit_port {
            Some(p) => {
                let mut full = String::with_capacity(host.len() + 6);
                full.push_str(&host);
                full.push(':');
                crate::text::push_int(&mut full, p);
                full
            }
            None => host.clone(),
        };
        Addressed {
            target,
            host,
            port,
            host_full,
            scheme,
        }
    }

    /// The URL as the browser sees it: scheme, `Host` as sent, path and query.
    pub fn url(&self) -> String {
        let mut u = format!("{}://{}{}", self.scheme, self.host_full, self.target.path);
        if let Some(q) = &self.target.query {
            u.push('?');
            u.push_str(q);
        }
        u
    }
}

/// The normalised target, or the reply that sends the client to its normal form.
pub fn path(session: &Session, settings: &Settings) -> Result<Result<Target, Reply>, Refusal> {
    let rules = PathRules {
        escaped_slashes: settings.escaped_slashes,
        normalize: settings.normalize_path,
        merge_slashes: settings.merge_slashes,
    };
    match path::normalize(&raw_target(session), rules) {
        Ok(Normalized::Ok(t)) => Ok(Ok(t)),
        Ok(Normalized::Redirect(loc)) => match HeaderValue::from_str(&loc) {
            Ok(v) => Ok(Err(Reply::redirect(StatusCode::TEMPORARY_REDIRECT, v))),
            Err(_) => Err(Refusal::BadPath("invalid path".into())),
        },
        Err(e) => Err(Refusal::BadPath(e.to_string())),
    }
}

/// The host and port, checked: an absolute-form target (`GET http://a/ HTTP/1.1`) must name the
/// same host as `Host`, or the router and an upstream that reads `Host` would disagree.
pub fn host(req: &RequestHeader, target: Target, tls: bool) -> Result<Addressed, Refusal> {
    let (host, explicit_port) = request_host(req).ok_or(Refusal::BadHost)?;
    if req.uri.authority().is_some() {
        let header_host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(split_authority);
        if header_host.is_some_and(|(h, p)| h != host || p != explicit_port) {
            return Err(Refusal::HostMismatch);
        }
    }
    Ok(Addressed::new(
        target,
        host,
        explicit_port,
        if tls { "https" } else { "http" },
    ))
}

/// Host and port of the request, from `:authority` (HTTP/2, absolute form) or `Host`, lower-cased
/// and without a trailing dot, so `App.Example.com.` and `app.example.com` are one host.
pub fn request_host(req: &RequestHeader) -> Option<(String, Option<u16>)> {
    match req.uri.authority() {
        Some(a) => split_authority(a.as_str()),
        None => split_authority(req.headers.get(http::header::HOST)?.to_str().ok()?),
    }
}

/// `host[:port]` split and checked by hand (this runs on every request: parsing it as a URI
/// authority copied it first). Accepts what an authority may hold and no more: a registered name
/// or IPv4 address of unreserved and sub-delimiter characters, or a bracketed IPv6 literal (a
/// `%` only for its zone), then at most one `:` and the port; no user info. A port that is not a
/// number reads as none, as `http`'s `Authority::port_u16` has it.
pub fn split_authority(raw: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = match raw.strip_prefix('[') {
        Some(rest) => {
            let close = rest.find(']')?;
            let literal = &rest[..close];
            let ok = !literal.is_empty()
                && literal.bytes().all(|b| {
                    b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'%') || reg_name_byte(b)
                });
            if !ok {
                return None;
            }
            let port = match &rest[close + 1..] {
                "" => None,
                after => Some(after.strip_prefix(':')?),
            };
            (&raw[..close + 2], port)
        }
        None => match raw.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        },
    };
    if let Some(p) = port {
        if !p.bytes().all(reg_name_byte) {
            return None;
        }
    }
    if !host.starts_with('[') && !host.bytes().all(reg_name_byte) {
        return None;
    }
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port.and_then(|p| p.parse().ok())))
}

/// A byte a registered name may hold (RFC 3986: unreserved and sub-delimiters; percent-encoded
/// names are refused, as `http` refuses them). A table, as `http` and `httparse` keep theirs:
/// every byte of every request's Host goes through it.
fn reg_name_byte(b: u8) -> bool {
    REG_NAME[b as usize]
}

static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        i += 1;
    }
    t
};

/// The request target exactly as the client sent it. For HTTP/1 it is read from the request line
/// (already checked to be exactly three parts), because the parsed URI has dropped a `#fragment`
/// that Vallum must refuse.
fn raw_target(session: &Session) -> bytes::Bytes {
    if let Some(h1) = session.as_downstream().as_http1() {
        let raw = h1.get_headers_raw_bytes();
        let line = super::hygiene::first_line(&raw);
        if let (Some(first), Some(last)) = (
            line.iter().position(|&b| b == b' '),
            line.iter().rposition(|&b| b == b' '),
        ) {
            if last > first + 1 {
                return raw.slice(first + 1..last);
            }
        }
    }
    bytes::Bytes::copy_from_slice(session.req_header().raw_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.set_uri(uri.parse().unwrap());
        if let Some(h) = host {
            r.insert_header("host", h).unwrap();
        }
        r
    }

    fn target() -> Target {
        Target {
            path: "/".into(),
            query: None,
        }
    }

    #[test]
    fn host_is_one_lower_case_name() {
        let a = host(&req("/", Some("App.Example.COM.:8443")), target(), true).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("app.example.com", 8443));
        assert_eq!(a.host_full, "app.example.com:8443");
        let a = host(&req("/", Some("app.example.com")), target(), false).unwrap();
        assert_eq!((a.port, a.host_full.as_str()), (80, "app.example.com"));
        assert_eq!(
            host(&req("/", Some("app.example.com")), target(), true)
                .unwrap()
                .port,
            443
        );
    }

    /// The hand-written split agrees with `http`'s `Authority` on what it accepts (never more)
    /// and on the host and port it finds.
    #[test]
    fn split_authority_agrees_with_http() {
        let inputs = [
            "app.example.com",
            "App.Example.COM.:8443",
            "a:80",
            "a:",
            "a:abc",
            "a:99999",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:443",
            "[fe80::1%25eth0]:8",
            "[::1]x",
            "[::1",
            "::1",
            "a:1:2",
            "a b",
            "a/b",
            "a?b",
            "a#b",
            "a%41",
            "user@a",
            "",
            ".",
            ":80",
            "a\"b",
            "a<b",
            "a{b",
            "ä.example",
            "a;b=c",
            "x_y.example",
            "[]",
            "[v1.x]",
        ];
        for raw in inputs {
            let ours = split_authority(raw);
            let theirs = (!raw.is_empty() && !raw.contains('@'))
                .then(|| raw.parse::<http::uri::Authority>().ok())
                .flatten()
                .and_then(|a| {
                    let host = a.host().trim_end_matches('.').to_ascii_lowercase();
                    (!host.is_empty()).then(|| (host, a.port_u16()))
                });
            match (&ours, &theirs) {
                (Some(o), Some(t)) => assert_eq!(o, t, "{raw:?}"),
                (Some(o), None) => panic!("{raw:?}: accepted as {o:?}, which http refuses"),
                _ => {}
            }
        }
        assert_eq!(
            split_authority("[::1]:8443"),
            Some(("[::1]".to_string(), Some(8443)))
        );
        assert_eq!(
            split_authority("A.b:8080"),
            Some(("a.b".to_string(), Some(8080)))
        );
        assert_eq!(split_authority("a b"), None);
    }

    #[test]
    fn bad_or_conflicting_hosts_are_refused() {
        for bad in [None, Some(""), Some("user@app.example.com"), Some("a b")] {
            assert_eq!(
                host(&req("/", bad), target(), true).err(),
                Some(Refusal::BadHost),
                "{bad:?}"
            );
        }
        let r = req("http://app.example.com/x", Some("evil.example.com"));
        assert_eq!(host(&r, target(), true).err(), Some(Refusal::HostMismatch));
        let r = req("http://app.example.com/x", Some("APP.example.com"));
        assert!(host(&r, target(), true).is_ok());
    }
}
