//! Strings written into a log line as they are wherever they can be: JSON's escaping, or `{:?}`'s
//! for the text form, only for the rare value that needs it.

use std::fmt::Write as _;

/// A JSON string: quotes, backslashes and control characters escaped.
pub(super) fn json_str(buf: &mut String, s: &str) {
    buf.push('"');
    if plain(s.as_bytes(), false) {
        buf.push_str(s);
    } else {
        for c in s.chars() {
            match c {
                '"' => buf.push_str("\\\""),
                '\\' => buf.push_str("\\\\"),
                '\n' => buf.push_str("\\n"),
                '\r' => buf.push_str("\\r"),
                '\t' => buf.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(buf, "\\u{:04x}", c as u32);
                }
                c => buf.push(c),
            }
        }
    }
    buf.push('"');
}

/// A string as `{:?}` writes it, without its cost where nothing needs escaping.
pub(super) fn debug_str(buf: &mut String, s: &str) {
    if plain(s.as_bytes(), true) {
        buf.push('"');
        buf.push_str(s);
        buf.push('"');
    } else {
        let _ = write!(buf, "{s:?}");
    }
}

/// Whether `s` can be written between quotes as it is: no `"`, `\\` or control character (and,
/// for `{:?}`'s form, nothing outside printable ASCII). Eight bytes at a time, the last few
/// padded to eight with a plain byte: a line's fields are nearly always plain and short, and
/// testing them byte by byte was about 6,600 instructions of a logged request
/// (`load/profile.sh`), the tails alone still about 1,000.
pub(super) fn plain(s: &[u8], printable_ascii: bool) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Some byte of `x` is below `n` (n ≤ 0x80; exact for "some", as used here).
    fn below(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH
    }
    fn equal(x: u64, b: u8) -> u64 {
        below(x ^ (ONES * u64::from(b)), 1)
    }
    let word_ok = |bytes: [u8; 8]| {
        let x = u64::from_ne_bytes(bytes);
        let mut bad = below(x, 0x20) | equal(x, b'"') | equal(x, b'\\');
        if printable_ascii {
            bad |= (x & HIGH) | equal(x, 0x7f);
        }
        bad == 0
    };
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        match <[u8; 8]>::try_from(word) {
            Ok(bytes) if word_ok(bytes) => {}
            _ => return false,
        }
    }
    let tail = words.remainder();
    let mut last = [b'a'; 8];
    last[..tail.len()].copy_from_slice(tail);
    word_ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_agrees_with_a_byte_by_byte_test_for_every_byte_at_every_position() {
        for printable_ascii in [false, true] {
            let byte_ok =
                |b: u8| b >= 0x20 && b != b'"' && b != b'\\' && (!printable_ascii || b < 0x7f);
            for len in [0, 1, 7, 8, 9, 16, 17] {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut s = vec![b'a'; len];
                        s[at] = b;
                        assert_eq!(
                            plain(&s, printable_ascii),
                            s.iter().all(|b| byte_ok(*b)),
                            "byte {b:#04x} at {at} of {len}, printable_ascii {printable_ascii}"
                        );
                    }
                }
            }
            assert!(plain(b"/.pomerium/sign_in?x=1", printable_ascii));
        }
    }
}
