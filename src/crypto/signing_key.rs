//! The key that signs identity assertions: a `signing_key` PEM (EC P-256 or RSA), or a P-256 key
//! derived from `shared_secret`, so every node with the same secret signs alike without one
//! being distributed. Key material only; the assertion cache is `headers::jwt::Signer`'s.

use super::Key;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Clone)]
pub struct SigningKey {
    key: EncodingKey,
    /// ES256, or RS256 for an RSA `signing_key`.
    alg: Algorithm,
    kid: String,
    jwk: Value,
}

/// Only the key id: the private key never reaches a log line.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKey {
    /// From a PEM (PKCS#8 or SEC1) EC P-256 private key, raw or base64-encoded.
    pub fn from_pem(text: &str) -> Result<SigningKey, String> {
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
            return Ok(SigningKey {
                key,
                alg: Algorithm::RS256,
                kid,
                jwk,
            });
        }
        let sk = p256::SecretKey::from_pkcs8_pem(&pem)
            .or_else(|_| p256::SecretKey::from_sec1_pem(&pem))
            .map_err(|_| "not an EC P-256 private key in PEM".to_string())?;
        Self::from_secret(&sk)
    }

    /// Deterministic P-256 key from `shared_secret`: every node with the same secret signs alike.
    pub fn derived(shared: &Key) -> Result<SigningKey, String> {
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

    fn from_secret(sk: &p256::SecretKey) -> Result<SigningKey, String> {
        let der = sk.to_pkcs8_der().map_err(|e| e.to_string())?;
        let key = EncodingKey::from_ec_der(der.as_bytes());
        let point = sk.public_key().to_encoded_point(false);
        let (x, y) = (
            point.x().map(|v| v.to_vec()).unwrap_or_default(),
            point.y().map(|v| v.to_vec()).unwrap_or_default(),
        );
        let kid = hex(&Sha256::digest(point.as_bytes()))[..16].to_string();
        let jwk = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid, "x": B64.encode(x), "y": B64.encode(y)});
        Ok(SigningKey {
            key,
            alg: Algorithm::ES256,
            kid,
            jwk,
        })
    }

    /// `{"keys": [...]}` for `/.well-known/pomerium/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Signs `claims` as a JWT with this key's algorithm and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap_or_default()
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
