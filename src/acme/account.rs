//! The ACME account: restored from the store or `autocert_dir`, else registered (with the
//! contact email and external account binding when configured) and kept for the next start.

use super::http::Transport;
use super::keep::Keep;
use crate::config::autocert::Autocert;
use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};

pub async fn open(cfg: &Autocert, keep: &Keep) -> Result<Account, String> {
    let transport = || Transport::new(&cfg.trusted_ca).map(|t| Box::new(t) as Box<_>);
    if let Some(json) = keep.load_account(&cfg.directory_url).await {
        match serde_json::from_str::<AccountCredentials>(&json) {
            Ok(creds) => {
                return Account::builder_with_http(transport()?)
                    .from_credentials(creds)
                    .await
                    .map_err(|e| format!("cannot restore the ACME account: {e}"))
            }
            Err(e) => {
                tracing::warn!(error = %e, "autocert: stored ACME account unreadable; registering a new one")
            }
        }
    }
    let contact = cfg.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = cfg
        .eab
        .as_ref()
        .map(|(id, key)| ExternalAccountKey::new(id.clone(), key));
    let (account, creds) = Account::builder_with_http(transport()?)
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory_url.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(|e| format!("cannot register with {}: {e}", cfg.directory_url))?;
    tracing::info!(directory = %cfg.directory_url, account = account.id(), "autocert: ACME account registered");
    let json = serde_json::to_string(&creds).map_err(|e| e.to_string())?;
    if let Err(e) = keep.save_account(&cfg.directory_url, &json).await {
        tracing::warn!(error = %e, "autocert: cannot keep the ACME account");
    }
    Ok(account)
}
