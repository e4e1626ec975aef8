//! The live snapshot: everything the request path reads (settings, route table, upstream pools,
//! certificates), compiled by the control plane and swapped atomically with `arc-swap`. A request
//! does one `load` and keeps that snapshot to its end, so a reload never changes a request midway.

pub mod auth;

use crate::config::auth::GeneratedSecrets;
use crate::config::error::{ConfigErrors, Errors};
use crate::config::load::{self, RawConfig};
use crate::config::settings::{self, Settings};
use crate::routes::compile;
use crate::routes::RouteTable;
use crate::upstream::compile::Ctx;
use crate::upstream::Pool;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

#[derive(Debug)]
pub struct Snapshot {
    pub settings: Settings,
    pub routes: RouteTable,
    /// Upstream pools by definition, reused by the next snapshot where unchanged.
    pub pools: HashMap<String, Arc<Pool>>,
    /// SHA-256 of the config text, hex; identifies what is being served.
    pub checksum: String,
    /// Every file this snapshot was built from (config, certificates, CAs): the reload watch list.
    pub files: Vec<PathBuf>,
    /// Things worth telling the operator that are not errors.
    pub warnings: Vec<String>,
    /// The secrets used where the config sets none: made at boot, handed from each snapshot to
    /// the next so a reload keeps them.
    pub generated: Arc<GeneratedSecrets>,
    /// What signing in needs beyond the config: the assertion signer and the opened-cookie
    /// cache, both per snapshot (a new key starts with empty caches).
    pub auth_keys: Option<auth::AuthKeys>,
    /// Some route has its own client CA (`tls_downstream_client_ca`): the listener asks for
    /// client certificates and keeps the chain for the per-request check.
    pub route_client_cas: bool,
}

/// Reads the process environment (the `env` parameter of `build_from_str` in production).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Snapshot {
    /// Looks up every upstream host name once and says which do not resolve here. For
    /// `check-config`: a warning, never an error, since the gateway looks names up when a
    /// request needs them and the machine checking may not be the one serving.
    pub async fn unresolved_names(&self) -> Vec<String> {
        use crate::routes::route::Action;
        let mut all = Vec::new();
        for r in self.routes.iter() {
            match &r.action {
                Action::Upstream(pool) => all.extend(pool.names().cloned()),
                Action::Tunnel(names) => all.push(Arc::clone(names)),
                _ => {}
            }
        }
        let lookups = all.iter().map(|n| async move {
            n.refresh().await;
            n.peek().failures().to_vec()
        });
        let mut failed: Vec<String> = futures_util::future::join_all(lookups)
            .await
            .into_iter()
            .flatten()
            .collect();
        failed.sort();
        failed.dedup();
        failed
            .into_iter()
            .map(|f| format!("cannot resolve {f} (looked up again when a request needs it)"))
            .collect()
    }

    /// The sign-in settings with the keys built for them, when sign-in is configured.
    pub fn auth(&self) -> Option<auth::Auth<'_>> {
        Some(auth::Auth {
            settings: self.settings.auth.as_ref()?,
            keys: self.auth_keys.as_ref()?,
        })
    }

    /// Builds a snapshot from a config file, reusing unchanged pools of `previous`.
    pub fn from_file(path: &Path, previous: Option<&Snapshot>) -> Result<Snapshot, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![crate::config::ConfigError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        let mut rt = Self::from_text(&text, Some(path), &process_env, previous)?;
        rt.files.insert(0, path.to_path_buf());
        Ok(rt)
    }

    pub fn from_str(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigErrors> {
        Self::from_text(text, None, env, previous)
    }

    fn from_text(
        text: &str,
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut errs = Errors::default();
        let Some(raw) = load::parse(text, env, &mut errs) else {
            return Err(errs.into_errors().locate(text, file));
        };
        let checksum = hex(&Sha256::digest(text.as_bytes()));
        Self::compile(&raw, checksum, previous, errs).map_err(|e| e.locate(text, file))
    }

    fn compile(
        raw: &RawConfig,
        checksum: String,
        previous: Option<&Snapshot>,
        mut errs: Errors,
    ) -> Result<Snapshot, ConfigErrors> {
        let generated = previous
            .map(|p| Arc::clone(&p.generated))
            .unwrap_or_else(|| Arc::new(GeneratedSecrets::generate()));
        let mut settings = if raw.settings_ok {
            settings::compile(&raw.settings, &generated, &mut errs)
        } else {
            // Already reported; checking the defaults in its place would only add noise.
            settings::compile(&raw.settings, &generated, &mut Errors::default())
        };
        let empty = HashMap::new();
        let mut ctx = Ctx {
            settings: &settings,
            previous_pools: previous.map(|p| &p.pools).unwrap_or(&empty),
            pools: HashMap::new(),
            files: settings.files.clone(),
            warnings: settings.warnings.clone(),
            resolver: Arc::new(crate::upstream::dns::Resolver::new(settings.dns.clone())),
            needs_sign_in: false,
        };
        let key = raw.routes_key;
        let mut routes = Vec::new();
        for (i, r) in raw.routes.iter().enumerate() {
            let Some(r) = r else { continue };
            if let Some(route) = compile::compile(r, i, &format!("{key}[{i}]"), &mut ctx, &mut errs)
            {
                // A `device: {type: …}` must name a configured device type: a typo would
                // otherwise lock everyone out with no hint why.
                if let crate::routes::route::Access::Policy(p) = &route.access {
                    for t in p.device_types_named() {
                        if !settings.device_types.iter().any(|d| d.id == t) {
                            errs.push(
                                format!("{key}[{i}].policy"),
                                format!("device type {t:?} is not configured (built in: any, enclave_only; add others under device_types)"),
                            );
                        }
                    }
                }
                routes.push(Arc::new(route));
            }
        }
        let Ctx {
            pools,
            files,
            mut warnings,
            needs_sign_in,
            ..
        } = ctx;
        errs.settle_sign_in(needs_sign_in);
        if routes.is_empty() && errs.is_empty() {
            warnings.push("no routes are configured: every request will get 404".into());
        }
        if settings.fallback_certificate {
            fallback_certificate(&mut settings, &routes, &generated, &mut warnings, &mut errs);
        }
        warnings.extend(errs.take_warnings());
        errs.into_result(())?;
        Ok(Snapshot {
            route_client_cas: routes.iter().any(|r| r.client_ca.is_some()),
            auth_keys: settings.auth.as_ref().map(auth::AuthKeys::new),
            generated,
            routes: RouteTable::new(routes),
            settings,
            pools,
            checksum,
            files,
            warnings,
        })
    }
}

