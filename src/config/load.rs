//! File → raw structs: YAML parse, environment overrides, unknown-key detection with paths.
//!
//! Pipeline (see `mod.rs`): text → `serde_yaml_ng::Value` → env overrides → `RawSettings` and one
//! `RawRoute` per list entry. Each route is decoded on its own so one bad route does not hide
//! the errors of the next.

use super::error::Errors;
use super::keys::{
    explain_unknown, struct_fields, POMERIUM_GLOBAL_UNSUPPORTED, POMERIUM_OBSOLETE,
    POMERIUM_ROUTE_UNSUPPORTED,
};
use super::raw::*;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

/// What a config file says, before validation.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub settings: RawSettings,
    /// False when the global keys did not decode (reported); their checks are then skipped.
    pub settings_ok: bool,
    /// `routes` (or legacy `policy`) as written; the key is kept for error paths.
    pub routes_key: &'static str,
    /// One entry per list item; `None` where the item did not decode (already reported).
    pub routes: Vec<Option<RawRoute>>,
}

/// Parses config text. `env` looks up environment variables (a parameter, so tests control it).
/// Problems are recorded in `errs` and parsing goes on, so validation can report the rest too;
/// only text that is not a YAML mapping stops it.
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> Option<RawConfig> {
    let mut doc: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            errs.push("", format!("not valid YAML: {e}"));
            return None;
        }
    };
    // Anchors are resolved by the parser; merge keys (`<<: *defaults`) are applied here, before
    // any key is read, as Pomerium's YAML library does. A merged mapping may carry a merge key
    // of its own (an anchor built on another), so merging repeats until none is left.
    for _ in 0..16 {
        if let Err(e) = doc.apply_merge() {
            errs.push("", format!("cannot apply a YAML merge key (<<): {e}"));
            return None;
        }
        if !has_merge_key(&doc) {
            break;
        }
    }
    let mut map = match doc {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => {
            errs.push("", "the config must be a YAML mapping of keys to values");
            return None;
        }
    };
    let from_env = apply_env(&mut map, env, errs);

    let routes_value = take_routes(&mut map, errs);
    let global_known = struct_fields::<RawSettings>();
    let settings = decode_with_env_retry(map, &from_env, global_known, errs);

    let route_known = route_known_keys();
    let mut routes = Vec::new();
    let mut routes_key = "routes";
    if let Some((key, list)) = routes_value {
        routes_key = key;
        for (i, v) in list.into_iter().enumerate() {
            let base = format!("{key}[{i}]");
            routes.push(decode::<RawRoute>(
                v,
                &base,
                &route_known,
                POMERIUM_ROUTE_UNSUPPORTED,
                errs,
            ));
        }
    }
    Some(RawConfig {
        settings_ok: settings.is_some(),
        settings: settings.unwrap_or_default(),
        routes_key,
        routes,
    })
}

fn has_merge_key(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => m
            .iter()
            .any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
        Value::Sequence(s) => s.iter().any(has_merge_key),
        Value::Tagged(t) => has_merge_key(&t.value),
        _ => false,
    }
}

/// Pulls the route list out of `routes` (or the legacy `policy`), remembering which key it used.
fn take_routes(map: &mut Mapping, errs: &mut Errors) -> Option<(&'static str, Vec<Value>)> {
    let routes = map.remove("routes");
    let policy = map.remove("policy");
    let (key, v) = match (routes, policy) {
        (Some(r), Some(p)) if !p.is_null() && !r.is_null() => {
            errs.push(
                "policy",
                "both `routes` and its legacy alias `policy` are set; use `routes` only",
            );
            ("routes", r)
        }
        (Some(r), _) if !r.is_null() => ("routes", r),
        (_, Some(p)) if !p.is_null() => ("policy", p),
        _ => return None,
    };
    match v {
        Value::Sequence(s) => Some((key, s)),
        _ => {
            errs.push(key, "expected a list of routes");
            None
        }
    }
}

fn route_known_keys() -> Vec<&'static str> {
    let mut k: Vec<&'static str> = Vec::new();
    k.extend(struct_fields::<RawRoute>());
    k.extend(struct_fields::<RawRedirect>());
    k.extend(struct_fields::<RawResponse>());
    k.extend(struct_fields::<RawRewriteHeader>());
    k.extend(struct_fields::<RawHealthCheck>());
    k.extend(struct_fields::<RawHttpHealthCheck>());
    k.extend(struct_fields::<RawTcpHealthCheck>());
    k.extend(struct_fields::<RawPayload>());
    k.extend(struct_fields::<RawStatusRange>());
    k.sort_unstable();
    k.dedup();
    k
}

/// Environment variables named as Pomerium names them (upper snake case of the key) override
/// the file, as they do in Pomerium. `POLICY` carries base64 YAML routes.
fn apply_env(
    map: &mut Mapping,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> Vec<(String, String)> {
    let mut set = Vec::new();
    for key in struct_fields::<RawSettings>() {
        if *key == "routes" || *key == "policy" {
            continue;
        }
        let var = key.to_ascii_uppercase();
        if let Some(raw) = env(&var) {
            let value = match serde_yaml_ng::from_str::<Value>(&raw) {
                Ok(
                    v
                    @ (Value::Sequence(_) | Value::Mapping(_) | Value::Bool(_) | Value::Number(_)),
                ) => v,
                _ => Value::String(raw.clone()),
            };
            map.insert(Value::String((*key).to_string()), value);
            set.push(((*key).to_string(), raw));
        }
    }
    if let Some(b64) = env("POLICY") {
        match base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_yaml_ng::from_slice::<Value>(&bytes).map_err(|e| e.to_string()))
        {
            Ok(v) => {
                map.remove("routes");
                map.insert(Value::String("policy".into()), v);
            }
            Err(e) => errs.push(
                "$POLICY",
                format!("must be base64-encoded YAML routes: {e}"),
            ),
        }
    }
    set
}

