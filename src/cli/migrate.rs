//! `vallum check-config --pomerium`: reads a Pomerium config and says, key by key, what Vallum
//! does with it — supported, accepted without effect (and why), not supported yet, removed by
//! Pomerium itself, or unknown — then runs the full validation.

use crate::config::keys::{
    classify, struct_fields, Support, POMERIUM_GLOBAL_UNSUPPORTED, POMERIUM_ROUTE_UNSUPPORTED,
};
use crate::config::raw::{RawRoute, RawSettings};
use serde_yaml_ng::Value;

/// One report line; anything not supported clears `clean`.
fn entry(key: &str, s: Support, clean: &mut bool) -> String {
    let status = match s {
        Support::Supported => "supported".to_string(),
        Support::Ignored(why) => format!("accepted, no effect: {why}"),
        Support::Unsupported => {
            *clean = false;
            "NOT SUPPORTED by Vallum yet".to_string()
        }
        Support::Removed(why) => {
            *clean = false;
            format!("REMOVED: {why}")
        }
        Support::Unknown => {
            *clean = false;
            "UNKNOWN key".to_string()
        }
    };
    format!("  {key:<44} {status}")
}

/// The per-key report, and whether everything in it is supported (or harmlessly ignored).
pub fn report(text: &str) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut clean = true;
    let doc: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => return (vec![format!("not valid YAML: {e}")], false),
    };
    let Value::Mapping(map) = doc else {
        return (vec!["the config must be a YAML mapping".into()], false);
    };
    let global_known = struct_fields::<RawSettings>();
    let route_known = struct_fields::<RawRoute>();
    let mut routes = Vec::new();
    lines.push("global keys:".into());
    for (k, v) in &map {
        let key = k.as_str().unwrap_or("<non-string key>");
        if key == "routes" || key == "policy" {
            if let Value::Sequence(items) = v {
                routes.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, r)| (format!("{key}[{i}]"), r.clone())),
                );
            }
            lines.push(entry(key, Support::Supported, &mut clean));
            continue;
        }
        lines.push(entry(
            key,
            classify(key, global_known, POMERIUM_GLOBAL_UNSUPPORTED),
            &mut clean,
        ));
    }
    for (path, route) in routes {
        let Value::Mapping(r) = route else { continue };
        let from = r.get("from").and_then(Value::as_str).unwrap_or("?");
        lines.push(format!("{path} ({from}):"));
        for (k, v) in &r {
            let key = k.as_str().unwrap_or("<non-string key>");
            if key == "policy" {
                match crate::policy::parse_policy(v, &format!("{path}.policy")) {
                    Ok(p) => {
                        lines.push(format!("  {key:<44} supported ({} rule(s))", p.rules.len()))
                    }
                    Err(e) => {
                        clean = false;
                        lines.push(format!("  {key:<44} INVALID: {e}"));
                    }
                }
                continue;
            }
            let support = match (key, v.as_str()) {
                ("from", Some(f)) if f.starts_with("udp+") || f.starts_with("ssh://") => {
                    Support::Unsupported
                }
                _ => classify(key, route_known, POMERIUM_ROUTE_UNSUPPORTED),
            };
            lines.push(entry(key, support, &mut clean));
        }
    }
    (lines, clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_key() {
        let (lines, clean) = report(
            "address: ':443'\ntls_derive: x\nclient_ca: x\nwhat_is_this: 1\nroutes:\n  - from: https://a.example.com\n    to: http://a\n    regex_priority_order: 1\n    allowed_groups: [a]\n    policy: {allow: {or: [{emial: x}]}}\n",
        );
        assert!(!clean);
        let text = lines.join("\n");
        for want in [
            "address",
            "supported",
            "tls_derive",
            "NOT SUPPORTED by Vallum yet",
            "REMOVED: removed in Pomerium; use downstream_mtls.ca",
            "what_is_this",
            "UNKNOWN key",
            "routes[0] (https://a.example.com):",
            "accepted, no effect",
            "INVALID: routes[0].policy.allow.or[0]: unknown criterion 'emial'",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let (_, clean) = report("insecure_server: true\nroutes:\n  - from: http://a\n    to: http://b\n    allow_public_unauthenticated_access: true\n");
        assert!(clean);
    }
}
