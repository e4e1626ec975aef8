//! `session_idle_timeout`: a session unused for that long ends. Activity is recorded fleet-wide
//! without a store write per request: each node writes a session's last-seen time into the store
//! at most once per quarter of the timeout (and at most once a minute), and reads it back only
//! when its own record of the session is that old — so an active session costs one read and one
//! write per minute per node, and an idle one is found by whichever node sees it next.

use super::*;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sessions this node saw, and when it last recorded their activity in the store.
#[derive(Default)]
pub struct Activity {
    seen: DashMap<String, u64>,
    writes: AtomicU64,
}

fn key(id: &str) -> String {
    format!("seen:{id}")
}

/// How often activity is written: a quarter of the timeout, at most once a minute.
fn granularity(idle: Duration) -> u64 {
    (idle.as_secs() / 4).clamp(1, 60)
}

impl Activity {
    /// Forgets sessions this node has not recorded for a day (bounds the map).
    fn sweep(&self, now: u64) {
        if self.writes.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.seen.retain(|_, t| now.saturating_sub(*t) < 86_400);
        }
    }
}

/// Whether `s` is still live under an idle timeout of `idle`; an idle session is ended (in the
/// store, so on every node). While the store cannot answer, the session is taken as live and
/// checked again a recording interval later: the same bounded staleness as the session cache,
/// rather than refusing every signed-in request during an outage.
pub(super) async fn alive(state: &AuthState, s: &UserSession, idle: Duration, now: u64) -> bool {
    let every = granularity(idle);
    let mine = state.activity.seen.get(&s.id).map(|t| *t);
    if mine.is_some_and(|t| now.saturating_sub(t) < every) {
        return true;
    }
    let recorded = match state.store.get_record(&key(&s.id)).await {
        Ok(r) => r.and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok()),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read session activity; checking again later");
            state.activity.seen.insert(s.id.clone(), now);
            return true;
        }
    };
    let last = [Some(s.issued_at), recorded, mine]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(s.issued_at);
    if now.saturating_sub(last) > idle.as_secs() {
        state.activity.seen.remove(&s.id);
        // Refused here even if the store cannot delete it now; other nodes find it idle too.
        if let Err(e) = state.store.delete(&s.id).await {
            tracing::warn!(error = %e, "cannot delete an idle session; refused here");
        }
        state
            .metrics
            .sessions_ended
            .with_label_values(&["idle"])
            .inc();
        tracing::info!(user = %s.user_id, session_id = %s.id, idle_secs = now - last, "session ended: idle");
        return false;
    }
    let ttl = s.ttl(now).as_secs().max(1);
    if let Err(e) = state
        .store
        .put_record(&key(&s.id), now.to_string().into_bytes(), ttl)
        .await
    {
        tracing::debug!(error = %e, "cannot record session activity; trying again later");
    }
    state.activity.seen.insert(s.id.clone(), now);
    state.activity.sweep(now);
    true
}
