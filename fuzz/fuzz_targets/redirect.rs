//! Redirect-target validation and signed-link verification on arbitrary input: whatever is
//! accepted is an absolute http(s) URL with a host and no credentials.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vallum::crypto::Key;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(u) = vallum::authn::signed::safe_target(text) {
        assert!(matches!(u.scheme(), "http" | "https"));
        assert!(u.host_str().is_some_and(|h| !h.is_empty()));
        assert!(u.username().is_empty() && u.password().is_none());
    }
    let query: Vec<(String, String)> = url::form_urlencoded::parse(data).into_owned().collect();
    let key = Key::from_bytes([9; 32]);
    assert!(
        vallum::authn::signed::verify(&key, "/.pomerium/sign_in", &query, 1_700_000_000).is_err(),
        "nothing the fuzzer makes is signed with this key"
    );
});
