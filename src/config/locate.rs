//! Where a config path sits in the file: `routes[1].policy` → line 12, column 5. Errors are
//! found on the parsed value (after merge keys and environment overrides), which has no
//! positions; this walks the text's YAML events once to put the line back on them, so an editor
//! can jump to the key.

use saphyr_parser::{Event, Parser};
use std::collections::HashMap;

/// Line and column (both 1-based) of every key and list item in a YAML text, by path.
pub struct Positions(HashMap<String, (usize, usize)>);

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next; `None` while a key is expected.
        key: Option<String>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

impl Positions {
    /// Positions of everything the text holds; a text that does not parse yields what was read
    /// before the problem (the parser's own error already has its line).
    pub fn of(text: &str) -> Positions {
        let mut at = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let here = (span.start.line(), span.start.col() + 1);
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map {
                        path,
                        key: key @ None,
                    }) = stack.last_mut()
                    {
                        at.entry(join(path, &value)).or_insert(here);
                        *key = Some(value.into_owned());
                        continue;
                    }
                    let _ = node_path(&mut stack, &mut at, here);
                    value_done(&mut stack);
                }
                Event::Alias(_) => {
                    let _ = node_path(&mut stack, &mut at, here);
                    value_done(&mut stack);
                }
                Event::MappingStart(..) => {
                    let path = node_path(&mut stack, &mut at, here);
                    stack.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = node_path(&mut stack, &mut at, here);
                    stack.push(Frame::Seq { path, index: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    value_done(&mut stack);
                }
                _ => {}
            }
        }
        Positions(at)
    }

    /// Where `path` is, or the nearest enclosing key or item that is in the text (a key merged
    /// in from an anchor, or a path inside a value, points at what holds it).
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(found) = self.0.get(p) {
                return Some(*found);
            }
            let cut = p.rfind(['.', '['])?;
            p = p.get(..cut)?;
        }
    }
}

/// The path of the node that starts here (recording a list item's position).
fn node_path(
    stack: &mut [Frame],
    at: &mut HashMap<String, (usize, usize)>,
    here: (usize, usize),
) -> String {
    match stack.last() {
        None => String::new(),
        Some(Frame::Map { path, key }) => join(path, key.as_deref().unwrap_or("")),
        Some(Frame::Seq { path, index }) => {
            let p = format!("{path}[{index}]");
            at.entry(p.clone()).or_insert(here);
            p
        }
    }
}

/// A value ended: its map waits for the next key, its list for the next item.
fn value_done(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { key, .. }) => *key = None,
        Some(Frame::Seq { index, .. }) => *index += 1,
        None => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
address: :443
defaults: &d
  allow_public_unauthenticated_access: true
routes:
  - from: https://a.example.com
    to: http://a:80
  - <<: *d
    from: https://b.example.com
    policy:
      allow:
        and:
          - email: {is: x@example.com}
          - domain: {is: example.com}
";

    #[test]
    fn keys_and_items_have_their_line_and_column() {
        let p = Positions::of(TEXT);
        assert_eq!(p.find("address"), Some((1, 1)));
        assert_eq!(p.find("routes[0]"), Some((5, 5)));
        assert_eq!(p.find("routes[0].to"), Some((6, 5)));
        assert_eq!(p.find("routes[1].from"), Some((8, 5)));
        assert_eq!(p.find("routes[1].policy.allow.and[1]"), Some((13, 13)));
        assert_eq!(
            p.find("routes[1].policy.allow.and[1].domain"),
            Some((13, 13))
        );
    }

    #[test]
    fn a_path_not_in_the_text_points_at_what_holds_it() {
        let p = Positions::of(TEXT);
        // Merged in from the anchor: the route it was merged into.
        assert_eq!(
            p.find("routes[1].allow_public_unauthenticated_access"),
            Some((7, 5))
        );
        assert_eq!(p.find("routes[0].to[0]"), Some((6, 5)));
        assert_eq!(p.find("idp_client_id"), None, "not in the file at all");
    }
}
