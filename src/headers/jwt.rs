//! The identity assertion for upstreams (`X-Pomerium-Jwt-Assertion`): a JWT with Pomerium's
//! claims, signed with the snapshot's `SigningKey`, and its public JWKS.
//!
//! Signing costs tens of microseconds, so an assertion is cached per (session, audience) and
//! re-signed when less than a minute of its five-minute life is left. A cached assertion is
//! reused for several requests, so its `jti` identifies the assertion, not the request.

use crate::crypto::signing_key::SigningKey;
use dashmap::DashMap;
use http::HeaderValue;
use serde_json::{json, Map, Value};

/// Lifetime of an assertion (Pomerium's).
pub const TTL_SECS: u64 = 300;
/// Re-sign when less than this is left.
const RESIGN_BEFORE_SECS: u64 = 60;

/// A signing key with the assertions it has signed and may hand out again. One per config
/// snapshot (it lives in the snapshot, not in the config).
pub struct Signer {
    key: SigningKey,
    /// Session id → its assertions, one per audience (a session visits few hosts). Keyed by
    /// the session alone so the hot path looks up with the `&str` it has, allocating nothing;
    /// the value is a `HeaderValue` so each request's copy is a reference count. Session ids
    /// are Vallum's own random ids, not an attacker's choice, so the fast hasher is enough.
    cache: DashMap<Box<str>, Vec<Cached>, foldhash::fast::RandomState>,
}

struct Cached {
    audience: Box<str>,
    variant: u64,
    jwt: HeaderValue,
    exp: u64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.key.kid())
            .finish()
    }
}

impl Signer {
    pub fn new(key: SigningKey) -> Signer {
        Signer {
            key,
            cache: DashMap::default(),
        }
    }

    /// `{"keys": [...]}` for `/.well-known/pomerium/jwks.json`.
    pub fn jwks(&self) -> Value {
        self.key.jwks()
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// The assertion for this session and audience, from the cache while it has life left.
    /// `variant` tells apart assertions for one audience with different claims (a route's
    /// groups filter; 0: none).
    pub fn assertion(
        &self,
        session_id: &str,
        audience: &str,
        variant: u64,
        now: u64,
        claims: impl FnOnce() -> Map<String, Value>,
    ) -> HeaderValue {
        if let Some(hit) = self.cache.get(session_id) {
            if let Some(c) = hit
                .iter()
                .find(|c| &*c.audience == audience && c.variant == variant)
            {
                if c.exp > now + RESIGN_BEFORE_SECS {
                    return c.jwt.clone();
                }
            }
        }
        let exp = now + TTL_SECS;
        let mut c = claims();
        c.insert("iat".into(), json!(now));
        c.insert("exp".into(), json!(exp));
        c.insert("jti".into(), json!(crate::crypto::random_token(16)));
        let jwt = self.key.sign(&Value::Object(c));
        // A JWT is base64url and dots: always a valid header value.
        let jwt = HeaderValue::from_str(&jwt).unwrap_or_else(|_| HeaderValue::from_static(""));
        if self.cache.len() > 100_000 {
            self.cache.retain(|_, v| {
                v.retain(|c| c.exp > now);
                !v.is_empty()
            });
            // Still full of live entries: start over rather than scan it again on the next
            // signature (the cache only saves signing; a miss re-signs).
            if self.cache.len() > 100_000 {
                self.cache.clear();
            }
        }
        let mut entry = self.cache.entry(session_id.into()).or_default();
        entry.retain(|c| (&*c.audience != audience || c.variant != variant) && c.exp > now);
        entry.push(Cached {
            audience: audience.into(),
            variant,
            jwt: jwt.clone(),
            exp,
        });
        jwt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;
    use base64::Engine;
    use jsonwebtoken::Algorithm;
    use p256::pkcs8::EncodePrivateKey;

    impl Signer {
        fn derived(k: &Key) -> Result<Signer, String> {
            SigningKey::derived(k).map(Signer::new)
        }
        fn from_pem(pem: &str) -> Result<Signer, String> {
            SigningKey::from_pem(pem).map(Signer::new)
        }
    }

    #[test]
    fn derived_keys_are_deterministic_and_verify() {
        let secret = Key::random();
        let a = Signer::derived(&secret).unwrap();
        let b = Signer::derived(&secret).unwrap();
        assert_eq!(a.jwks(), b.jwks(), "every node derives the same key");
        assert_ne!(a.jwks(), Signer::derived(&Key::random()).unwrap().jwks());

        let jwt = a.assertion("sid", "app.example.com", 0, 1_000, || {
            let mut m = Map::new();
            m.insert("aud".into(), json!("app.example.com"));
            m.insert("sub".into(), json!("alice"));
            m
        });
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(a.jwks()["keys"][0].clone()).unwrap();
        let dk = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.set_audience(&["app.example.com"]);
        v.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(jwt.to_str().unwrap(), &dk, &v).unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.header.kid.as_deref(), Some(a.kid()));
        assert_eq!(data.claims["exp"], 1_300);
    }

    #[test]
    fn cache_reuses_then_resigns_before_expiry() {
        let s = Signer::derived(&Key::random()).unwrap();
        let mk = || Map::new();
        let first = s.assertion("sid", "aud", 0, 1_000, mk);
        assert_eq!(s.assertion("sid", "aud", 0, 1_100, mk), first, "cached");
        let other = s.assertion("sid", "other", 0, 1_100, mk);
        assert_ne!(other, first, "per audience");
        assert_eq!(
            s.assertion("sid", "aud", 0, 1_100, mk),
            first,
            "a second audience does not evict the first"
        );
        assert_eq!(s.assertion("sid", "other", 0, 1_100, mk), other);
        assert_ne!(
            s.assertion("sid2", "aud", 0, 1_100, mk),
            first,
            "per session"
        );
        let filtered = s.assertion("sid", "aud", 7, 1_100, mk);
        assert_ne!(filtered, first, "per groups filter");
        assert_eq!(s.assertion("sid", "aud", 0, 1_100, mk), first, "both kept");
        assert_ne!(
            s.assertion("sid", "aud", 0, 1_000 + TTL_SECS - 30, mk),
            first,
            "re-signed ahead of expiry"
        );
    }

    #[test]
    fn pem_keys() {
        let sk = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let pem = sk.to_pkcs8_pem(Default::default()).unwrap().to_string();
        assert!(Signer::from_pem(&pem).is_ok());
        assert!(
            Signer::from_pem(&base64::engine::general_purpose::STANDARD.encode(&pem)).is_ok(),
            "base64 PEM"
        );
        assert!(Signer::from_pem(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----"
        )
        .is_err());
        assert!(Signer::from_pem("garbage").is_err());
    }

    /// RSA keys (PKCS#1 and PKCS#8, made by openssl) sign RS256, and the JWKS verifies them.
    #[test]
    fn rsa_signing_keys() {
        for args in [
            &["genrsa", "2048"][..],
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ][..],
        ] {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl is installed");
            let pem = String::from_utf8(out.stdout).unwrap();
            let s = Signer::from_pem(&pem).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let jwt = s.assertion("sid", "aud", 0, 1_000, Map::new);
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(s.jwks()["keys"][0].clone()).unwrap();
            let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
            v.validate_exp = false;
            v.validate_aud = false;
            let dk = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
            assert!(
                jsonwebtoken::decode::<Value>(jwt.to_str().unwrap(), &dk, &v).is_ok(),
                "{args:?}"
            );
            assert_eq!(
                jsonwebtoken::decode_header(jwt.to_str().unwrap())
                    .unwrap()
                    .alg,
                Algorithm::RS256
            );
        }
    }
}
