//! Verifying workload JWTs (`identity_providers`, `bearer_token_format: jwt`) in-process: the
//! token's `iss` picks the issuer, its `kid` the key from the issuer's JWKS, cached per issuer so
//! a request costs a signature check, not a fetch. An unknown `kid` (the issuer rotated its keys)
//! refetches the set, at most once per `MIN_REFETCH` per issuer, so a stream of tokens with made-up
//! key ids cannot turn the gateway into a load generator against the issuer.

use super::bounded;
use crate::config::workload::WorkloadIssuer;
use base64::Engine;
use dashmap::DashMap;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The least time between two fetches of one issuer's keys.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// Keys older than this are read again before use, so a key the issuer withdrew stops working.
const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("issuer {0:?} is not one this route accepts")]
    Issuer(String),
    #[error("algorithm {0:?} is not accepted for this issuer")]
    Algorithm(String),
    #[error("no key {0:?} in the issuer's key set")]
    UnknownKey(String),
    #[error("cannot read the issuer's keys: {0}")]
    Keys(String),
    #[error("{0}")]
    Invalid(String),
}

/// One issuer's key set, when it was read, and when it was last read again on demand.
struct KeySet {
    jwks: JwkSet,
    fetched: Instant,
    refetched: Option<Instant>,
}

/// The key sets of every workload issuer, kept across config reloads (keyed by where they come
/// from, so an unchanged issuer keeps its keys).
pub struct WorkloadKeys {
    sets: DashMap<String, Arc<KeySet>>,
    /// One fetch at a time: a burst of tokens with a new `kid` causes one refetch, not many.
    fetching: tokio::sync::Mutex<()>,
    http: Option<reqwest::Client>,
}

impl Default for WorkloadKeys {
    fn default() -> Self {
        Self {
            sets: DashMap::new(),
            fetching: tokio::sync::Mutex::new(()),
            http: bounded::client().ok(),
        }
    }
}

