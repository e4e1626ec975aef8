//! The session cookie: a sealed handle `{session id, expiry}` bound by AEAD to the cookie name and
//! the host it was set for, so a cookie copied to another host, edited, truncated or kept past its
//! expiry opens as nothing.

use crate::config::auth::CookieSettings;
use crate::crypto::Key;
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

/// The value of cookie `name` in a `Cookie` header.
pub fn find<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').map(str::trim).find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then_some(v.trim())
    })
}

/// The `Cookie` header without cookie `name` (so the app's own cookies still reach it);
/// `None` when nothing is left.
pub fn strip(header: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && kv.split_once('=').map(|(k, _)| k.trim()) != Some(name))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
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

    #[test]
    fn cookie_header_helpers() {
        let h = "a=1; _pomerium=xyz; b=2";
        assert_eq!(find(h, "_pomerium"), Some("xyz"));
        assert_eq!(find(h, "_pomer"), None);
        assert_eq!(strip(h, "_pomerium").as_deref(), Some("a=1; b=2"));
        assert_eq!(strip("_pomerium=x", "_pomerium"), None);
    }
}
