//! The session cookie: a sealed handle `{session id, expiry}` bound by AEAD to the cookie name and
//! the host it was set for, so a cookie copied to another host, edited, truncated or kept past its
//! expiry opens as nothing.

use crate::config::auth::CookieSettings;
use crate::crypto::Key;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub sid: String,
    pub exp: u64,
}

fn ad(name: &str, host: &str) -> Vec<u8> {
    format!("vallum-session|{name}|{host}").into_bytes()
}

pub fn seal(key: &Key, name: &str, host: &str, handle: &Handle) -> String {
    key.seal(
        &serde_json::to_vec(handle).unwrap_or_default(),
        &ad(name, host),
    )
}

/// Opens a handle sealed for this cookie name and host; `None` for anything else or if expired.
pub fn open(key: &Key, name: &str, host: &str, value: &str, now: u64) -> Option<Handle> {
    let plain = key.open(value, &ad(name, host))?;
    let h: Handle = serde_json::from_slice(&plain).ok()?;
    (h.exp > now).then_some(h)
}

/// Cookies this key has already opened: the AEAD open (base64, ChaCha20-Poly1305, JSON) is most
/// of what a signed-in request costs beyond a public one, and a browser sends the same cookie on
/// every request. An entry is the exact cookie value with the name and host it opened for, so a
/// hit proves what a fresh open would; expiry is checked on every hit. Lives in the config
/// snapshot, so a new `cookie_secret` starts empty. A store lookup still follows every hit:
/// sign-out and revocation take effect as before.
#[derive(Default)]
pub struct OpenedCookies(DashMap<Box<str>, Opened, Fast>);

/// Only cookies that opened become keys (values sealed by this key, not an attacker's choice),
/// so the fast hasher is enough here.
type Fast = foldhash::fast::RandomState;

struct Opened {
    name: Box<str>,
    host: Box<str>,
    handle: Handle,
}

/// Bound on remembered cookies; past it, expired entries go, and if that is not enough, all.
const MAX_OPENED: usize = 100_000;

impl std::fmt::Debug for OpenedCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenedCookies({})", self.0.len())
    }
}

impl OpenedCookies {
    /// [`open`], remembering what opened.
    pub fn open(&self, key: &Key, name: &str, host: &str, value: &str, now: u64) -> Option<Handle> {
        if let Some(hit) = self.0.get(value) {
            if &*hit.name == name && &*hit.host == host {
                return (hit.handle.exp > now).then(|| hit.handle.clone());
            }
        }
        let handle = open(key, name, host, value, now)?;
        if self.0.len() >= MAX_OPENED {
            self.0.retain(|_, o| o.handle.exp > now);
            if self.0.len() >= MAX_OPENED {
                self.0.clear();
            }
        }
        self.0.insert(
            value.into(),
            Opened {
                name: name.into(),
                host: host.into(),
                handle: handle.clone(),
            },
        );
        Some(handle)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn find<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').map(str::trim).find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then_some(v.trim())
    })
}

/// Every value of the cookie `name`, in the order sent (a browser sends one per domain and path
/// that matches).
pub fn find_all<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    header.split(';').map(str::trim).filter_map(move |kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then_some(v.trim())
    })
}

/// The `Cookie` header without the cookies in `names` (so the app's own cookies still reach
/// it); `None` when nothing is left.
pub fn strip(header: &str, names: &[impl AsRef<str>]) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|kv| {
            !kv.is_empty()
                && !kv
                    .split_once('=')
                    .is_some_and(|(k, _)| names.iter().any(|n| k.trim() == n.as_ref()))
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// All `Cookie` headers of a request as one value (HTTP/2 clients send one per cookie); the
/// usual single header is borrowed as it is. Read as UTF-8, not as `HeaderValue::to_str`'s
/// visible ASCII: a browser may send another site's non-ASCII cookie beside Vallum's, which
/// must neither hide the session nor keep it from being stripped (and the UTF-8 check is the
/// faster of the two on these long values).
pub fn header(headers: &http::HeaderMap) -> Option<std::borrow::Cow<'_, str>> {
    let all = headers.get_all(http::header::COOKIE);
    let mut values = all
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok());
    let first = values.next()?;
    match values.next() {
        None => Some(std::borrow::Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = format!("{first}; {second}");
            for v in values {
                joined.push_str("; ");
                joined.push_str(v);
            }
            Some(std::borrow::Cow::Owned(joined))
        }
    }
}

