//! Signed URLs between the proxy and the authenticate service (Pomerium's model): every hop that
//! carries a redirect target is HMAC-signed with the shared secret over the endpoint, the target
//! and a validity window, so nothing in a query string can send a user to a site Vallum did not
//! choose.

use crate::crypto::Key;
use url::Url;

/// How long a signed URL is valid, and the clock skew tolerated around it.
pub const VALIDITY_SECS: u64 = 300;
pub const LEEWAY_SECS: u64 = 60;

fn message(endpoint: &str, target: &str, issued: u64, expiry: u64) -> Vec<u8> {
    format!("{endpoint}\n{target}\n{issued}\n{expiry}").into_bytes()
}

fn key(shared: &Key) -> Key {
    shared.derive("vallum signed url")
}

/// `base` + `path` with `pomerium_redirect_uri=target` and its signature.
pub fn sign(
    shared: &Key,
    base: &Url,
    path: &str,
    target: &str,
    extra: &[(&str, &str)],
    now: u64,
) -> Url {
    let mut url = base.clone();
    url.set_path(path);
    url.set_query(None);
    let expiry = now + VALIDITY_SECS;
    let sig = key(shared).sign(&message(path, target, now, expiry));
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("pomerium_redirect_uri", target);
        for (k, v) in extra {
            q.append_pair(k, v);
        }
        q.append_pair("pomerium_issued", &now.to_string())
            .append_pair("pomerium_expiry", &expiry.to_string())
            .append_pair("pomerium_signature", &sig);
    }
    url
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignedUrlError {
    #[error("the link is not signed")]
    Missing,
    #[error("the link's signature is invalid")]
    BadSignature,
    #[error("the link has expired; start again from the application")]
    Expired,
}

/// Verifies a signed request to `path`; returns the target.
pub fn verify(
    shared: &Key,
    path: &str,
    query: &[(String, String)],
    now: u64,
) -> Result<String, SignedUrlError> {
    // Each signed parameter exactly once: with two, the signature check and the code that
    // acts on the target could read different ones.
    let get = |k: &str| {
        let mut it = query
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str());
        match (it.next(), it.next()) {
            (Some(v), None) => Some(v),
            _ => None,
        }
    };
    let (Some(target), Some(issued), Some(expiry), Some(sig)) = (
        get("pomerium_redirect_uri"),
        get("pomerium_issued").and_then(|v| v.parse::<u64>().ok()),
        get("pomerium_expiry").and_then(|v| v.parse::<u64>().ok()),
        get("pomerium_signature"),
    ) else {
        return Err(SignedUrlError::Missing);
    };
    if !key(shared).verify(&message(path, target, issued, expiry), sig) {
        return Err(SignedUrlError::BadSignature);
    }
    if now + LEEWAY_SECS < issued || now > expiry + LEEWAY_SECS {
        return Err(SignedUrlError::Expired);
    }
    Ok(target.to_string())
}

/// A redirect target Vallum will send a browser to: absolute http(s), a host, no user info.
pub fn safe_target(target: &str) -> Option<Url> {
    if target.len() > super::MAX_REDIRECT_LEN {
        return None;
    }
    let u = Url::parse(target).ok()?;
    let ok = matches!(u.scheme(), "http" | "https")
        && u.host_str().is_some_and(|h| !h.is_empty())
        && u.username().is_empty()
        && u.password().is_none();
    ok.then_some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(u: &Url) -> Vec<(String, String)> {
        u.query_pairs().into_owned().collect()
    }

    #[test]
    fn round_trip_and_tampering() {
        let k = Key::random();
        let base = Url::parse("https://authenticate.example.com").unwrap();
        let u = sign(
            &k,
            &base,
            "/.pomerium/sign_in",
            "https://app.example.com/x?y=1",
            &[],
            1000,
        );
        assert_eq!(
            verify(&k, "/.pomerium/sign_in", &q(&u), 1000).as_deref(),
            Ok("https://app.example.com/x?y=1")
        );
        assert_eq!(
            verify(&k, "/.pomerium/sign_out", &q(&u), 1000),
            Err(SignedUrlError::BadSignature),
            "bound to the endpoint"
        );
        assert_eq!(
            verify(&Key::random(), "/.pomerium/sign_in", &q(&u), 1000),
            Err(SignedUrlError::BadSignature)
        );
        assert_eq!(
            verify(
                &k,
                "/.pomerium/sign_in",
                &q(&u),
                1000 + VALIDITY_SECS + LEEWAY_SECS + 1
            ),
            Err(SignedUrlError::Expired)
        );
        assert_eq!(
            verify(
                &k,
                "/.pomerium/sign_in",
                &q(&u),
                1000 + VALIDITY_SECS + LEEWAY_SECS
            ),
            Ok("https://app.example.com/x?y=1".into())
        );
        let mut tampered = q(&u);
        tampered[0].1 = "https://evil.example/".into();
        assert_eq!(
            verify(&k, "/.pomerium/sign_in", &tampered, 1000),
            Err(SignedUrlError::BadSignature)
        );
        assert_eq!(
            verify(&k, "/.pomerium/sign_in", &[], 1000),
            Err(SignedUrlError::Missing)
        );
    }

    #[test]
    fn unsafe_targets() {
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "javascript:alert(1)",
            "https://user@evil.com/",
            "/relative",
            "data:text/html,x",
        ] {
            assert!(safe_target(bad).is_none(), "{bad}");
        }
        assert!(safe_target("https://app.example.com/a?b").is_some());
    }
}
