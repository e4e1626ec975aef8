//! Keeping sessions current: a background refresh with the refresh token when the access token
//! nears expiry or the claims are older than `idp_refresh_claims_interval`.

use super::*;

/// How long to wait before retrying a refresh that failed for a reason other than the IdP
/// refusing it (network, IdP down).
const REFRESH_RETRY_SECS: u64 = 30;
/// How long one node holds the right to refresh a session (a refresh takes one IdP round trip).
const REFRESH_LEASE_SECS: u64 = 10;

/// Starts a background refresh when the session's access token is about to expire or its claims
/// are older than `idp_refresh_claims_interval`, so group changes and revocations at the IdP
/// reach policy decisions. The request goes on with the session as it is.
pub(super) fn maybe_refresh(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    session: &Arc<UserSession>,
    now: u64,
) {
    if session.refresh_token.is_none() {
        return;
    }
    // The global provider's settings are at hand; a route's own provider is looked up.
    let interval = match session.idp.is_empty() {
        true => auth.idp.as_ref().map(|i| i.refresh_claims_interval),
        false => state
            .idp
            .get(&session.idp)
            .map(|p| p.settings().refresh_claims_interval),
    };
    let Some(interval) = interval else {
        return;
    };
    let claims_stale = session.claims_refreshed_at + interval.as_secs() <= now;
    let access_expiring = session.access_expires_at.is_some_and(|t| t <= now + 60);
    if !claims_stale && !access_expiring {
        return;
    }
    if state
        .refreshing
        .get(&session.id)
        .is_some_and(|next| *next > now)
    {
        return;
    }
    // Single flight: whoever inserts first refreshes.
    if let Some(prev) = state
        .refreshing
        .insert(session.id.clone(), now + REFRESH_RETRY_SECS)
    {
        if prev > now {
            return;
        }
    }
    let (state, session) = (Arc::clone(state), Arc::clone(session));
    tokio::spawn(async move { refresh(&state, &session).await });
}

async fn refresh(state: &Arc<AuthState>, session: &UserSession) {
    let Some(idp) = state.idp.get(&session.idp) else {
        return;
    };
    let Some(rt) = &session.refresh_token else {
        return;
    };
    // Fleet-wide single flight per refresh token: with rotating refresh tokens, two nodes
    // redeeming the same one would make the IdP refuse the second and end the session.
    match state
        .store
        .claim_once(
            &lease_key(&session.id, rt, session.claims_refreshed_at),
            REFRESH_LEASE_SECS,
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the refresh lease; retrying later");
            return;
        }
    }
    match idp.refresh(rt, &session.id_token).await {
        Ok(identity) => {
            let renew = |next: &mut UserSession| {
                next.user_id = identity.user_id;
                next.email = identity.email;
                next.name = identity.name;
                next.groups = identity.groups;
                next.claims = identity.claims.into();
                next.compact_claims();
                next.id_token = identity.id_token;
                next.access_token = identity.access_token;
                next.refresh_token = identity.refresh_token;
                next.access_expires_at = identity.access_expires_at;
                next.claims_refreshed_at = unix_now();
            };
            match crate::session::update(&*state.store, &session.id, renew).await {
                Ok(true) => {
                    state.refreshing.remove(&session.id);
                    tracing::info!(session_id = %session.id, "session refreshed");
                }
                // Signed out while the IdP answered: the new tokens are dropped with it.
                Ok(false) => {
                    state.refreshing.remove(&session.id);
                    tracing::info!(session_id = %session.id, "session ended during its refresh; not stored again");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store the refreshed session; will retry")
                }
            }
        }
        Err(crate::identity::IdpError::Unreachable(e)) => {
            tracing::warn!(session_id = %session.id, error = %e, "session refresh failed; keeping the session and retrying later");
        }
        Err(e) => {
            tracing::info!(session_id = %session.id, reason = %e, "session ended: the identity provider refused the refresh");
            let _ = state.store.delete(&session.id).await;
            state
                .metrics
                .sessions_ended
                .with_label_values(&["refresh_refused"])
                .inc();
            state.refreshing.remove(&session.id);
        }
    }
}

/// The lease name for redeeming one refresh token of one version of a session (the token itself
/// is hashed: store keys are not secret). The version counts for a credential that does not
/// rotate (GitHub's): each refresh of it is a new lease, while two nodes holding the same version
/// still refresh it once.
fn lease_key(sid: &str, refresh_token: &str, version: u64) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(refresh_token.as_bytes());
    let short: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("refresh|{sid}|{short}|{version}")
}
