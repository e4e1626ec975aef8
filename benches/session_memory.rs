//! Question: how much memory does one live session cost in the memory store, beyond the tokens
//! it holds? Fills a `MemoryStore` with 1,000, 10,000, 100,000 and 1,000,000 sessions shaped
//! like a real sign-in (the claims an OIDC IdP sends, a JWT ID token, an opaque access token, a
//! refresh token) and reads the process's resident set before and after, and the heap bytes the sessions
//! asked for (exact at any count, where the resident set moves by the allocator's pages). Not a
//! timing benchmark: it prints bytes per session. `cargo bench --bench session_memory`.

use std::hint::black_box;

/// The allocator the `vallum` binary runs with (src/main.rs), so the figure is the binary's,
/// wrapped to count the bytes asked for and not yet freed.
#[global_allocator]
static GLOBAL: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);
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

/// A string as a session gets it from the IdP's JSON or the store: exactly as long as its text.
/// (`format!` grows a padded string by doubling: 1,024 bytes for an 850-byte token.)
fn exact(s: String) -> String {
    s.into_boxed_str().into_string()
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
        id: exact(format!("{i:032}")),
        user_id: exact(format!("user-{i}")),
        email: Some(exact(format!("user{i}@example.com"))),
        name: Some(exact(format!("User Number {i}"))),
        groups: vec!["engineering".into(), "oncall".into()],
        claims: claims.as_object().cloned().unwrap_or_default().into(),
        id_token: exact(format!("{i:0>850}")),
        access_token: exact(format!("{i:0>43}")),
        refresh_token: Some(exact(format!("{i:0>43}"))),
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

/// Each count in a process of its own: memory a previous count freed stays with the allocator
/// and would be reused, flattering every row after the first.
const ROW: &str = "SESSION_MEMORY_ROW";

fn main() {
    let Some(n) = std::env::var(ROW)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        println!("sessions   bytes/session   beyond tokens   heap asked beyond tokens");
        let me = std::env::current_exe().unwrap_or_else(|e| panic!("own path: {e}"));
        for n in [1_000usize, 10_000, 100_000, 1_000_000] {
            let status = std::process::Command::new(&me)
                .env(ROW, n.to_string())
                .status()
                .unwrap_or_else(|e| panic!("row {n}: {e}"));
            assert!(status.success(), "row {n}: {status}");
        }
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    // Read before the store exists: its table is part of what a session costs.
    let before = rss();
    let live_before = GLOBAL.allocated();
    let store = MemoryStore::new(n + 1);
    let mut tokens = 0;
    rt.block_on(async {
        for i in 0..n {
            let s = session(i);
            tokens += token_bytes(&s);
            let _ = store.put(s).await;
        }
    });
    let after = rss();
    let asked = GLOBAL.allocated().saturating_sub(live_before) as f64 / n as f64;
    let per = after.saturating_sub(before) as f64 / n as f64;
    let token_share = tokens as f64 / n as f64;
    let (beyond, asked_beyond) = (per - token_share, asked - token_share);
    println!("{n:>9}   {per:>13.0}   {beyond:>13.0}   {asked_beyond:>24.0}");
    black_box(&store);
}