/// A `Set-Cookie` value. `max_age` of 0 deletes the cookie.
pub fn set_cookie(
    settings: &CookieSettings,
    name: &str,
    value: &str,
    max_age: u64,
    host_only: bool,
) -> String {
    let mut s = format!("{name}={value}; Path=/; Max-Age={max_age}");
    if !host_only {
        if let Some(d) = &settings.domain {
            s.push_str("; Domain=");
            s.push_str(d);
        }
    }
    if settings.secure || settings.same_site == crate::config::auth::SameSite::None {
        s.push_str("; Secure");
    }
    if settings.http_only {
        s.push_str("; HttpOnly");
    }
    s.push_str("; SameSite=");
    s.push_str(settings.same_site.as_str());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_bound_to_host_name_and_time() {
        let k = Key::random();
        let h = Handle {
            sid: "abc".into(),
            exp: 2000,
        };
        let v = seal(&k, "_pomerium", "app.test", &h);
        assert_eq!(open(&k, "_pomerium", "app.test", &v, 1000), Some(h));
        assert_eq!(open(&k, "_pomerium", "other.test", &v, 1000), None);
        assert_eq!(open(&k, "_other", "app.test", &v, 1000), None);
        assert_eq!(open(&k, "_pomerium", "app.test", &v, 2000), None, "expired");
        assert_eq!(
            open(&k, "_pomerium", "app.test", &v[..10], 1000),
            None,
            "truncated"
        );
    }

    /// The remembered open answers exactly what a fresh open would, hit or miss.
    #[test]
    fn opened_cookies_answer_like_open() {
        let k = Key::random();
        let h = Handle {
            sid: "abc".into(),
            exp: 2000,
        };
        let v = seal(&k, "_pomerium", "app.test", &h);
        let c = OpenedCookies::default();
        for round in 0..2 {
            assert_eq!(
                c.open(&k, "_pomerium", "app.test", &v, 1000),
                Some(h.clone()),
                "round {round}"
            );
            assert_eq!(c.open(&k, "_pomerium", "other.test", &v, 1000), None);
            assert_eq!(c.open(&k, "_other", "app.test", &v, 1000), None);
            assert_eq!(
                c.open(&k, "_pomerium", "app.test", &v, 2000),
                None,
                "expired"
            );
            assert_eq!(c.open(&k, "_pomerium", "app.test", &v[..10], 1000), None);
        }
        assert_eq!(c.len(), 1, "only what opened is remembered");
        // Another key (a new cookie_secret) never opens it; its snapshot has its own cache.
        let fresh = OpenedCookies::default();
        assert_eq!(
            fresh.open(&Key::random(), "_pomerium", "app.test", &v, 1000),
            None
        );
        assert!(fresh.is_empty());
    }

    #[test]
    fn cookie_header_helpers() {
        let h = "a=1; _pomerium=xyz; b=2";
        assert_eq!(find(h, "_pomerium"), Some("xyz"));
        assert_eq!(find(h, "_pomer"), None);
        assert_eq!(strip(h, &["_pomerium"]).as_deref(), Some("a=1; b=2"));
        assert_eq!(strip("_pomerium=x", &["_pomerium"]), None);
        assert_eq!(strip(h, &["a", "b"]).as_deref(), Some("_pomerium=xyz"));
        let mut two = http::HeaderMap::new();
        assert_eq!(header(&two), None);
        two.append(http::header::COOKIE, http::HeaderValue::from_static("a=1"));
        assert!(matches!(
            header(&two),
            Some(std::borrow::Cow::Borrowed("a=1"))
        ));
        two.append(http::header::COOKIE, http::HeaderValue::from_static("b=2"));
        assert_eq!(header(&two).as_deref(), Some("a=1; b=2"));
    }
}
