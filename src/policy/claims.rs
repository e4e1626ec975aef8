//! A session's claims in the form a million sessions can afford.
//!
//! After `UserSession::compact_claims` a session keeps two to five claims of its own
//! (`email_verified`, `iss`, `auth_time`, `sid`, a custom one). In a `serde_json::Map` (a
//! `BTreeMap`) even one claim costs a whole leaf node with room for eleven keys and values:
//! about 640 bytes, a third of a session. Here they are one sorted boxed slice, read by binary
//! search; sessions change their claims only at sign-in and refresh, so the rebuild a `remove`
//! costs is off the request path. `email_verified: true` is a bit rather than an entry. Stored
//! and sent as the same JSON object as before.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The one claim kept as a bit: nearly every IdP sends `email_verified: true`, and as an entry
/// it cost 64 bytes a session (its slot, its key).
const EMAIL_VERIFIED: &str = "email_verified";
static TRUE: Value = Value::Bool(true);

/// Claim name → value, sorted by name (the order a `serde_json::Map` iterates in).
#[derive(Clone, Default, PartialEq)]
pub struct Claims {
    entries: Box<[(Box<str>, Value)]>,
    /// `email_verified: true`, which `entries` then does not hold.
    email_verified: bool,
}

impl Claims {
    pub fn get(&self, name: &str) -> Option<&Value> {
        if self.email_verified && name == EMAIL_VERIFIED {
            return Some(&TRUE);
        }
        self.find(name).ok().map(|i| &self.entries[i].1)
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(name))
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Removes a claim (a rebuild: only at sign-in and refresh).
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        if self.email_verified && name == EMAIL_VERIFIED {
            self.email_verified = false;
            return Some(TRUE.clone());
        }
        let i = self.find(name).ok()?;
        let mut v = std::mem::take(&mut self.entries).into_vec();
        let (_, value) = v.remove(i);
        self.entries = v.into_boxed_slice();
        Some(value)
    }

    /// Every claim, sorted by name (`email_verified` in its place).
    pub fn iter<'a>(&'a self) -> impl Iterator<Item = (&'a str, &'a Value)> {
        let at = self.find(EMAIL_VERIFIED).unwrap_or_else(|i| i);
        let (before, after) = self.entries.split_at(at);
        let flag = self.email_verified.then_some((EMAIL_VERIFIED, &TRUE));
        let pair = |(k, v): &'a (Box<str>, Value)| (&**k, v);
        before
            .iter()
            .map(pair)
            .chain(flag)
            .chain(after.iter().map(pair))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.entries.len() + usize::from(self.email_verified)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The claims as a JSON object, for pages and assertions that add to them.
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

impl From<Map<String, Value>> for Claims {
    fn from(mut map: Map<String, Value>) -> Self {
        let email_verified = map.get(EMAIL_VERIFIED) == Some(&TRUE);
        if email_verified {
            map.remove(EMAIL_VERIFIED);
        }
        // A `Map` iterates sorted and without duplicates, so the slice is ready for searching.
        let entries = map
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v))
            .collect();
        Self {
            entries,
            email_verified,
        }
    }
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Claims {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Map::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        Claims::from(v.as_object().cloned().unwrap_or_default())
    }

    #[test]
    fn reads_every_claim_by_name_and_nothing_else() {
        let c = claims(json!({"sub": "u1", "aud": "x", "zeta": [1, 2], "email_verified": true}));
        assert_eq!(c.get("sub"), Some(&json!("u1")));
        assert_eq!(c.get("aud"), Some(&json!("x")));
        assert_eq!(c.get("zeta"), Some(&json!([1, 2])));
        assert_eq!(c.get("email_verified"), Some(&json!(true)));
        assert_eq!(c.get("su"), None);
        assert_eq!(c.get(""), None);
        assert_eq!(
            c.keys().collect::<Vec<_>>(),
            ["aud", "email_verified", "sub", "zeta"]
        );
    }

    #[test]
    fn email_verified_reads_back_as_the_claim_it_was() {
        for (v, flag) in [
            (json!(true), true),
            (json!(false), false),
            (json!("true"), false),
        ] {
            let map = json!({"a": 1, "email_verified": v.clone(), "z": 2});
            let mut c = claims(map.clone());
            assert_eq!(c.email_verified, flag);
            assert_eq!(c.get("email_verified"), Some(&v));
            assert_eq!(c.keys().collect::<Vec<_>>(), ["a", "email_verified", "z"]);
            assert_eq!(c.to_map(), map.as_object().cloned().unwrap_or_default());
            assert_eq!(c.len(), 3);
            assert_eq!(c.remove("email_verified"), Some(v));
            assert_eq!((c.get("email_verified"), c.len()), (None, 2));
        }
    }

    #[test]
    fn remove_keeps_the_rest_searchable() {
        let mut c = claims(json!({"a": 1, "b": 2, "c": 3}));
        assert_eq!(c.remove("b"), Some(json!(2)));
        assert_eq!(c.remove("b"), None);
        assert_eq!(
            (c.get("a"), c.get("c"), c.len()),
            (Some(&json!(1)), Some(&json!(3)), 2)
        );
    }

    #[test]
    fn stored_as_the_json_object_sessions_were_stored_as() {
        let map = json!({"sub": "u1", "nested": {"a": [1, 2.5, null, true]}, "iss": "https://i"});
        let c = claims(map.clone());
        let text = serde_json::to_string(&c).unwrap_or_default();
        // Byte for byte what the `Map` field wrote, so stored sessions read back either way.
        assert_eq!(text, serde_json::to_string(&map).unwrap_or_default());
        let back: Claims = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, c);
        assert_eq!(back.to_map(), map.as_object().cloned().unwrap_or_default());
    }
}
