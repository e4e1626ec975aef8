//! What Vallum tells upstreams about the user: the signed assertion, claim headers, and the
//! `${pomerium.*}` values in `set_request_headers`.

pub mod jwt;

use crate::config::auth::AuthSettings;
use crate::session::UserSession;
use serde_json::{json, Map, Value};

/// Which of the user's groups a route passes on (`jwt_groups_filter`, and the groups its policy
/// names with `jwt_groups_filter_infer_from_ppl`): a user in a thousand groups does not send a
/// thousand group names to an app that looks at three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupsFilter {
    /// Tells assertions made under different filters apart in the signing cache.
    pub id: u64,
    names: std::collections::HashSet<String>,
}

impl GroupsFilter {
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        use std::hash::{Hash, Hasher};
        let mut sorted: Vec<String> = names.into_iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        sorted.hash(&mut h);
        GroupsFilter {
            id: h.finish() | 1,
            names: sorted.into_iter().collect(),
        }
    }

    pub fn keep(&self, group: &str) -> bool {
        self.names.contains(group)
    }
}

/// The groups a session shows under `filter` (all of them without one).
pub fn groups<'a>(s: &'a UserSession, filter: Option<&'a GroupsFilter>) -> Vec<&'a str> {
    s.groups
        .iter()
        .map(String::as_str)
        .filter(|g| filter.is_none_or(|f| f.keep(g)))
        .collect()
}

/// The (cached) `X-Pomerium-Jwt-Assertion` for a session on a route host; `issuer_uri` picks
/// `jwt_issuer_format: uri`; `groups` is the route's groups filter.
pub fn assertion(
    signer: &jwt::Signer,
    auth: &AuthSettings,
    s: &UserSession,
    host: &str,
    issuer_uri: bool,
    groups: Option<&GroupsFilter>,
) -> http::HeaderValue {
    let variant = groups.map_or(0, |f| f.id);
    signer.assertion(&s.id, host, variant, crate::clock::unix_now(), || {
        // Built only when signing (a cache miss), not per request.
        let issuer = if issuer_uri {
            format!("https://{host}/")
        } else {
            host.to_string()
        };
        let extra: Vec<String> = auth.claim_headers.iter().map(|(_, c)| c.clone()).collect();
        assertion_claims(s, host, &issuer, &extra, groups)
    })
}

/// Pomerium's assertion claims for a session and a route host.
pub fn assertion_claims(
    s: &UserSession,
    audience: &str,
    issuer: &str,
    extra: &[String],
    filter: Option<&GroupsFilter>,
) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("iss".into(), json!(issuer));
    c.insert("aud".into(), json!(audience));
    c.insert("sub".into(), json!(s.user_id));
    c.insert("user".into(), json!(s.user_id));
    c.insert("email".into(), json!(s.email.clone().unwrap_or_default()));
    c.insert("groups".into(), json!(groups(s, filter)));
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

/// A claim as a header value: lists comma-joined, absent → empty; `groups` under the route's
/// filter.
pub fn claim_header_value(s: &UserSession, claim: &str, filter: Option<&GroupsFilter>) -> String {
    let v = match claim {
        "email" => return s.email.clone().unwrap_or_default(),
        "sub" | "user" => return s.user_id.clone(),
        "groups" if filter.is_none() => return s.groups.join(","),
        "groups" => return groups(s, filter).join(","),
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
