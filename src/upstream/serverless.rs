//! `enable_google_cloud_serverless_authentication`: upstreams on Cloud Run (or behind Google's
//! IAP for functions) want an ID token for their own URL as `Authorization: Bearer`. As in
//! Pomerium, the token comes from the metadata server of the machine Vallum runs on, for the
//! audience `https://<to host>`, and is reused until a minute before it expires.

use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Renew this long before the token expires, so a request never carries one about to lapse.
const MARGIN: Duration = Duration::from_secs(60);
/// Kept this long when the token's expiry cannot be read.
const FALLBACK_LIFETIME: Duration = Duration::from_secs(300);
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct ServerlessTokens {
    /// Built on first use: most gateways have no serverless route and never need it.
    http: std::sync::OnceLock<reqwest::Client>,
    /// `http://metadata.google.internal`, or `http://$GCE_METADATA_HOST` (Google's client
    /// libraries' variable, for emulators and tests).
    base: String,
    cache: DashMap<String, (Arc<str>, Instant)>,
    /// One fetch at a time: a burst of first requests costs one call.
    fetching: tokio::sync::Mutex<()>,
}

impl ServerlessTokens {
    pub fn from_env() -> ServerlessTokens {
        let host = std::env::var("GCE_METADATA_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "metadata.google.internal".into());
        ServerlessTokens {
            http: std::sync::OnceLock::new(),
            base: format!("http://{host}"),
            cache: DashMap::new(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, audience: &str) -> Option<Arc<str>> {
        let hit = self.cache.get(audience)?;
        (hit.1 > Instant::now()).then(|| Arc::clone(&hit.0))
    }

    /// An ID token for `audience`, from the cache or the metadata server.
    pub async fn token(&self, audience: &str) -> Result<Arc<str>, String> {
        if let Some(t) = self.cached(audience) {
            return Ok(t);
        }
        let _one = self.fetching.lock().await;
        if let Some(t) = self.cached(audience) {
            return Ok(t);
        }
        let url = format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/identity",
            self.base
        );
        let http = self.http.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(TIMEOUT)
                .no_proxy()
                .build()
                .unwrap_or_default()
        });
        let r = http
            .get(url)
            .query(&[("audience", audience), ("format", "full")])
            .header("metadata-flavor", "Google")
            .send()
            .await
            .map_err(|e| format!("metadata server unreachable: {e}"))?;
        let status = r.status();
        let body = r.text().await.map_err(|e| e.to_string())?;
        let token = body.trim();
        // A 404 body must never become a bearer token (it would not even be a valid header).
        if !status.is_success() || token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "metadata server answered {status} for audience {audience}"
            ));
        }
        let token: Arc<str> = Arc::from(token);
        let until = Instant::now() + lifetime(&token).saturating_sub(MARGIN);
        self.cache
            .insert(audience.to_string(), (Arc::clone(&token), until));
        Ok(token)
    }
}

/// How long the JWT has left, read from its (unverified: it is ours to present, not to trust)
/// `exp`.
fn lifetime(jwt: &str) -> Duration {
    use base64::Engine;
    let exp = jwt
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("exp")?.as_u64());
    match exp {
        Some(exp) => Duration::from_secs(exp.saturating_sub(crate::clock::unix_now())),
        None => FALLBACK_LIFETIME,
    }
}

/// The audience Pomerium asks for: `https://` and the host of the route's (last) `to` URL.
pub fn audience(to_host: &str) -> String {
    format!("https://{to_host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt(exp: u64) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b.encode(br#"{"alg":"RS256"}"#),
            b.encode(format!(r#"{{"aud":"https://x","exp":{exp}}}"#))
        )
    }

    #[test]
    fn lifetime_comes_from_exp() {
        let now = crate::clock::unix_now();
        let l = lifetime(&jwt(now + 3600));
        assert!(l > Duration::from_secs(3590) && l <= Duration::from_secs(3600));
        assert_eq!(lifetime(&jwt(now - 10)), Duration::ZERO);
        assert_eq!(lifetime("not-a-jwt"), FALLBACK_LIFETIME);
    }
}
