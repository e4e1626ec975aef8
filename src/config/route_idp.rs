//! Which identity providers a route signs users in with: the global one, Pomerium's per-route
//! overrides (`idp_provider`, `idp_provider_url`, `idp_client_id`, `idp_client_secret(_file)`),
//! or (Vallum) `idp_choices`, several providers the user picks from on a sign-in page.
//!
//! Each distinct provider (kind, issuer, client id) has a key; sessions remember the key they
//! were made with and live in a cookie of their own, so a session from one provider never
//! satisfies a route bound to another, and a user may be signed in to several at once. The global
//! provider's key is empty: its cookie keeps Pomerium's name and sessions made before per-route
//! providers existed stay valid.

use super::error::Errors;
use super::idp::IdpSettings;
use super::secret::Secret;
use serde::Deserialize;
use std::sync::Arc;

/// One entry of a route's `idp_choices`; unset keys fall back to the global provider's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdpChoice {
    /// What the sign-in page calls it.
    pub name: Option<String>,
    pub idp_provider: Option<String>,
    pub idp_provider_url: Option<String>,
    pub idp_client_id: Option<String>,
    pub idp_client_secret: Option<Secret>,
    pub idp_client_secret_file: Option<String>,
}

impl RawIdpChoice {
    fn overrides(&self) -> bool {
        self.idp_provider.is_some()
            || self.idp_provider_url.is_some()
            || self.idp_client_id.is_some()
            || self.idp_client_secret.is_some()
            || self.idp_client_secret_file.is_some()
    }
}

/// A provider a route accepts.
#[derive(Debug)]
pub struct RouteIdp {
    /// Empty for the global provider; else a short hash of (kind, issuer, client id).
    pub key: String,
    /// The sign-in page's name for it.
    pub label: String,
    pub settings: Arc<IdpSettings>,
}

/// The key of a provider that is not the global one.
pub fn key_of(s: &IdpSettings) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{}|{}|{}", s.provider, s.issuer, s.client_id).as_bytes());
    h.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The route's providers: empty when it uses only the global one (the common case, and the
