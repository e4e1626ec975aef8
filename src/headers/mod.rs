//! What Vallum tells upstreams about the user: the signed assertion, claim headers, and the
//! `${pomerium.*}` values in `set_request_headers`.

pub mod jwt;

use crate::config::auth::AuthSettings;
use crate::session::UserSession;
use serde_json::{json, Map, Value};

/// The (cached) `X-Pomerium-Jwt-Assertion` for a session on a route host; `issuer_uri` picks
/// `jwt_issuer_format: uri`.
pub fn assertion(
    signer: &jwt::Signer,
    auth: &AuthSettings,
    s: &UserSession,
    host: &str,
    issuer_uri: bool,
) -> http::HeaderValue {
    signer.assertion(&s.id, host, crate::clock::unix_now(), || {
        // Built only when signing (a cache miss), not per request.
        let issuer = if issuer_uri {
            format!("https://{host}/")
        } else {
            host.to_string()
        };
        let extra: Vec<String> = auth.claim_headers.iter().map(|(_, c)| c.clone()).collect();
        assertion_claims(s, host, &issuer, &extra)
    })
}

/// Pomerium's assertion claims for a session and a route host.
pub fn assertion_claims(
    s: &UserSession,
    audience: &str,
    issuer: &str,
    extra: &[String],
) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("iss".into(), json!(issuer));
    c.insert("aud".into(), json!(audience));
    c.insert("sub".into(), json!(s.user_id));
    c.insert("user".into(), json!(s.user_id));
    c.insert("email".into(), json!(s.email.clone().unwrap_or_default()));
    c.insert("groups".into(), json!(s.groups));
    c.insert("sid".into(), json!(s.id));
    c.insert("name".into(), json!(s.name.clone().unwrap_or_default()));
    for name in extra {
        if !c.contains_key(name) {
            if let Some(v) = s.claims.get(name) {
                c.insert(name.clone(), v.clone());
            }
        }
    }
    c
}

/// A claim as a header value: lists comma-joined, absent → empty.
pub fn claim_header_value(s: &UserSession, claim: &str) -> String {
    let v = match claim {
        "email" => return s.email.clone().unwrap_or_default(),
        "sub" | "user" => return s.user_id.clone(),
        "groups" => return s.groups.join(","),
        "name" => return s.name.clone().unwrap_or_default(),
        other => s.claims.get(other),
    };
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}
