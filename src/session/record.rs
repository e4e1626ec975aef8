//! How a session is written into a shared store: versioned, compact and sealed.
//!
//! `v2` (written now): `b"v2:"` ‖ nonce ‖ XChaCha20-Poly1305(MessagePack with field names). Field
//! names cost a few bytes but let a later version add fields with defaults and still read this
//! one, so only an incompatible change needs `v3`. `v1` (the first release: base64 of sealed
//! JSON after `"v1:"`) is still read, so nodes of both versions can share a store during a
//! rolling upgrade. The seal binds the record to the session id, so a record copied to another
//! key opens as nothing.

use super::UserSession;
use crate::crypto::Key;

const V1: &[u8] = b"v1:";
const V2: &[u8] = b"v2:";

fn ad(version: &str, id: &str) -> Vec<u8> {
    format!("{version}|{id}").into_bytes()
}

/// Seals `session` in the current format.
pub fn encode(key: &Key, session: &UserSession) -> Result<Vec<u8>, String> {
    let plain = rmp_serde::to_vec_named(session).map_err(|e| e.to_string())?;
    let mut out = V2.to_vec();
    out.extend_from_slice(&key.seal_raw(&plain, &ad("v2", &session.id)));
    Ok(out)
}

/// Why a stored record could not be used (each is logged once per read and treated as absent).
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    UnknownFormat,
    /// Sealed with another `shared_secret`, tampered with, or moved to another key.
    DoesNotOpen,
    Malformed,
}

/// Opens a record stored under session `id`, in any format this version reads.
pub fn decode(key: &Key, id: &str, raw: &[u8]) -> Result<UserSession, DecodeError> {
    let session: UserSession = if let Some(sealed) = raw.strip_prefix(V2) {
        let plain = key
            .open_raw(sealed, &ad("v2", id))
            .ok_or(DecodeError::DoesNotOpen)?;
        rmp_serde::from_slice(&plain).map_err(|_| DecodeError::Malformed)?
    } else if let Some(sealed) = raw.strip_prefix(V1) {
        let sealed = std::str::from_utf8(sealed).map_err(|_| DecodeError::Malformed)?;
        let plain = key
            .open(sealed, &ad("v1", id))
            .ok_or(DecodeError::DoesNotOpen)?;
        serde_json::from_slice(&plain).map_err(|_| DecodeError::Malformed)?
    } else {
        return Err(DecodeError::UnknownFormat);
    };
    if session.id != id {
        return Err(DecodeError::DoesNotOpen);
    }
    Ok(session)
}

/// A stored session the way every store serves it: decoded, or absent (with a warning) when the
/// record cannot be used — written with another `shared_secret`, by a newer version, or damaged.
pub fn open_session(key: &Key, id: &str, raw: &[u8]) -> Option<std::sync::Arc<UserSession>> {
    match decode(key, id, raw) {
        Ok(s) => Some(std::sync::Arc::new(s)),
        Err(e) => {
            tracing::warn!(session_id = %id, problem = ?e, "a session record cannot be read (written with another shared_secret or by a newer version?); treating it as absent");
            None
        }
    }
}

/// A small record (WebAuthn devices, ceremonies) sealed like sessions and bound to its name, so
/// that write access to the store alone cannot plant one.
pub fn seal_record(key: &Key, name: &str, value: &[u8]) -> Vec<u8> {
    key.seal_raw(value, name.as_bytes())
}

/// The value of a sealed record, or absent (with a warning) when it does not open.
pub fn open_record(key: &Key, name: &str, raw: &[u8]) -> Option<Vec<u8>> {
    let open = key.open_raw(raw, name.as_bytes());
    if open.is_none() {
        tracing::warn!(
            key = name,
            "a record does not open with this shared_secret; treating it as absent"
        );
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::unix_now;

    fn session() -> UserSession {
        let now = unix_now();
        UserSession {
            id: "sid-1".into(),
            user_id: "u1".into(),
            email: Some("alice@example.com".into()),
            name: None,
            groups: vec!["admins".into(), "engineering".into()],
            claims: serde_json::json!({"sub": "u1", "nested": {"a": [1, 2.5, null, true]}})
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into(),
            id_token: "a.b.c".repeat(100),
            access_token: "at".into(),
            refresh_token: None,
            access_expires_at: Some(now + 60),
            issued_at: now,
            expires_at: now + 3600,
            claims_refreshed_at: now,
            idp: String::new(),
            devices: Vec::new(),
        }
    }

    #[test]
    fn round_trips_and_is_smaller_than_v1() {
        let key = Key::random();
        let s = session();
        let v2 = encode(&key, &s).unwrap();
        assert_eq!(decode(&key, "sid-1", &v2), Ok(s.clone()));
        let v1 = format!(
            "v1:{}",
            key.seal(&serde_json::to_vec(&s).unwrap(), &ad("v1", "sid-1"))
        );
        assert_eq!(
            decode(&key, "sid-1", v1.as_bytes()),
            Ok(s),
            "v1 still reads"
        );
        assert!(
            v2.len() * 100 < v1.len() * 80,
            "v2 {} bytes vs v1 {}",
            v2.len(),
            v1.len()
        );
    }

    #[test]
    fn refuses_other_keys_ids_and_formats() {
        let key = Key::random();
        let v2 = encode(&key, &session()).unwrap();
        assert_eq!(
            decode(&Key::random(), "sid-1", &v2),
            Err(DecodeError::DoesNotOpen)
        );
        assert_eq!(decode(&key, "sid-2", &v2), Err(DecodeError::DoesNotOpen));
        assert_eq!(
            decode(&key, "sid-1", b"v9:xx"),
            Err(DecodeError::UnknownFormat)
        );
        let mut flipped = v2.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            decode(&key, "sid-1", &flipped),
            Err(DecodeError::DoesNotOpen)
        );
    }
}