/// The claims of an unverified JWT's payload (only to choose the issuer).
fn payload(token: &str) -> Result<Map<String, Value>, WorkloadError> {
    let part = token
        .split('.')
        .nth(1)
        .ok_or_else(|| WorkloadError::Malformed("no payload".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| WorkloadError::Malformed("payload is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| WorkloadError::Malformed("payload is not a JSON object".into()))
}

impl WorkloadKeys {
    /// The issuer and the verified claims of `token`, if one of `accepted` signed it for one of
    /// its audiences and it is within its validity.
    pub async fn verify(
        &self,
        token: &str,
        accepted: &[Arc<WorkloadIssuer>],
    ) -> Result<(Arc<WorkloadIssuer>, Map<String, Value>), WorkloadError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| WorkloadError::Malformed(e.to_string()))?;
        let iss = payload(token)?
            .get("iss")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_default();
        let Some(issuer) = accepted.iter().find(|i| i.issuer == iss) else {
            return Err(WorkloadError::Issuer(iss.chars().take(200).collect()));
        };
        if !issuer.algorithms.contains(&header.alg) {
            return Err(WorkloadError::Algorithm(format!("{:?}", header.alg)));
        }
        let jwk = self.key(issuer, header.kid.as_deref()).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| WorkloadError::Keys(e.to_string()))?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&issuer.issuer]);
        v.set_audience(&issuer.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        Ok((Arc::clone(issuer), data.claims))
    }

    /// Installs a key set as if just fetched (benchmarks measure verification without a
    /// network).
    #[doc(hidden)]
    pub fn preload(&self, issuer: &WorkloadIssuer, jwks: JwkSet) {
        let set = KeySet {
            jwks,
            fetched: Instant::now(),
            refetched: None,
        };
        self.sets.insert(issuer.keys_source(), Arc::new(set));
    }

    /// The key `kid` names (or the set's only key when the token names none). The set is read
    /// on first use, again when it is older than `MAX_KEY_AGE`, and again when the key is
    /// unknown — that last at most once per `MIN_REFETCH`.
    async fn key(&self, issuer: &WorkloadIssuer, kid: Option<&str>) -> Result<Jwk, WorkloadError> {
        let source = issuer.keys_source();
        let cached = self.sets.get(&source).map(|s| Arc::clone(&s));
        if let Some(set) = &cached {
            if set.fetched.elapsed() < MAX_KEY_AGE {
                if let Some(k) = pick(&set.jwks, kid) {
                    return Ok(k);
                }
            }
        }
        let _one = self.fetching.lock().await;
        let cached = self.sets.get(&source).map(|s| Arc::clone(&s));
        if let Some(set) = &cached {
            let fresh = set.fetched.elapsed() < MAX_KEY_AGE;
            let found = pick(&set.jwks, kid);
            let recently = set.refetched.is_some_and(|t| t.elapsed() < MIN_REFETCH);
            match found {
                Some(k) if fresh => return Ok(k),
                found if recently => return found.ok_or_else(|| unknown(kid)),
                _ => {}
            }
        }
        // The first read does not count against `MIN_REFETCH` (a rotation right after start
        // still finds its key); a failed read does, so a down issuer is not asked per request.
        let (jwks, fetched, refetched) = match self.fetch(issuer).await {
            Ok(jwks) => (jwks, Instant::now(), cached.is_some().then(Instant::now)),
            Err(e) => {
                tracing::warn!(issuer = %issuer.name, error = %e, "cannot read a workload issuer's keys; keeping the known ones");
                let (jwks, fetched) = match &cached {
                    Some(c) => (c.jwks.clone(), c.fetched),
                    None => (JwkSet { keys: Vec::new() }, Instant::now()),
                };
                (jwks, fetched, Some(Instant::now()))
            }
        };
        let found = pick(&jwks, kid);
        let set = KeySet {
            jwks,
            fetched,
            refetched,
        };
        self.sets.insert(source, Arc::new(set));
        found.ok_or_else(|| unknown(kid))
    }

    async fn fetch(&self, issuer: &WorkloadIssuer) -> Result<JwkSet, WorkloadError> {
        let url = match &issuer.jwks_url {
            Some(u) => u.to_string(),
            None => {
                let doc: Value = self.get_json(&issuer.keys_source()).await?;
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        WorkloadError::Keys("the discovery document has no jwks_uri".into())
                    })?
                    .to_string()
            }
        };
        self.get_json(&url).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, WorkloadError> {
        let http = self
            .http
            .as_ref()
            .ok_or_else(|| WorkloadError::Keys("no HTTP client".into()))?;
        let resp = http
            .get(url)
            .send()
            .await
            .map_err(|e| WorkloadError::Keys(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(WorkloadError::Keys(format!(
                "{url}: HTTP {}",
                resp.status()
            )));
        }
        let body = bounded::read_body(resp)
            .await
            .map_err(|e| WorkloadError::Keys(format!("{url}: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| WorkloadError::Keys(format!("{url}: {e}")))
    }
}

fn pick(set: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(k) => set.find(k).cloned(),
        None if set.keys.len() == 1 => set.keys.first().cloned(),
        None => None,
    }
}

fn unknown(kid: Option<&str>) -> WorkloadError {
    WorkloadError::UnknownKey(kid.unwrap_or("(none)").chars().take(100).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_read_only_to_choose_the_issuer() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let t = format!(
            "{}.{}.sig",
            b64("{\"alg\":\"RS256\"}"),
            b64("{\"iss\":\"https://a\"}")
        );
        assert_eq!(
            payload(&t).ok().and_then(|p| p.get("iss").cloned()),
            Some("https://a".into())
        );
        assert!(payload("onlyone").is_err());
        assert!(payload(&format!("x.{}.y", b64("[1]"))).is_err());
    }

    #[test]
    fn a_token_without_kid_uses_a_lone_key_only() {
        let one: JwkSet = serde_json::from_str(r#"{"keys":[{"kty":"oct","k":"AA","kid":"a"}]}"#)
            .unwrap_or(JwkSet { keys: vec![] });
        assert_eq!(one.keys.len(), 1);
        assert!(pick(&one, None).is_some());
        assert!(pick(&one, Some("a")).is_some());
        assert!(pick(&one, Some("b")).is_none());
        let two = JwkSet {
            keys: vec![one.keys[0].clone(), one.keys[0].clone()],
        };
        assert!(pick(&two, None).is_none());
    }
}
