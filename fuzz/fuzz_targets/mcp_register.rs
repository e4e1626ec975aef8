//! What an MCP client sends the authorization server without credentials: a registration body
//! (RFC 7591) and a client metadata document, on arbitrary bytes. Never a panic; whatever is
//! accepted has only redirect URIs the rules allow, and a registration round-trips through the
//! client id it is sealed into.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vallum::authn::mcp_oauth::{cimd, clients};

fuzz_target!(|data: &[u8]| {
    let key = vallum::crypto::Key::from_bytes([7; 32]);
    if let Ok((id, client)) = clients::register(&key, data, 1) {
        assert!(client.redirect_uris.iter().all(|u| clients::redirect_uri_allowed(u)));
        assert_eq!(clients::find(&key, &id), Some(client));
    }
    let url = url::Url::parse("https://agent.example.com/client.json").unwrap();
    if let Ok(client) = cimd::validate(&url, data, 1) {
        assert!(client.redirect_uris.iter().all(|u| clients::redirect_uri_allowed(u)));
        assert_eq!(client.auth, clients::AuthMethod::None);
    }
});
