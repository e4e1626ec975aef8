//! The MCP JSON-RPC body parser (what an MCP route reads before deciding) on arbitrary bytes:
//! a parse or invalid-request error, never a panic; every call it accepts names its tool.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = vallum::policy::mcp::parse(data) {
        assert!(!request.messages.is_empty());
        for m in &request.messages {
            assert_eq!(m.method == "tools/call", m.tool.is_some());
        }
    }
});