/// Decodes the global settings; a value from the environment that YAML typed as a number or
/// boolean but the key wants as text is retried as text.
fn decode_with_env_retry(
    mut map: Mapping,
    from_env: &[(String, String)],
    known: &[&'static str],
    errs: &mut Errors,
) -> Option<RawSettings> {
    let mut retried: Vec<&str> = Vec::new();
    loop {
        let mut attempt = Errors::default();
        match decode::<RawSettings>(
            Value::Mapping(map.clone()),
            "",
            known,
            POMERIUM_GLOBAL_UNSUPPORTED,
            &mut attempt,
        ) {
            Some(s) => {
                errs.extend(attempt);
                return Some(s);
            }
            None => {
                let retry = from_env
                    .iter()
                    .find(|(k, _)| !retried.contains(&k.as_str()) && attempt_mentions(&attempt, k));
                match retry {
                    Some((k, raw)) => {
                        map.insert(Value::String(k.clone()), Value::String(raw.clone()));
                        retried.push(k);
                    }
                    None => {
                        errs.extend(attempt);
                        return None;
                    }
                }
            }
        }
    }
}

fn attempt_mentions(errs: &Errors, key: &str) -> bool {
    errs.paths()
        .any(|p| p == key || p.starts_with(&format!("{key}.")) || p.starts_with(&format!("{key}[")))
}

/// Decodes one value into `T`, reporting unknown keys (with a suggestion) and the first type
/// error, each with its full path under `base`.
pub(crate) fn decode<T: DeserializeOwned>(
    value: Value,
    base: &str,
    known: &[&'static str],
    unsupported: &[&str],
    errs: &mut Errors,
) -> Option<T> {
    let mut unknown: Vec<(String, String, usize)> = Vec::new();
    let result = {
        let mut on_unknown = |p: serde_ignored::Path| unknown.push(ignored_path(&p));
        let ignored = serde_ignored::Deserializer::new(value, &mut on_unknown);
        serde_path_to_error::deserialize::<_, T>(ignored)
    };
    for (path, leaf, depth) in unknown {
        let global = depth == 1 && base.is_empty();
        if let Some((_, why)) = POMERIUM_OBSOLETE.iter().find(|(k, _)| global && *k == leaf) {
            errs.warn(join(base, &path), *why);
            continue;
        }
        let unsupported_here: &[&str] = if depth == 1 { unsupported } else { &[] };
        errs.push(
            join(base, &path),
            explain_unknown(&leaf, known, unsupported_here),
        );
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let path = error_path(e.path());
            errs.push(join(base, &path), e.inner().to_string());
            None
        }
    }
}

fn join(base: &str, path: &str) -> String {
    match (base.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => base.to_string(),
        (false, false) if path.starts_with('[') => format!("{base}{path}"),
        (false, false) => format!("{base}.{path}"),
    }
}

/// Renders a `serde_ignored` path as `a[0].b`, with the leaf key and its depth.
fn ignored_path(p: &serde_ignored::Path) -> (String, String, usize) {
    use serde_ignored::Path as P;
    fn walk(p: &P, out: &mut Vec<String>) {
        match p {
            P::Root => {}
            P::Seq { parent, index } => {
                walk(parent, out);
                out.push(format!("[{index}]"));
            }
            P::Map { parent, key } => {
                walk(parent, out);
                out.push(key.clone());
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                walk(parent, out)
            }
        }
    }
    let mut segs = Vec::new();
    walk(p, &mut segs);
    let leaf = segs.last().cloned().unwrap_or_default();
    let depth = segs.len();
    (render(&segs), leaf, depth)
}

fn error_path(p: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let segs: Vec<String> = p
        .iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(format!("[{index}]")),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect();
    render(&segs)
}

fn render(segs: &[String]) -> String {
    let mut s = String::new();
    for seg in segs {
        if !seg.starts_with('[') && !s.is_empty() {
            s.push('.');
        }
        s.push_str(seg);
    }
    s
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    #[test]
    fn merge_keys_apply_before_keys_are_read() {
        let text = "routes:\n  - &base\n    from: https://a.example.com\n    to: http://127.0.0.1:1\n    allow_websockets: true\n  - &next\n    <<: *base\n    from: https://b.example.com\n  - <<: *next\n    from: https://c.example.com\n";
        let mut errs = Errors::default();
        let raw = parse(text, &|_| None, &mut errs).unwrap();
        assert!(errs.is_empty(), "{:?}", errs.into_errors());
        let b = raw.routes[1].as_ref().unwrap();
        assert_eq!(b.from.as_deref(), Some("https://b.example.com"));
        assert!(b.allow_websockets, "merged from the anchor");
        let c = raw.routes[2].as_ref().unwrap();
        assert_eq!(c.from.as_deref(), Some("https://c.example.com"));
        assert!(
            c.allow_websockets,
            "merged through an anchor built on another"
        );
    }
}
