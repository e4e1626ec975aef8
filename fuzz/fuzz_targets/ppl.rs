//! The PPL parser on arbitrary YAML/JSON values: a parse error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let v = serde_yaml_ng::from_str(text)
        .unwrap_or_else(|_| serde_yaml_ng::Value::String(text.to_string()));
    let _ = vallum::policy::parse::parse_policy(&v, "policy");
});
