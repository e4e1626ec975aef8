//! The ACME worker: once a second it compares the hosts the live config needs certificates for
//! with what is served, and for each host that has none, or whose certificate is due for
//! renewal, takes a stored one (a peer's, or this node's from before a restart) or orders one.
//! A failed order is retried with doubling backoff while the old certificate keeps serving; the
//! next attempt uses the other challenge type when both can be answered.

use super::keep::{self, Keep};
use super::{account, order, Acme};
use crate::config::autocert::Autocert;
use crate::routes::route::HostPattern;
use crate::snapshot::{SharedSnapshot, Snapshot};
use async_trait::async_trait;
use instant_acme::{Account, ChallengeType};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const FIRST_RETRY: Duration = Duration::from_secs(30);
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// How soon to look again when a peer holds the claim on a host.
const PEER_ORDERING: Duration = Duration::from_secs(2);

/// The hosts that need an ACME certificate: every exact route host and the authenticate host,
/// less those a configured certificate covers. Wildcard hosts cannot be proven by HTTP-01 or
/// TLS-ALPN-01; IP addresses are not names.
pub fn wanted(snap: &Snapshot) -> Vec<String> {
    let settings = &snap.settings;
    if settings.autocert.is_none() {
        return Vec::new();
    }
    let mut hosts: Vec<String> = snap
        .routes
        .iter()
        .filter_map(|r| match &r.host {
            HostPattern::Exact(h) => Some(h.clone()),
            HostPattern::Wildcard(_) => None,
        })
        .chain(
            settings
                .auth
                .as_ref()
                .and_then(|a| a.authenticate_url.host_str().map(str::to_string)),
        )
        .map(|h| h.to_ascii_lowercase())
        .filter(|h| h.parse::<std::net::IpAddr>().is_err() && keep::safe_name(h))
        .filter(|h| !settings.certs.covers(h))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

struct HostState {
    next_try: Instant,
    /// Until when this node holds the fleet's claim on ordering the host: its own retries go
    /// ahead without claiming again, everyone else's wait.
    claimed_until: Option<Instant>,
    backoff: Duration,
    jitter: f64,
    failures: u32,
}

pub struct Worker {
    pub acme: Arc<Acme>,
    pub runtime: SharedSnapshot,
}

#[async_trait]
impl BackgroundService for Worker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hosts: HashMap<String, HostState> = HashMap::new();
        let mut account: Option<(String, Account)> = None;
        // The first look waits a second: background services start before Pingora binds the
        // listeners that answer the CA's challenges.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            let snap = self.runtime.load_full();
            let Some(cfg) = snap.settings.autocert.clone() else {
                continue;
            };
            let wanted = wanted(&snap);
            self.acme.retain(&wanted);
            hosts.retain(|h, _| wanted.contains(h));
            let keep = Keep::new(&cfg.dir, Arc::clone(&self.acme.store));
            let http01 = snap.settings.http_redirect_addr.is_some();
            for host in &wanted {
                let state = hosts.entry(host.clone()).or_insert_with(|| HostState {
                    next_try: Instant::now(),
                    claimed_until: None,
                    backoff: FIRST_RETRY,
                    jitter: rand::random::<f64>(),
                    failures: 0,
                });
                let step = Step {
                    acme: &self.acme,
                    cfg: &cfg,
                    keep: &keep,
                    http01,
                };
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = step.run(host, state, &mut account) => {}
                }
            }
        }
    }
}

struct Step<'a> {
    acme: &'a Acme,
    cfg: &'a Autocert,
    keep: &'a Keep,
    http01: bool,
}