/// cheapest: no work per request).
pub fn compile(
    own: &RawIdpChoice,
    choices: Option<&[RawIdpChoice]>,
    global: Option<&IdpSettings>,
    base: &str,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Arc<[Arc<RouteIdp>]> {
    let p = |k: &str| format!("{base}.{k}");
    match choices {
        Some(list) => {
            if own.overrides() {
                errs.push(
                    p("idp_choices"),
                    "cannot be combined with the route's own idp_* keys: put them in a choice",
                );
                return Arc::from([]);
            }
            if list.is_empty() {
                errs.push(p("idp_choices"), "must list at least one provider");
            }
            let mut out: Vec<Arc<RouteIdp>> = Vec::new();
            for (i, c) in list.iter().enumerate() {
                let at = format!("{}[{i}]", p("idp_choices"));
                let label = match c.name.as_deref().map(str::trim) {
                    Some(n) if !n.is_empty() => n.to_string(),
                    _ => {
                        errs.push(format!("{at}.name"), "required: the sign-in page shows it");
                        continue;
                    }
                };
                let Some(idp) = one(c, global, &at, files, errs) else {
                    continue;
                };
                if out.iter().any(|o| o.key == idp.key) {
                    errs.push(
                        at,
                        "names the same provider and client as an earlier choice",
                    );
                    continue;
                }
                out.push(Arc::new(RouteIdp { label, ..idp }));
            }
            out.into()
        }
        None if own.overrides() => match one(own, global, base, files, errs) {
            Some(idp) if idp.key.is_empty() => Arc::from([]),
            Some(idp) => Arc::from([Arc::new(idp)]),
            None => Arc::from([]),
        },
        None => Arc::from([]),
    }
}

/// One provider: `c`'s keys over the global provider's.
fn one(
    c: &RawIdpChoice,
    global: Option<&IdpSettings>,
    base: &str,
    files: &mut Vec<std::path::PathBuf>,
    errs: &mut Errors,
) -> Option<RouteIdp> {
    let p = |k: &str| format!("{base}.{k}");
    let label = c.name.clone().unwrap_or_default();
    if !c.overrides() {
        let Some(g) = global else {
            errs.push(
                base,
                "uses the global identity provider, and none is configured",
            );
            return None;
        };
        return Some(RouteIdp {
            key: String::new(),
            label,
            settings: Arc::new(g.clone()),
        });
    }
    let provider = c
        .idp_provider
        .as_deref()
        .map(str::to_ascii_lowercase)
        .or_else(|| global.map(|g| g.provider.clone()))
        .unwrap_or_else(|| "oidc".into());
    super::idp::check_provider(&provider, &p("idp_provider"), errs);
    let same_kind = global.is_some_and(|g| g.provider == provider);
    let issuer = match (&c.idp_provider_url, global) {
        (None, Some(g)) if same_kind => Some(g.issuer.clone()),
        (url, _) => super::idp::issuer_url(url.as_deref(), &provider, &p("idp_provider_url"), errs),
    }?;
    let client_id = c
        .idp_client_id
        .clone()
        .or_else(|| global.map(|g| g.client_id.clone()))
        .filter(|id| !id.is_empty());
    let Some(client_id) = client_id else {
        errs.push(
            p("idp_client_id"),
            "required: the client id registered at this provider",
        );
        return None;
    };
    let secret = super::auth::inline_or_file(
        c.idp_client_secret.as_deref(),
        &c.idp_client_secret_file,
        &p("idp_client_secret"),
        files,
        errs,
    );
    let base_settings = global.filter(|_| same_kind);
    let request_params = super::idp::with_provider_params(
        base_settings
            .map(|g| g.request_params.clone())
            .unwrap_or_default(),
        &provider,
    );
    let settings = IdpSettings {
        form_post: super::idp::posts_answer(&request_params),
        request_params,
        client_secret: secret
            .or_else(|| global.map(|g| g.client_secret.clone()))
            .unwrap_or_default(),
        scopes: base_settings
            .map(|g| g.scopes.clone())
            .unwrap_or_else(|| super::idp::default_scopes(&provider)),
        groups_claim: global.map_or_else(|| "groups".into(), |g| g.groups_claim.clone()),
        refresh_claims_interval: global.map_or(std::time::Duration::from_secs(600), |g| {
            g.refresh_claims_interval
        }),
        provider,
        issuer,
        client_id,
    };
    let is_global = global.is_some_and(|g| key_of(g) == key_of(&settings));
    Some(RouteIdp {
        key: if is_global {
            String::new()
        } else {
            key_of(&settings)
        },
        label,
        settings: Arc::new(settings),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global() -> IdpSettings {
        IdpSettings {
            provider: "oidc".into(),
            issuer: url::Url::parse("https://idp.example.com").unwrap(),
            client_id: "vallum".into(),
            client_secret: "s".into(),
            scopes: vec!["openid".into(), "groups".into()],
            request_params: vec![],
            groups_claim: "roles".into(),
            refresh_claims_interval: std::time::Duration::from_secs(60),
            form_post: false,
        }
    }

    fn compiled(
        own: RawIdpChoice,
        choices: Option<Vec<RawIdpChoice>>,
    ) -> (Arc<[Arc<RouteIdp>]>, Vec<String>) {
        let mut errs = Errors::default();
        let out = compile(
            &own,
            choices.as_deref(),
            Some(&global()),
            "routes[0]",
            &mut Vec::new(),
            &mut errs,
        );
        let msgs = errs.into_errors().0.iter().map(|e| e.to_string()).collect();
        (out, msgs)
    }

    #[test]
    fn a_client_id_override_is_another_provider_with_the_global_issuer_and_scopes() {
        let (idps, errs) = compiled(
            RawIdpChoice {
                idp_client_id: Some("partners".into()),
                idp_client_secret: Some(Secret::new("p")),
                ..Default::default()
            },
            None,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(idps.len(), 1);
        let s = &idps[0].settings;
        assert_eq!(
            (s.client_id.as_str(), s.client_secret.as_str()),
            ("partners", "p")
        );
        assert_eq!(s.issuer.as_str(), "https://idp.example.com/");
        assert_eq!(s.groups_claim, "roles");
        assert_eq!(idps[0].key.len(), 12);
        assert_ne!(idps[0].key, key_of(&global()));
    }

    #[test]
    fn an_override_equal_to_the_global_provider_is_the_global_provider() {
        let (idps, errs) = compiled(
            RawIdpChoice {
                idp_client_id: Some("vallum".into()),
                ..Default::default()
            },
            None,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert!(idps.is_empty(), "no per-route work for the global provider");
    }

    #[test]
    fn choices_keep_their_order_and_the_global_entry_has_the_empty_key() {
        let (idps, errs) = compiled(
            RawIdpChoice::default(),
            Some(vec![
                RawIdpChoice {
                    name: Some("Staff".into()),
                    ..Default::default()
                },
                RawIdpChoice {
                    name: Some("Partners".into()),
                    idp_provider_url: Some("https://partners.example.com".into()),
                    idp_client_id: Some("p".into()),
                    ..Default::default()
                },
            ]),
        );
        assert!(errs.is_empty(), "{errs:?}");
        let got: Vec<(&str, bool)> = idps
            .iter()
            .map(|i| (i.label.as_str(), i.key.is_empty()))
            .collect();
        assert_eq!(got, [("Staff", true), ("Partners", false)]);
        assert_eq!(
            idps[1].settings.issuer.as_str(),
            "https://partners.example.com/"
        );
    }

    #[test]
    fn bad_choices_are_named() {
        let (_, errs) = compiled(
            RawIdpChoice {
                idp_client_id: Some("x".into()),
                ..Default::default()
            },
            Some(vec![RawIdpChoice::default()]),
        );
        assert!(errs.join("\n").contains("cannot be combined"), "{errs:?}");
        let (_, errs) = compiled(
            RawIdpChoice::default(),
            Some(vec![
                RawIdpChoice::default(),
                RawIdpChoice {
                    name: Some("Again".into()),
                    idp_provider: Some("saml".into()),
                    ..Default::default()
                },
                RawIdpChoice {
                    name: Some("A".into()),
                    ..Default::default()
                },
                RawIdpChoice {
                    name: Some("B".into()),
                    ..Default::default()
                },
            ]),
        );
        let all = errs.join("\n");
        for want in [
            "routes[0].idp_choices[0].name: required",
            "routes[0].idp_choices[1].idp_provider: \"saml\" is not supported",
            "routes[0].idp_choices[3]: names the same provider",
        ] {
            assert!(all.contains(want), "{want} missing from {all}");
        }
    }
}
