//! The identity assertion for upstreams (`X-Pomerium-Jwt-Assertion`): an ES256 JWT with
//! Pomerium's claims, signed with `signing_key` or a P-256 key derived from `shared_secret` (so
//! every node signs with the same key without distributing one), and its public JWKS.
//!
//! Signing costs tens of microseconds, so an assertion is cached per (session, audience) and
//! re-signed when less than a minute of its five-minute life is left. A cached assertion is
//! reused for several requests, so its `jti` identifies the assertion, not the request.

use crate::crypto::Key;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use dashmap::DashMap;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Lifetime of an assertion (Pomerium's).
pub const TTL_SECS: u64 = 300;
/// Re-sign when less than this is left.
const RESIGN_BEFORE_SECS: u64 = 60;

pub struct Signer {
    key: EncodingKey,
    /// ES256, or RS256 for an RSA `signing_key`.
    alg: Algorithm,
    kid: String,
    jwk: Value,
    /// Session id → its assertions, one per audience (a session visits few hosts). Keyed by
    /// the session alone so the hot path looks up with the `&str` it has, allocating nothing;
    /// the value is a `HeaderValue` so each request's copy is a reference count.
    cache: DashMap<Box<str>, Vec<Cached>>,
}

struct Cached {
    audience: Box<str>,
    jwt: HeaderValue,
    exp: u64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    /// From a PEM (PKCS#8 or SEC1) EC P-256 private key, raw or base64-encoded.
    pub fn from_pem(text: &str) -> Result<Signer, String> {
        let pem = if text.trim_start().starts_with("-----BEGIN") {
            text.to_string()
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.split_whitespace().collect::<String>())
                .map_err(|e| format!("neither PEM nor base64 PEM: {e}"))?;
            String::from_utf8(bytes).map_err(|_| "base64 does not hold PEM text".to_string())?
        };
        if let Some(rsa) = rsa_public(&pem) {
            let key = EncodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|e| format!("not a usable RSA key: {e}"))?;
            let (n, e) = rsa;
            let kid = hex(&Sha256::digest([n.as_slice(), e.as_slice()].concat()))[..16].to_string();
            let jwk = json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": B64.encode(&n), "e": B64.encode(&e)});
            return Ok(Signer {
                key,
                alg: Algorithm::RS256,
                kid,
                jwk,
                cache: DashMap::new(),
            });
        }
        let sk = p256::SecretKey::from_pkcs8_pem(&pem)
            .or_else(|_| p256::SecretKey::from_sec1_pem(&pem))
            .map_err(|_| "not an EC P-256 private key in PEM".to_string())?;
        Self::from_secret(&sk)
    }

    /// Deterministic P-256 key from `shared_secret`: every node with the same secret signs alike.
    pub fn derived(shared: &Key) -> Result<Signer, String> {
        let mut seed = shared
            .derive("vallum derived jwt signing key")
            .bytes()
            .to_vec();
        // A 32-byte string is a valid scalar with overwhelming probability; re-derive if not.
        for _ in 0..8 {
            if let Ok(sk) = p256::SecretKey::from_slice(&seed) {
                return Self::from_secret(&sk);
            }
            seed = Sha256::digest(&seed).to_vec();
        }
        Err("cannot derive a signing key".into())
    }

    fn from_secret(sk: &p256::SecretKey) -> Result<Signer, String> {
        let der = sk.to_pkcs8_der().map_err(|e| e.to_string())?;
        let key = EncodingKey::from_ec_der(der.as_bytes());
        let point = sk.public_key().to_encoded_point(false);
        let (x, y) = (
            point.x().map(|v| v.to_vec()).unwrap_or_default(),
            point.y().map(|v| v.to_vec()).unwrap_or_default(),
        );
        let kid = hex(&Sha256::digest(point.as_bytes()))[..16].to_string();
        let jwk = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid, "x": B64.encode(x), "y": B64.encode(y)});
        Ok(Signer {
            key,
            alg: Algorithm::ES256,
            kid,
            jwk,
            cache: DashMap::new(),
        })
    }

    /// `{"keys": [...]}` for `/.well-known/pomerium/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs arbitrary claims (no cache): for the built-in development identity provider.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap_or_default()
    }

    /// The assertion for this session and audience, from the cache while it has life left.
    pub fn assertion(
        &self,
        session_id: &str,
        audience: &str,
        now: u64,
        claims: impl FnOnce() -> Map<String, Value>,
    ) -> HeaderValue {
        if let Some(hit) = self.cache.get(session_id) {
            if let Some(c) = hit.iter().find(|c| &*c.audience == audience) {
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
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let jwt = jsonwebtoken::encode(&header, &Value::Object(c), &self.key).unwrap_or_default();
        // A JWT is base64url and dots: always a valid header value.
        let jwt = HeaderValue::from_str(&jwt).unwrap_or_else(|_| HeaderValue::from_static(""));
        if self.cache.len() > 100_000 {
            self.cache.retain(|_, v| {
                v.retain(|c| c.exp > now);
                !v.is_empty()
            });
        }
        let mut entry = self.cache.entry(session_id.into()).or_default();
        entry.retain(|c| &*c.audience != audience && c.exp > now);
        entry.push(Cached {
            audience: audience.into(),
            jwt: jwt.clone(),
            exp,
        });
        jwt
    }
}

/// Modulus and exponent of an RSA private key in PEM (PKCS#1 `RSA PRIVATE KEY`, or PKCS#8
/// `PRIVATE KEY` holding one); `None` for anything else.
fn rsa_public(pem: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let (label, der) = pem_decode(pem)?;
    let pkcs1 = match label.as_str() {
        "RSA PRIVATE KEY" => der,
        "PRIVATE KEY" => {
            // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, OCTET STRING privateKey }
            let (body, _) = der_tlv(&der, 0x30)?;
            let (_, rest) = der_tlv(body, 0x02)?;
            let (alg, rest) = der_tlv(rest, 0x30)?;
            // rsaEncryption OID 1.2.840.113549.1.1.1
            if !alg
                .windows(9)
                .any(|w| w == [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01])
            {
                return None;
            }
            der_tlv(rest, 0x04)?.0.to_vec()
        }
        _ => return None,
    };
    // RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, … }
    let (body, _) = der_tlv(&pkcs1, 0x30)?;
    let (_, rest) = der_tlv(body, 0x02)?;
    let (n, rest) = der_tlv(rest, 0x02)?;
    let (e, _) = der_tlv(rest, 0x02)?;
    let strip = |v: &[u8]| {
        v.iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    Some((strip(n), strip(e)))
}

/// One DER TLV with the expected tag: (value, rest).
fn der_tlv(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *b.first()? != tag {
        return None;
    }
    let first = *b.get(1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = start.checked_add(len)?;
    Some((b.get(start..end)?, b.get(end..)?))
}

fn pem_decode(pem: &str) -> Option<(String, Vec<u8>)> {
    let begin = pem.find("-----BEGIN ")?;
    let rest = pem.get(begin + 11..)?;
    let label_end = rest.find("-----")?;
    let label = rest.get(..label_end)?.to_string();
    let end = rest.find("-----END ")?;
    let b64: String = rest.get(label_end + 5..end)?.split_whitespace().collect();
    Some((
        label,
        base64::engine::general_purpose::STANDARD.decode(b64).ok()?,
    ))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_deterministic_and_verify() {
        let secret = Key::random();
        let a = Signer::derived(&secret).unwrap();
        let b = Signer::derived(&secret).unwrap();
        assert_eq!(a.jwks(), b.jwks(), "every node derives the same key");
        assert_ne!(a.jwks(), Signer::derived(&Key::random()).unwrap().jwks());

        let jwt = a.assertion("sid", "app.example.com", 1_000, || {
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
        let first = s.assertion("sid", "aud", 1_000, mk);
        assert_eq!(s.assertion("sid", "aud", 1_100, mk), first, "cached");
        let other = s.assertion("sid", "other", 1_100, mk);
        assert_ne!(other, first, "per audience");
        assert_eq!(
            s.assertion("sid", "aud", 1_100, mk),
            first,
            "a second audience does not evict the first"
        );
        assert_eq!(s.assertion("sid", "other", 1_100, mk), other);
        assert_ne!(s.assertion("sid2", "aud", 1_100, mk), first, "per session");
        assert_ne!(
            s.assertion("sid", "aud", 1_000 + TTL_SECS - 30, mk),
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
            let jwt = s.assertion("sid", "aud", 1_000, Map::new);
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