impl Step<'_> {
    fn due(&self, host: &str, jitter: f64) -> bool {
        self.acme
            .served(host)
            .is_none_or(|i| SystemTime::now() >= i.renew_at(jitter))
    }

    async fn run(
        &self,
        host: &str,
        state: &mut HostState,
        account: &mut Option<(String, Account)>,
    ) {
        if !self.due(host, state.jitter) || Instant::now() < state.next_try {
            return;
        }
        // A certificate a peer (or this node, before a restart) already has.
        if let Some(stored) = self.keep.load(host).await {
            let newer = self
                .acme
                .served(host)
                .is_none_or(|s| stored.not_after > s.not_after);
            if newer {
                tracing::info!(
                    host,
                    expires = stored.expires_unix() as u64,
                    "autocert: certificate loaded"
                );
                self.acme.install(host, Arc::new(stored));
                if !self.due(host, state.jitter) {
                    return;
                }
            }
        }
        let holding = state.claimed_until.is_some_and(|t| Instant::now() < t);
        if !holding {
            match self.keep.claim(host).await {
                Ok(true) => state.claimed_until = Some(Instant::now() + keep::ORDER_CLAIM),
                Ok(false) => {
                    state.next_try = Instant::now() + PEER_ORDERING;
                    return;
                }
                Err(e) => return self.failed(host, state, format!("session store: {e}")),
            }
        }
        let kind = self.challenge(state.failures);
        let result = match self.account(account).await {
            Ok(acct) => {
                order::order(
                    self.acme,
                    self.keep,
                    &acct,
                    host,
                    kind.clone(),
                    self.cfg.must_staple,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(issued) => {
                let renewal = self.acme.served(host).is_some();
                tracing::info!(
                    host,
                    challenge = ?kind,
                    renewal,
                    expires = issued.expires_unix() as u64,
                    "autocert: certificate issued"
                );
                if let Err(e) = self.keep.save(host, &issued).await {
                    tracing::warn!(host, error = %e, "autocert: cannot keep the certificate");
                }
                self.acme.install(host, Arc::new(issued));
                self.acme
                    .metrics
                    .autocert_orders
                    .with_label_values(&["issued"])
                    .inc();
                state.backoff = FIRST_RETRY;
                state.failures = 0;
            }
            Err(e) => {
                self.acme
                    .metrics
                    .autocert_orders
                    .with_label_values(&["failed"])
                    .inc();
                self.failed(host, state, e)
            }
        }
    }

    /// HTTP-01 when the HTTP listener is there, alternating with TLS-ALPN-01 after a failure.
    fn challenge(&self, failures: u32) -> ChallengeType {
        if self.http01 && failures % 2 == 0 {
            ChallengeType::Http01
        } else {
            ChallengeType::TlsAlpn01
        }
    }

    fn failed(&self, host: &str, state: &mut HostState, error: String) {
        let serving = self.acme.served(host).is_some();
        tracing::warn!(
            host,
            error = %error,
            retry_in_s = state.backoff.as_secs(),
            serving_old_certificate = serving,
            "autocert: order failed"
        );
        self.acme.failing.insert(host.to_string(), error);
        state.next_try = Instant::now() + state.backoff;
        state.backoff = (state.backoff * 2).min(MAX_RETRY);
        state.failures += 1;
    }

    /// The account for the configured directory, opened once and reopened when it changes.
    async fn account(&self, cached: &mut Option<(String, Account)>) -> Result<Account, String> {
        if let Some((url, acct)) = cached {
            if *url == self.cfg.directory_url {
                return Ok(acct.clone());
            }
        }
        let acct = account::open(self.cfg, self.keep).await?;
        *cached = Some((self.cfg.directory_url.clone(), acct.clone()));
        Ok(acct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(extra: &str) -> Snapshot {
        let yaml = format!(
            "address: 127.0.0.1:0\nautocert: true\nautocert_dir: /nonexistent\n{extra}routes:\n\
             - from: https://App.example.com\n  to: http://127.0.0.1:1\n  allow_public_unauthenticated_access: true\n\
             - from: https://*.wild.example.com\n  to: http://127.0.0.1:1\n  allow_public_unauthenticated_access: true\n\
             - from: https://127.0.0.9\n  to: http://127.0.0.1:1\n  allow_public_unauthenticated_access: true\n\
             - from: https://app.example.com\n  prefix: /other\n  to: http://127.0.0.1:1\n  allow_public_unauthenticated_access: true\n"
        );
        Snapshot::from_str(&yaml, &|_| None, None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn wanted_hosts_are_exact_names_once_without_wildcards_or_addresses() {
        assert_eq!(wanted(&snapshot("")), vec!["app.example.com".to_string()]);
    }

    #[test]
    fn nothing_is_wanted_without_autocert() {
        let snap = Snapshot::from_str(
            "address: 127.0.0.1:0\nroutes:\n- from: https://a.example.com\n  to: http://127.0.0.1:1\n  allow_public_unauthenticated_access: true\n",
            &|_| None,
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(wanted(&snap).is_empty());
    }

    #[test]
    fn hsts_only_with_certificates_browsers_trust() {
        let hsts = |snap: &Snapshot| {
            snap.settings
                .response_headers
                .iter()
                .any(|(k, _)| k == "strict-transport-security")
        };
        assert!(hsts(&snapshot("")), "autocert from a real CA");
        assert!(!hsts(&snapshot("autocert_use_staging: true\n")), "staging");
        let fallback = Snapshot::from_str(
            "address: 127.0.0.1:0\nroutes:\n- from: https://a.example.com\n  to: http://127.0.0.1:1\n  allow_public_unauthenticated_access: true\n",
            &|_| None,
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!hsts(&fallback), "the self-signed fallback");
    }
}
