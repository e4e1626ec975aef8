//! The shape of the source tree, checked on every test run: no import cycle between top-level
//! modules (layers point one way), no file over 600 lines, no function over 100 lines. It reads
//! `src/` as text: strings, characters and comments are blanked first, so a `{` or `crate::` inside
//! a literal counts for nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 100;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn src_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Rust source with comments, string and char literals replaced by spaces (newlines kept, so
/// line numbers still hold).
fn blank_literals(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in out.iter_mut().take(to.min(b.len())).skip(from) {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let prev_ident = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let end = find(b, i + 2, b"*/").map_or(b.len(), |p| p + 2);
            blank(&mut out, i, end);
            i = end;
        } else if let Some((open, close)) = raw_string_start(rest).filter(|_| !prev_ident) {
            let end = find(b, i + open, &close).map_or(b.len(), |p| p + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if b[i] == b'\'' {
            // A char literal ('a', '\n', '\u{7f}'); anything else is a lifetime.
            let len = match rest.get(1) {
                Some(b'\\') => rest.iter().skip(2).position(|&c| c == b'\'').map(|p| p + 3),
                Some(_) => {
                    let ch = std::str::from_utf8(&rest[1..])
                        .ok()
                        .and_then(|s| s.chars().next());
                    ch.map(char::len_utf8)
                        .filter(|n| rest.get(1 + n) == Some(&b'\''))
                        .map(|n| n + 2)
                }
                None => None,
            };
            if let Some(len) = len {
                blank(&mut out, i, i + len);
                i += len;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// `r"`, `r#"`, `br##"` …: the opening's length and the closing delimiter.
fn raw_string_start(s: &[u8]) -> Option<(usize, Vec<u8>)> {
    let mut i = usize::from(s.first() == Some(&b'b'));
    if s.get(i) != Some(&b'r') {
        return None;
    }
    i += 1;
    let hashes = s[i..].iter().take_while(|&&c| c == b'#').count();
    if s.get(i + hashes) != Some(&b'"') {
        return None;
    }
    let mut close = vec![b'"'];
    close.extend(std::iter::repeat_n(b'#', hashes));
    Some((i + hashes + 1, close))
}

/// The top-level module a file belongs to (`src/proxy/mod.rs` → `proxy`).
fn top_module(path: &Path) -> String {
    let rel = path.strip_prefix(src_root()).unwrap_or(path);
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    first
        .unwrap_or_default()
        .trim_end_matches(".rs")
        .to_string()
}

/// Top-level modules a file names through `crate::…`, including `use crate::{a, b::c}` groups.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut level = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => level += 1,
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        refs.insert(leading_ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            refs.insert(leading_ident(rest));
        }
    }
    refs.remove("");
    refs
}

fn leading_ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level module graph: module → modules it imports.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(&src_root(), &mut files);
    let tops: BTreeSet<String> = files.iter().map(|f| top_module(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = top_module(f);
        if from == "main" || from == "lib" {
            continue;
        }
        let code = blank_literals(&std::fs::read_to_string(f).unwrap_or_default());
        let deps = graph.entry(from.clone()).or_default();
        for to in crate_refs(&code) {
            if to != from && tops.contains(&to) {
                deps.insert(to);
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one (depth-first, deterministic order).
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let Some(last) = path.last().cloned() else {
            return false;
        };
        for next in g.get(&last).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(graph, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = module_graph();
    assert!(graph.len() > 10, "the module graph was not read: {graph:?}");
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" → "))
        .collect();
    assert!(
        cycles.is_empty(),
        "top-level modules import each other in a cycle (layers must point one way; see \
         docs/architecture.md):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_file_is_over_600_lines() {
    let mut files = Vec::new();
    sources(&src_root(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .count();
            (n > MAX_FILE_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// Each `fn` item with a body, as (name, first line, line count).
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut offset = 0;
    for (line_no, line) in code.split('\n').enumerate() {
        let start = offset;
        offset += line.len() + 1;
        let Some(name) = fn_name(line) else {
            continue;
        };
        // The body's `{`: the first at bracket depth 0 (a `;` first means no body).
        let mut depth = 0i32;
        let mut open = None;
        for (i, &c) in b.iter().enumerate().skip(start) {
            match c {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => break,
                b'{' if depth == 0 => {
                    open = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(open) = open else {
            continue;
        };
        let mut level = 0;
        let close = b[open..]
            .iter()
            .position(|&c| {
                level += match c {
                    b'{' => 1,
                    b'}' => -1,
                    _ => 0,
                };
                level == 0
            })
            .map_or(b.len(), |p| open + p);
        let last_line = code[..close].matches('\n').count();
        found.push((name, line_no + 1, last_line - line_no + 1));
    }
    found
}

fn fn_name(line: &str) -> Option<String> {
    let mut words = line.split_whitespace().peekable();
    while let Some(w) = words.peek() {
        let qualifier = w.starts_with("pub")
            || matches!(*w, "const" | "async" | "unsafe" | "extern" | "default")
            || w.starts_with('"');
        if !qualifier {
            break;
        }
        words.next();
    }
    if words.next()? != "fn" {
        return None;
    }
    let name = leading_ident(words.next()?);
    (!name.is_empty()).then_some(name)
}

#[test]
fn no_function_is_over_100_lines() {
    let mut files = Vec::new();
    sources(&src_root(), &mut files);
    let mut long = Vec::new();
    for f in &files {
        let code = blank_literals(&std::fs::read_to_string(f).unwrap_or_default());
        for (name, line, n) in functions(&code) {
            if n > MAX_FN_LINES {
                long.push(format!("{}:{line} fn {name} ({n} lines)", f.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// The checks see what they claim to: a planted cycle, a long function and a brace inside a
/// string are judged as they should be.
#[test]
fn the_checks_can_fail() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        cycle_from(&g, "a"),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
    assert_eq!(cycle_from(&g, "c"), None);

    let body = "    let x = 1;\n".repeat(101);
    let code = blank_literals(&format!(
        "pub async fn long() {{\n{body}}}\nfn short() {{ let s = \"{{\"; let c = '{{'; }}\n"
    ));
    let fns = functions(&code);
    assert_eq!(fns[0], ("long".to_string(), 1, 103));
    assert_eq!(fns[1], ("short".to_string(), 104, 1));
    assert_eq!(
        crate_refs("use crate::{a::B, b, c::{d, e}};\nlet x = crate::f::g();"),
        BTreeSet::from(["a".into(), "b".into(), "c".into(), "f".into()])
    );
    assert!(!blank_literals("let s = r#\"crate::x\"#; // crate::y").contains("crate::"));
}
