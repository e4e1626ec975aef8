//! The few primitives sign-in needs: authenticated encryption (XChaCha20-Poly1305) for cookies
//! and hand-offs, HMAC-SHA256 for signed URLs, HKDF to derive purpose-bound keys from the two
//! configured secrets, and constant-time comparison. Keys never appear in `Debug` output.

pub mod private_file;
pub mod signing_key;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// A 32-byte secret.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    pub fn from_bytes(b: [u8; 32]) -> Key {
        Key(b)
    }

    pub fn random() -> Key {
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        Key(b)
    }

    /// Pomerium's format: standard base64 of exactly 32 bytes.
    pub fn from_base64(s: &str) -> Result<Key, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("must decode to 32 bytes, got {} (generate one with `head -c32 /dev/urandom | base64`)", b.len()))?;
        Ok(Key(arr))
    }

    /// A key for one purpose, so a value sealed for one use never opens in another.
    pub fn derive(&self, purpose: &str) -> Key {
        let hk = hkdf::Hkdf::<Sha256>::new(None, &self.0);
        let mut out = [0u8; 32];
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(purpose.as_bytes(), &mut out);
        Key(out)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encrypts and authenticates `plain`, binding it to `ad` (e.g. cookie name and host).
    /// Output: base64url(nonce ‖ ciphertext).
    pub fn seal(&self, plain: &[u8], ad: &[u8]) -> String {
        B64.encode(self.seal_raw(plain, ad))
    }

    /// `seal` without the base64 step, for stores that keep bytes (Redis records).
    pub fn seal_raw(&self, plain: &[u8], ad: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: ad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a value from `seal`; `None` if it was tampered with, truncated, or sealed for other `ad`.
    pub fn open(&self, sealed: &str, ad: &[u8]) -> Option<Vec<u8>> {
        self.open_raw(&B64.decode(sealed.trim()).ok()?, ad)
    }

    /// Opens a value from `seal_raw`.
    pub fn open_raw(&self, raw: &[u8], ad: &[u8]) -> Option<Vec<u8>> {
        if raw.len() < 24 + 16 {
            return None;
        }
        let (nonce, ct) = raw.split_at(24);
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: ad })
            .ok()
    }

    /// base64url(HMAC-SHA256(key, msg)).
    pub fn sign(&self, msg: &[u8]) -> String {
        self.hmac()
            .map(|mut m| {
                m.update(msg);
                B64.encode(m.finalize().into_bytes())
            })
            .unwrap_or_default()
    }

    /// Checks a signature from `sign` in constant time.
    pub fn verify(&self, msg: &[u8], signature: &str) -> bool {
        let (Ok(sig), Some(mut m)) = (B64.decode(signature.trim()), self.hmac()) else {
            return false;
        };
        m.update(msg);
        m.verify_slice(&sig).is_ok()
    }

    /// HMAC takes keys of any length, so this is always `Some`.
    fn hmac(&self) -> Option<Hmac<Sha256>> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).ok()
    }
}

/// `n` random bytes, base64url: session ids, `state`, `nonce`, PKCE verifiers.
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    B64.encode(b)
}

/// A request id: 96 random bits as 16 base64url characters, the shape `random_token(12)` gives,
/// written straight into one string (this runs on every request; the general path allocated
/// twice and went through the base64 engine).
pub fn request_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    let bits = (u128::from(rng.next_u64()) << 32) | u128::from(rng.next_u32());
    let mut id = [0u8; 16];
    for (i, c) in id.iter_mut().enumerate() {
        *c = ALPHABET[((bits >> (90 - 6 * i)) & 63) as usize];
    }
    // The alphabet is ASCII: this cannot fail, and checking 16 bytes costs less than pushing
    // 16 chars one by one.
    std::str::from_utf8(&id).unwrap_or_default().to_owned()
}

/// Constant-time equality for secrets compared as strings.
pub fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_base64url_of_96_bits() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.len(), 16, "{id}");
            // Every character decodes: 16 characters carry exactly 12 bytes.
            assert_eq!(B64.decode(id).map(|b| b.len()).ok(), Some(12), "{id}");
        }
        // All 64 symbols turn up in each position over many ids (no stuck bits).
        for pos in [0, 7, 15] {
            let seen: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[pos]).collect();
            assert_eq!(seen.len(), 64, "position {pos}");
        }
    }

    #[test]
    fn seal_binds_to_key_and_associated_data() {
        let k = Key::random();
        let s = k.seal(b"hello", b"_pomerium|app.example.com");
        assert_eq!(
            k.open(&s, b"_pomerium|app.example.com").as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            k.open(&s, b"_pomerium|other.example.com"),
            None,
            "other host"
        );
        assert_eq!(
            Key::random().open(&s, b"_pomerium|app.example.com"),
            None,
            "other key"
        );
        assert_eq!(
            k.open(&s[..s.len() - 2], b"_pomerium|app.example.com"),
            None,
            "truncated"
        );
        let mut tampered = s.clone().into_bytes();
        tampered[30] = if tampered[30] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            k.open(
                &String::from_utf8(tampered).unwrap(),
                b"_pomerium|app.example.com"
            ),
            None
        );
        assert_ne!(
            k.seal(b"hello", b"x"),
            k.seal(b"hello", b"x"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn signatures() {
        let k = Key::random();
        let sig = k.sign(b"msg");
        assert!(k.verify(b"msg", &sig));
        assert!(!k.verify(b"msg2", &sig));
        assert!(!k.derive("other").verify(b"msg", &sig));
        assert!(!k.verify(b"msg", "not base64!"));
    }

    #[test]
    fn base64_secrets_must_be_32_bytes() {
        assert!(
            Key::from_base64(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).is_ok()
        );
        assert!(
            Key::from_base64(&base64::engine::general_purpose::STANDARD.encode([7u8; 16]))
                .unwrap_err()
                .contains("32 bytes")
        );
        assert!(Key::from_base64("***").is_err());
    }
}
