//! The manual (`docs/`, an mdBook) and the code cannot drift apart: every key the config structs
//! accept is in a reference table, every key a table lists is accepted, the metrics table lists
//! exactly the registered metrics, and no link in the README or the manual is broken.

use std::collections::BTreeSet;
use vallum::config::keys::struct_fields;
use vallum::config::raw::{RawRoute, RawSettings};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The README and every page of the manual, with their paths.
fn pages() -> Vec<(std::path::PathBuf, String)> {
    let mut paths = vec![std::path::PathBuf::from(format!("{ROOT}/README.md"))];
    let mut docs: Vec<_> = std::fs::read_dir(format!("{ROOT}/docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// All of the manual's text (and the README's), for the table checks.
fn manual() -> String {
    pages()
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Keys named in the first cell of the manual's tables; "`key` (`_file`)" names both forms.
fn documented() -> BTreeSet<String> {
    let readme = manual();
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
        "accepted by the code but not in the manual's reference tables: {missing:?}"
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
        "listed in the manual but not accepted by the code: {not_accepted:?}"
    );
}

/// Names in other tables of the manual that are not config keys: policy criteria, Pingora's hooks
/// (the architecture page), PostgreSQL URL parameters (the session stores page).
const CRITERIA_AND_OTHER_TABLES: &[&str] = &[
    "request_body_filter",
    "response_body_filter",
    "response_filter",
    "upstream_peer",
    "upstream_request_filter",
    "pool_max_conns",
    "authenticated_user",
    "cors_preflight",
    "http_method",
    "http_path",
    "source_ip",
    "day_of_week",
    "time_of_day",
    "client_certificate",
    "invalid_client_certificate",
    "mcp_tool",
    "mcp_tool_argument",
];

/// The manual's metrics table lists exactly the metrics Vallum registers.
#[test]
fn every_metric_is_documented_and_every_documented_metric_exists() {
    let readme = manual();
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
        "registered but not in the manual: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&registered).collect();
    assert!(
        extra.is_empty(),
        "in the manual but not registered: {extra:?}"
    );
}

/// A heading's anchor as GitHub and mdBook make it: lower case, punctuation dropped, spaces to
/// hyphens.
fn slug(heading: &str) -> String {
    let text: String = heading.replace('`', "");
    // A link in a heading counts by its label.
    let text = regex::Regex::new(r"\[([^\]]*)\]\([^)]*\)")
        .unwrap()
        .replace_all(&text, "$1");
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fence = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every relative link in the README and the manual points at a file that exists and, for a
/// Markdown file, at a heading it has; the book's table of contents names every page.
#[test]
fn no_link_in_the_readme_or_the_manual_is_broken() {
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut broken = Vec::new();
    for (page, text) in pages() {
        let dir = page.parent().unwrap();
        let mut fence = false;
        for line in text.lines() {
            if line.starts_with("```") {
                fence = !fence;
            }
            if fence {
                continue;
            }
            for cap in link.captures_iter(line) {
                let target = &cap[1];
                if target.contains("://")
                    || target.starts_with("mailto:")
                    || target.starts_with('<')
                {
                    continue;
                }
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let file = if path.is_empty() {
                    page.clone()
                } else {
                    dir.join(path)
                };
                if !file.exists() {
                    broken.push(format!("{}: {target} (no such file)", page.display()));
                    continue;
                }
                if !anchor.is_empty() && file.extension().is_some_and(|e| e == "md") {
                    let text = std::fs::read_to_string(&file).unwrap();
                    if !anchors(&text).contains(anchor) {
                        broken.push(format!("{}: {target} (no such heading)", page.display()));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    let summary = std::fs::read_to_string(format!("{ROOT}/docs/SUMMARY.md")).unwrap();
    for (page, _) in pages().iter().skip(1) {
        let name = page.file_name().unwrap().to_str().unwrap();
        assert!(
            name == "SUMMARY.md" || summary.contains(&format!("({name})")),
            "docs/SUMMARY.md does not list {name}"
        );
    }
}