/// TLS is on and no certificate is configured: a self-signed one for every route host and the
/// authenticate host, its key derived from `shared_secret` (Pomerium's behaviour too).
fn fallback_certificate(
    settings: &mut Settings,
    routes: &[Arc<crate::routes::Route>],
    generated: &GeneratedSecrets,
    warnings: &mut Vec<String>,
    errs: &mut Errors,
) {
    use crate::routes::route::HostPattern;
    let mut hosts: Vec<String> = routes
        .iter()
        .filter_map(|r| match &r.host {
            HostPattern::Exact(h) => Some(h.clone()),
            HostPattern::Wildcard(s) if !s.is_empty() => Some(format!("*.{s}")),
            HostPattern::Wildcard(_) => None,
        })
        .collect();
    if let Some(host) = settings
        .auth
        .as_ref()
        .and_then(|a| a.authenticate_url.host_str())
    {
        hosts.push(host.to_ascii_lowercase());
    }
    hosts.sort();
    hosts.dedup();
    if hosts.is_empty() {
        hosts.push("localhost".into());
    }
    let secret = match &settings.auth {
        Some(a) => &a.shared_secret,
        None => &generated.shared_secret,
    };
    match crate::tls::fallback::self_signed(secret, &hosts) {
        // With autocert it is only what a handshake gets before its host's certificate arrives.
        Ok(ck) if settings.autocert.is_some() => {
            settings.certs = crate::tls::CertStore::new(vec![(ck, Vec::new())]);
        }
        Ok(ck) => {
            warnings.push(format!(
                "TLS is on and no certificate is configured: serving a self-signed certificate for {} \
                 (browsers will not trust it; set `certificates` or certificate_file/certificate_key_file, \
                 or set insecure_server: true behind a TLS terminator)",
                hosts.join(", ")
            ));
            settings.certs = crate::tls::CertStore::new(vec![(ck, hosts)]);
        }
        Err(e) => errs.push("certificates", e),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod redaction_tests;
