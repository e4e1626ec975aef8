//! Tool-call rate limits (`mcp.server.rate_limits`): per user, per tool, in fixed windows,
//! counted on this node. A call is counted only once the policy has allowed it, so refused
//! calls never use up a user's allowance.

use crate::config::mcp::McpServer;
use dashmap::DashMap;
use std::hash::{Hash, Hasher};

/// Counters kept before old windows are swept out.
const SWEEP_AT: usize = 100_000;

/// Calls counted in the current window, by (route, limit, caller, tool).
#[derive(Default)]
pub struct McpRates(DashMap<u64, (u64, u32)>);

impl McpRates {
    /// Counts a call of `tool` by `caller` and says whether it is within the route's limit
    /// (always, when no limit names the tool).
    pub fn allow(
        &self,
        route_id: &str,
        mcp: &McpServer,
        caller: &str,
        tool: &str,
        now: u64,
    ) -> bool {
        let Some((index, limit)) = mcp.rate_limit(tool) else {
            return true;
        };
        let per = limit.per.as_secs().max(1);
        let window = now / per;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (route_id, index, caller, tool).hash(&mut h);
        let key = h.finish();
        if self.0.len() >= SWEEP_AT {
            // Any window older than a day (the longest `per`) is over.
            self.0
                .retain(|_, (w, _)| *w >= window.saturating_sub(1) || per > 86_400);
        }
        let mut entry = self.0.entry(key).or_insert((window, 0));
        let (w, n) = entry.value_mut();
        if *w != window {
            (*w, *n) = (window, 0);
        }
        if *n >= limit.calls {
            return false;
        }
        *n += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mcp::ToolRateLimit;
    use std::time::Duration;

    fn server() -> McpServer {
        McpServer {
            path: None,
            max_request_bytes: 4096,
            upstream_oauth2: None,
            authorization_server: None,
            rate_limits: vec![
                ToolRateLimit {
                    tools: Some(vec!["delete".into()]),
                    calls: 1,
                    per: Duration::from_secs(60),
                },
                ToolRateLimit {
                    tools: None,
                    calls: 3,
                    per: Duration::from_secs(10),
                },
            ],
        }
    }

    #[test]
    fn each_user_and_tool_has_its_own_allowance_per_window() {
        let (r, s) = (McpRates::default(), server());
        assert!(r.allow("r", &s, "alice", "delete", 0));
        assert!(!r.allow("r", &s, "alice", "delete", 59), "one per minute");
        assert!(r.allow("r", &s, "bob", "delete", 59), "bob has his own");
        assert!(r.allow("r", &s, "alice", "delete", 60), "a new window");
        for _ in 0..3 {
            assert!(r.allow("r", &s, "alice", "echo", 5));
        }
        assert!(!r.allow("r", &s, "alice", "echo", 9));
        assert!(
            r.allow("r", &s, "alice", "search", 9),
            "every tool counts on its own"
        );
        assert!(r.allow("other-route", &s, "alice", "echo", 9));
        assert!(r.allow("r", &s, "alice", "echo", 10));
    }
}
