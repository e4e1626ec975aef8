//! One order: a certificate for one host, proven by an HTTP-01 or TLS-ALPN-01 challenge that
//! this node (and, through the store, every node of the fleet) answers while the CA validates.

use super::cert::{self, Issued};
use super::keep::{self, Keep};
use super::Acme;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use std::time::Duration;

/// The CA's validation and issuance, polled with backoff for at most this long each.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// Removes this order's challenge answers when the order ends, however it ends.
struct Answers<'a> {
    acme: &'a Acme,
    tokens: Vec<String>,
    hosts: Vec<String>,
    shared: Vec<String>,
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.acme.http01.remove(t);
        }
        for h in &self.hosts {
            self.acme.alpn01.remove(h);
        }
    }
}

pub async fn order(
    acme: &Acme,
    keep: &Keep,
    account: &Account,
    host: &str,
    kind: ChallengeType,
    must_staple: bool,
) -> Result<Issued, String> {
    let ids = [Identifier::Dns(host.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut answers = Answers {
        acme,
        tokens: Vec::new(),
        hosts: Vec::new(),
        shared: Vec::new(),
    };
    let mut auths = order.authorizations();
    while let Some(auth) = auths.next().await {
        let mut auth = auth.map_err(|e| format!("authorization: {e}"))?;
        match auth.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => return Err(format!("authorization is {other:?}")),
        }
        let mut challenge = auth
            .challenge(kind.clone())
            .ok_or_else(|| format!("the CA offers no {kind:?} challenge"))?;
        let ka = challenge.key_authorization();
        if kind == ChallengeType::Http01 {
            let token = challenge.token.clone();
            acme.http01.insert(token.clone(), ka.as_str().to_string());
            answers.tokens.push(token.clone());
            let key = keep::http01_key(&token);
            keep.publish(&key, ka.as_str().as_bytes().to_vec()).await;
            answers.shared.push(key);
        } else {
            let digest = ka.digest().as_ref().to_vec();
            acme.alpn01
                .insert(host.to_string(), cert::alpn_challenge(host, &digest)?);
            answers.hosts.push(host.to_string());
            let key = keep::alpn01_key(host);
            keep.publish(&key, digest).await;
            answers.shared.push(key);
        }
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("challenge: {e}"))?;
    }
    let status = order.poll_ready(&POLL).await;
    for key in std::mem::take(&mut answers.shared) {
        keep.withdraw(&key).await;
    }
    drop(answers);
    match status.map_err(|e| format!("validation: {e}"))? {
        OrderStatus::Ready => {}
        other => {
            let why = refusal(&mut order).await;
            return Err(format!("the CA did not validate {host} ({other:?}): {why}"));
        }
    }
    let (csr, key_pem) = cert::csr(host, must_staple)?;
    order
        .finalize_csr(&csr)
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain = order
        .poll_certificate(&POLL)
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    Issued::from_pem(&format!("{chain}{key_pem}"))
}

/// The CA's reason for refusing a challenge (its `error` problem document), for the log.
async fn refusal(order: &mut instant_acme::Order) -> String {
    let mut auths = order.authorizations();
    while let Some(Ok(mut auth)) = auths.next().await {
        if let Ok(state) = auth.refresh().await {
            if let Some(p) = state.challenges.iter().find_map(|c| c.error.as_ref()) {
                return p.detail.clone().unwrap_or_else(|| p.to_string());
            }
        }
    }
    "no reason given".into()
}
