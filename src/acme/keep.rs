//! Where ACME material is kept: `autocert_dir` (survives restarts of a single node) and the
//! session store's sealed records (shared by a fleet on Redis or PostgreSQL). Reads prefer
//! whichever copy expires later, so a certificate a peer renewed replaces an older one on disk.

use super::cert::Issued;
use crate::session::SessionStore;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long one node holds the fleet's claim on ordering a host (an order takes seconds; a node
/// that dies mid-order frees the host after this).
pub const ORDER_CLAIM: Duration = Duration::from_secs(120);
/// Challenges expire from the store after this even if the node that set them died.
const CHALLENGE_TTL: u64 = 600;

pub fn cert_key(host: &str) -> String {
    format!("autocert/cert/{host}")
}

pub fn http01_key(token: &str) -> String {
    format!("autocert/http-01/{token}")
}

pub fn alpn01_key(host: &str) -> String {
    format!("autocert/tls-alpn-01/{host}")
}

fn account_key(directory: &str) -> String {
    format!("autocert/account/{}", directory_id(directory))
}

fn directory_id(directory: &str) -> String {
    Sha256::digest(directory.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Host names and tokens become file names and store keys: only the characters DNS names and
/// base64url tokens use.
pub fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

pub struct Keep {
    dir: PathBuf,
    store: Arc<dyn SessionStore>,
}

impl Keep {
    pub fn new(dir: &Path, store: Arc<dyn SessionStore>) -> Keep {
        Keep {
            dir: dir.to_path_buf(),
            store,
        }
    }

    fn cert_path(&self, host: &str) -> PathBuf {
        self.dir.join("certificates").join(format!("{host}.pem"))
    }

    /// The stored certificate for `host` that expires last, if any covers it.
    pub async fn load(&self, host: &str) -> Option<Issued> {
        let disk = tokio::fs::read_to_string(self.cert_path(host))
            .await
            .ok()
            .and_then(|pem| Issued::from_pem(&pem).ok());
        let shared = match self.store.get_record(&cert_key(host)).await {
            Ok(Some(raw)) => String::from_utf8(raw)
                .ok()
                .and_then(|pem| Issued::from_pem(&pem).ok()),
            _ => None,
        };
        [disk, shared]
            .into_iter()
            .flatten()
            .filter(|i| i.covers(host) && i.not_after > SystemTime::now())
            .max_by_key(|i| i.not_after)
    }

    /// Writes to disk (key readable by the owner only) and to the store until it expires.
    pub async fn save(&self, host: &str, issued: &Issued) -> Result<(), String> {
        write_private(&self.cert_path(host), issued.pem.as_bytes()).await?;
        let ttl = issued
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs()
            .max(1);
        self.store
            .put_record(&cert_key(host), issued.pem.clone().into_bytes(), ttl)
            .await
            .map_err(|e| e.to_string())
    }

    /// True when this node may order `host` now: no other node of the fleet is ordering it.
    pub async fn claim(&self, host: &str) -> Result<bool, String> {
        self.store
            .claim_once(&format!("autocert/order/{host}"), ORDER_CLAIM.as_secs())
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn load_account(&self, directory: &str) -> Option<String> {
        if let Ok(Some(raw)) = self.store.get_record(&account_key(directory)).await {
            if let Ok(json) = String::from_utf8(raw) {
                return Some(json);
            }
        }
        let path = self
            .dir
            .join(format!("account-{}.json", directory_id(directory)));
        tokio::fs::read_to_string(path).await.ok()
    }

    pub async fn save_account(&self, directory: &str, json: &str) -> Result<(), String> {
        let path = self
            .dir
            .join(format!("account-{}.json", directory_id(directory)));
        write_private(&path, json.as_bytes()).await?;
        self.store
            .put_record(&account_key(directory), json.as_bytes().to_vec(), 0)
            .await
            .map_err(|e| e.to_string())
    }

    /// Publishes a challenge answer to the fleet (`key` from `http01_key`/`alpn01_key`).
    pub async fn publish(&self, key: &str, value: Vec<u8>) {
        if let Err(e) = self.store.put_record(key, value, CHALLENGE_TTL).await {
            tracing::warn!(error = %e, "autocert: cannot share a challenge with the fleet");
        }
    }

    pub async fn withdraw(&self, key: &str) {
        let _ = self.store.delete_record(key).await;
    }
}

/// Owner-only and atomic (`crypto::private_file`), off the async threads.
async fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    let (path, data) = (path.to_path_buf(), data.to_vec());
    tokio::task::spawn_blocking(move || {
        crate::crypto::private_file::write(&path, &data)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dns_and_token_characters_make_names() {
        assert!(safe_name("app.example.com"));
        assert!(safe_name("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        for bad in ["", "../etc/passwd", "a/b", ".hidden", "a b", "a\0b"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }
}
