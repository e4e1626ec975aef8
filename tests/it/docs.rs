//! The README's configuration reference and the code cannot drift apart: every key the config
//! structs accept is in a reference table, and every key a table lists is accepted.

use std::collections::BTreeSet;
use vallum::config::keys::struct_fields;
use vallum::config::raw::{RawRoute, RawSettings};

/// Keys named in the first cell of the README's tables; "`key` (`_file`)" names both forms.
fn documented() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut keys = BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let first = line.trim_start_matches('|').split('|').next().unwrap_or("");
        let mut last = String::new();
        for (i, tok) in first.split('`').enumerate() {
            if i % 2 == 0 || tok.is_empty() {
                continue;
            }
            if let Some(suffix) = tok.strip_prefix('_') {
                keys.insert(format!("{last}_{suffix}"));
            } else {
                let key = tok.split([' ', ':']).next().unwrap_or(tok).to_string();
                last = key.clone();
                // Metric names have their own table and their own check.
                if !key.starts_with("vallum_") {
                    keys.insert(key);
                }
            }
        }
    }
    keys
}

#[test]
fn every_accepted_key_is_documented_and_every_documented_key_is_accepted() {
    let docs = documented();
    let accepted: BTreeSet<String> = struct_fields::<RawSettings>()
        .iter()
        .chain(struct_fields::<RawRoute>())
        .map(|s| s.to_string())
        .collect();
    let missing: Vec<_> = accepted.difference(&docs).collect();
    assert!(
        missing.is_empty(),
        "accepted by the code but not in the README's reference tables: {missing:?}"
    );
    // Table cells may also name CLI commands and criteria; only config-looking keys are checked.
    let not_accepted: Vec<_> = docs
        .iter()
        .filter(|k| {
            k.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
                && k.contains('_')
        })
        .filter(|k| !accepted.contains(*k))
        .filter(|k| !CRITERIA_AND_OTHER_TABLES.contains(&k.as_str()))
        .collect();
    assert!(
        not_accepted.is_empty(),
        "listed in the README but not accepted by the code: {not_accepted:?}"
    );
}

/// Names in other README tables (policy criteria) that are not config keys.
const CRITERIA_AND_OTHER_TABLES: &[&str] = &[
    "authenticated_user",
    "cors_preflight",
    "http_method",
    "http_path",
    "source_ip",
    "day_of_week",
    "time_of_day",
    "client_certificate",
    "invalid_client_certificate",
];

/// The README's metrics table lists exactly the metrics Vallum registers.
#[test]
fn every_metric_is_documented_and_every_documented_metric_exists() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut documented = BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `vallum_")) {
        let first = line.trim_start_matches('|').split('|').next().unwrap_or("");
        for (i, tok) in first.split('`').enumerate() {
            if i % 2 == 1 && tok.starts_with("vallum_") {
                documented.insert(tok.to_string());
            }
        }
    }
    // Names also mentioned in the "what" column (e.g. the reload timestamp) count as documented.
    for line in readme.lines().filter(|l| l.starts_with("| `vallum_")) {
        for (i, tok) in line.split('`').enumerate() {
            if i % 2 == 1 && tok.starts_with("vallum_") {
                documented.insert(tok.split('{').next().unwrap_or(tok).to_string());
            }
        }
    }
    let registered: BTreeSet<String> = vallum::telemetry::metrics::Metrics::new()
        .unwrap()
        .names()
        .into_iter()
        .collect();
    let missing: Vec<_> = registered.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "registered but not in the README: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&registered).collect();
    assert!(
        extra.is_empty(),
        "in the README but not registered: {extra:?}"
    );
}
