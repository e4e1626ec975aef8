//! One path truth: the request target is parsed and normalised once, and that single result is
//! what routing matches, what policy will see, and what goes upstream. Proxies whose router and
//! upstream disagree about a path (`/public/..%2Fadmin`) are the classic identity-proxy bypass.

use crate::config::settings::EscapedSlashes;

/// A normalised origin-form target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Normalised path, always starting with `/`, never containing a query.
    pub path: String,
    /// Query string without `?`, exactly as received.
    pub query: Option<String>,
}

/// Why a request target was refused (each becomes a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target is not a path")]
    NotOriginForm,
    #[error("the request target contains a fragment")]
    Fragment,
    #[error("the request target contains a control character, space or non-ASCII byte")]
    InvalidByte,
    #[error("the path contains an encoded slash or backslash")]
    EncodedSlash,
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    #[error("the path contains an encoded '#'")]
    EncodedFragment,
    #[error("the path contains a backslash")]
    Backslash,
}

/// Outcome of normalisation, with a redirect when `unescape_and_redirect` asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalized {
    Ok(Target),
    /// Redirect the client to this target (path + query).
    Redirect(String),
}

#[derive(Debug, Clone, Copy)]
pub struct PathRules {
    pub escaped_slashes: EscapedSlashes,
    pub normalize: bool,
    pub merge_slashes: bool,
}

impl Default for PathRules {
    fn default() -> Self {
        Self {
            escaped_slashes: EscapedSlashes::RejectRequest,
            normalize: true,
            merge_slashes: true,
        }
    }
}

/// Parses and normalises a raw request target (`/a/./b%41?x=1`). Absolute-form targets
/// (`http://host/path`) are reduced to their path; the host is checked by the caller.
pub fn normalize(raw: &[u8], rules: PathRules) -> Result<Normalized, PathError> {
    if raw.iter().any(|&b| b <= 0x20 || b >= 0x7f) {
        return Err(PathError::InvalidByte);
    }
    if raw.contains(&b'#') {
        return Err(PathError::Fragment);
    }
    let raw = std::str::from_utf8(raw).map_err(|_| PathError::InvalidByte)?;
    let origin = if raw.starts_with('/') {
        raw
    } else if let Some(rest) = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
    {
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes().get(i) == Some(&b'/') => &rest[i..],
            Some(i) => return normalize(format!("/{}", &rest[i..]).as_bytes(), rules),
            None => "/",
        }
    } else {
        return Err(PathError::NotOriginForm);
    };
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (origin, None),
    };
    // WHATWG URL parsers (Node's `new URL`, most JavaScript frameworks, IIS) read `\` as `/`:
    // `/docs/..\admin` would pass a `/docs/` rule here and reach `/admin` there.
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if is_clean(path) {
        // The common case: nothing to decode, merge or resolve.
        return Ok(Normalized::Ok(Target {
            path: path.to_string(),
            query,
        }));
    }

    // `%23` decoded by an upstream becomes a fragment delimiter, and an encoded control byte
    // (`%00` above all) truncates or splits paths in C and CGI upstreams: what Vallum routed and
    // what the upstream acts on would differ.
    for w in path.as_bytes().windows(3).filter(|w| w[0] == b'%') {
        let hex = std::str::from_utf8(&w[1..]).ok();
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b'#') => return Err(PathError::EncodedFragment),
            Some(b) if b < 0x20 || b == 0x7f => return Err(PathError::InvalidByte),
            _ => {}
        }
    }
    let has_encoded_slash = contains_encoded_slash(path);
    let mut redirect = false;
    let decoded_slashes;
    let path = if has_encoded_slash {
        match rules.escaped_slashes {
            EscapedSlashes::RejectRequest => return Err(PathError::EncodedSlash),
            EscapedSlashes::KeepUnchanged => path,
            EscapedSlashes::UnescapeAndForward | EscapedSlashes::UnescapeAndRedirect => {
                redirect = rules.escaped_slashes == EscapedSlashes::UnescapeAndRedirect;
                decoded_slashes = unescape_slashes(path);
                decoded_slashes.as_str()
            }
        }
    } else {
        path
    };

    let mut out = if rules.normalize {
        let decoded = decode_unreserved(path)?;
        let merged = if rules.merge_slashes {
            merge_slashes(&decoded)
        } else {
            decoded
        };
        remove_dot_segments(&merged)
    } else if rules.merge_slashes {
        merge_slashes(path)
    } else {
        path.to_string()
    };
    if out.is_empty() {
        out.push('/');
    }
    if redirect {
        let mut loc = out;
        if let Some(q) = &query {
            loc.push('?');
            loc.push_str(q);
        }
        return Ok(Normalized::Redirect(loc));
    }
    Ok(Normalized::Ok(Target { path: out, query }))
}

/// No escapes, no empty segments, no dot segments: normalisation would be the identity.
fn is_clean(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut prev = 0u8;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'%' => return false,
            b'/' if prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // `/.` starts a dot segment only when followed by `/`, `.` + (`/` or end), or end.
                let rest = b.get(i + 1..).unwrap_or(&[]);
                if rest.is_empty()
                    || rest[0] == b'/'
                    || (rest[0] == b'.' && (rest.len() == 1 || rest[1] == b'/'))
                {
                    return false;
                }
            }
            _ => {}
        }
        prev = c;
    }
    true
}

