//! Path normalisation on arbitrary request targets: an error or a clean path, never a panic;
//! a normalised path is absolute, has no dot segments, no `//`, and normalising it again
//! changes nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vallum::config::settings::EscapedSlashes;
use vallum::routes::path::{normalize, Normalized, PathRules};

fuzz_target!(|data: &[u8]| {
    let rules = PathRules {
        escaped_slashes: EscapedSlashes::RejectRequest,
        normalize: true,
        merge_slashes: true,
    };
    if let Ok(Normalized::Ok(t)) = normalize(data, rules) {
        assert!(t.path.starts_with('/'), "{:?}", t.path);
        assert!(!t.path.contains("//"), "{:?}", t.path);
        assert!(
            !t.path.split('/').any(|s| s == "." || s == ".."),
            "{:?}",
            t.path
        );
        let again = normalize(t.path.as_bytes(), rules);
        assert!(
            matches!(&again, Ok(Normalized::Ok(t2)) if t2.path == t.path),
            "not idempotent: {:?} -> {:?}",
            t.path,
            again.map(|_| ())
        );
    }
});
