//! Question: how much memory does one live session cost in the memory store, beyond the tokens
//! it holds? Fills a `MemoryStore` with 1,000 and then 1,000,000 sessions shaped like a real
//! sign-in (the claims an OIDC IdP sends, a JWT ID token, an opaque access token, a refresh
//! token) and reads the process's resident set before and after. Not a timing benchmark: it
//! prints bytes per session. `cargo bench --bench session_memory`.

use std::hint::black_box;

/// The allocator the `vallum` binary runs with (src/main.rs), so the figure is the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use vallum::clock::unix_now;
use vallum::session::memory::MemoryStore;
use vallum::session::{SessionStore, UserSession};

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn session(i: usize) -> UserSession {
    let now = unix_now();
    let claims = serde_json::json!({
        "sub": format!("user-{i}"),
        "email": format!("user{i}@example.com"),
        "email_verified": true,
        "name": format!("User Number {i}"),
        "groups": ["engineering", "oncall"],
        "iss": "https://idp.example.com",
    });
    let mut s = UserSession {
        // Ids and tokens are unique per session, as they are in life (no sharing flatters it).
        id: format!("{i:032}"),
        user_id: format!("user-{i}"),
        email: Some(format!("user{i}@example.com")),
        name: Some(format!("User Number {i}")),
        groups: vec!["engineering".into(), "oncall".into()],
        claims: claims.as_object().cloned().unwrap_or_default().into(),
        id_token: format!("{i:0>850}"),
        access_token: format!("{i:0>43}"),
        refresh_token: Some(format!("{i:0>43}")),
        access_expires_at: Some(now + 3600),
        issued_at: now,
        expires_at: now + 36_000,
        claims_refreshed_at: now,
        idp: String::new(),
        devices: Vec::new(),
    };
    // As a sign-in stores it: the claims the fields already hold are not kept twice.
    s.compact_claims();
    s
}

fn token_bytes(s: &UserSession) -> usize {
    s.id_token.len() + s.access_token.len() + s.refresh_token.as_ref().map_or(0, String::len)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    println!("sessions   bytes/session   beyond tokens");
    for n in [1_000usize, 1_000_000] {
        let store = MemoryStore::new(n + 1);
        let before = rss();
        let mut tokens = 0;
        rt.block_on(async {
            for i in 0..n {
                let s = session(i);
                tokens += token_bytes(&s);
                let _ = store.put(s).await;
            }
        });
        let after = rss();
        let per = after.saturating_sub(before) as f64 / n as f64;
        let beyond = per - tokens as f64 / n as f64;
        println!("{n:>9}   {per:>13.0}   {beyond:>13.0}");
        black_box(&store);
        drop(store);
    }
}