fn contains_encoded_slash(path: &str) -> bool {
    let b = path.as_bytes();
    b.windows(3).any(|w| {
        w[0] == b'%'
            && ((w[1] == b'2' && (w[2] == b'f' || w[2] == b'F'))
                || (w[1] == b'5' && (w[2] == b'c' || w[2] == b'C')))
    })
}

fn unescape_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    let b = path.as_bytes();
    while i < b.len() {
        let w = b.get(i..i + 3);
        match w {
            Some([b'%', b'2', b'f' | b'F']) => {
                out.push('/');
                i += 3;
            }
            Some([b'%', b'5', b'c' | b'C']) => {
                out.push('\\');
                i += 3;
            }
            _ => {
                out.push(b[i] as char);
                i += 1;
            }
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §6.2.2: decode escapes of unreserved characters (so `/%61dmin` is `/admin` to the
/// router and the policy alike) and upper-case the hex of every other escape.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let c = h * 16 + l;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
            }
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    Ok(out)
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut prev_slash = false;
    for c in path.chars() {
        if c == '/' && prev_slash {
            continue;
        }
        prev_slash = c == '/';
        out.push(c);
    }
    out
}

/// RFC 3986 §5.2.4, on an absolute path; `..` never climbs above the root.
fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                stack.pop();
                trailing_slash = i == last;
            }
            s => {
                stack.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<Normalized, PathError> {
        normalize(s.as_bytes(), PathRules::default())
    }
    fn path(s: &str) -> String {
        match norm(s) {
            Ok(Normalized::Ok(t)) => t.path,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(path("/a/./b/../c"), "/a/c");
        assert_eq!(path("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(path("/a//b///c"), "/a/b/c");
        assert_eq!(path("/a/b/.."), "/a/");
        assert_eq!(path("/a/."), "/a/");
        assert_eq!(path("/"), "/");
        assert_eq!(path("/%2e%2e/admin"), "/admin");
        assert_eq!(path("/public/%2E%2E/admin"), "/admin");
        assert_eq!(path("/%61dmin"), "/admin");
        assert_eq!(path("/a%3fb"), "/a%3Fb");
    }

    #[test]
    fn clean_paths_take_the_fast_path_unchanged() {
        for p in [
            "/",
            "/a/b.c",
            "/.well-known/x",
            "/a/..b",
            "/a/.b/",
            "/a.",
            "/...",
        ] {
            assert!(is_clean(p), "{p}");
            assert_eq!(path(p), p);
        }
        for p in ["/a/.", "/a/..", "/a/./b", "/a/../b", "//a", "/a%41"] {
            assert!(!is_clean(p), "{p}");
        }
    }

    #[test]
    fn query_is_kept_apart() {
        match norm("/a/../b?x=/../y&z=%2F") {
            Ok(Normalized::Ok(t)) => {
                assert_eq!(t.path, "/b");
                assert_eq!(t.query.as_deref(), Some("x=/../y&z=%2F"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(norm("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(norm("/a%5cb"), Err(PathError::EncodedSlash));
        assert_eq!(norm("/docs/..\\admin"), Err(PathError::Backslash));
        assert_eq!(norm("/a\\b"), Err(PathError::Backslash));
        assert!(
            norm("/a?q=\\").is_ok(),
            "a backslash in the query is the app's business"
        );
        assert_eq!(norm("/a#b"), Err(PathError::Fragment));
        assert_eq!(norm("/a%23b"), Err(PathError::EncodedFragment));
        assert_eq!(norm("/a%00b"), Err(PathError::InvalidByte));
        assert_eq!(norm("/a%0Db"), Err(PathError::InvalidByte));
        assert_eq!(norm("/a%7fb"), Err(PathError::InvalidByte));
        assert_eq!(norm("/a b"), Err(PathError::InvalidByte));
        assert_eq!(norm("/a\x00b"), Err(PathError::InvalidByte));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("*"), Err(PathError::NotOriginForm));
    }

    #[test]
    fn escaped_slash_actions() {
        let r = |a| PathRules {
            escaped_slashes: a,
            ..PathRules::default()
        };
        assert_eq!(
            normalize(b"/a%2F..%2Fb?q", r(EscapedSlashes::UnescapeAndRedirect)),
            Ok(Normalized::Redirect("/b?q".into()))
        );
        match normalize(b"/a%2fb", r(EscapedSlashes::UnescapeAndForward)) {
            Ok(Normalized::Ok(t)) => assert_eq!(t.path, "/a/b"),
            other => panic!("{other:?}"),
        }
        match normalize(b"/a%2fb", r(EscapedSlashes::KeepUnchanged)) {
            Ok(Normalized::Ok(t)) => assert_eq!(t.path, "/a%2Fb"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absolute_form_reduces_to_path() {
        assert_eq!(path("http://example.com/a/../b"), "/b");
        assert_eq!(path("https://example.com"), "/");
    }
}
