//! Unsealing arbitrary cookie values: `None` for anything not sealed by this key, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vallum::crypto::Key;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let key = Key::from_bytes([7; 32]);
    assert!(
        vallum::session::cookie::open(&key, "_pomerium", "app.example.com", value, 0).is_none(),
        "nothing the fuzzer makes is sealed with this key"
    );
    let _ = key.open(value, b"ad");
    let _ = key.open_raw(data, b"ad");
});
