//! Workload identities (Pomerium's `identity_providers`): issuers whose JWTs routes with
//! `bearer_token_format: jwt` accept as `Authorization: Bearer` — Kubernetes service-account
//! tokens, GitHub Actions OIDC tokens, SPIFFE JWT-SVIDs, any issuer that publishes a JWKS. They
//! are not sign-in providers: nobody is redirected to them. Plain data; verification is
//! `identity::workload`.

use super::error::Errors;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use url::Url;

/// One entry of `identity_providers`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkloadIssuer {
    pub issuer: Option<String>,
    /// Where the issuer's keys are; unset: its OpenID discovery document's `jwks_uri`.
    pub jwks_url: Option<String>,
    /// The token's `aud` must be one of these (required: a token minted for another service
    /// must not open this one).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Signature algorithms accepted; unset: every asymmetric one.
    pub supported_algs: Option<Vec<String>>,
}

/// A verified-ready issuer.
#[derive(Debug, PartialEq, Eq)]
pub struct WorkloadIssuer {
    /// The map key: labels the caller in logs and namespaces its user id (`name/sub`), so two
    /// issuers' subjects never collide.
    pub name: String,
    /// The exact `iss` its tokens carry.
    pub issuer: String,
    pub jwks_url: Option<Url>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
}

impl WorkloadIssuer {
    /// The URL its keys are read from, or its discovery document when none is given.
    pub fn keys_source(&self) -> String {
        match &self.jwks_url {
            Some(u) => u.to_string(),
            None => format!(
                "{}/.well-known/openid-configuration",
                self.issuer.trim_end_matches('/')
            ),
        }
    }
}

/// Asymmetric algorithms only: an HMAC "key" in a public JWKS would let anyone sign.
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

pub fn compile(
    raw: Option<&BTreeMap<String, RawWorkloadIssuer>>,
    errs: &mut Errors,
) -> Vec<Arc<WorkloadIssuer>> {
    let mut out = Vec::new();
    for (name, entry) in raw.into_iter().flatten() {
        let key = |k: &str| format!("identity_providers.{name}.{k}");
        if name.is_empty() || name.contains('/') {
            errs.push(
                "identity_providers",
                format!("{name:?}: a provider name must be non-empty and contain no '/'"),
            );
            continue;
        }
        let issuer = match entry.issuer.as_deref().map(str::trim) {
            Some(i) if i.starts_with("kubernetes:") => {
                errs.push(
                    key("issuer"),
                    "in-cluster discovery (kubernetes:///) is not supported: give the cluster's \
                     service-account issuer URL (kubectl get --raw /.well-known/openid-configuration) \
                     and, if its keys are not public, a jwks_url",
                );
                continue;
            }
            Some(i) if !i.is_empty() => i.to_string(),
            _ => {
                errs.push(key("issuer"), "required: the exact iss of the tokens");
                continue;
            }
        };
        let jwks_url = entry.jwks_url.as_deref().and_then(|u| match Url::parse(u) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some() => Some(u),
            _ => {
                errs.push(key("jwks_url"), format!("{u:?} is not an http(s) URL"));
                None
            }
        });
        let discoverable =
            Url::parse(&issuer).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
        if entry.jwks_url.is_none() && !discoverable {
            errs.push(
                key("jwks_url"),
                "required when the issuer is not an http(s) URL (a SPIFFE trust domain, for one): \
                 there is no discovery document to find the keys in",
            );
        }
        let audiences: Vec<String> = entry
            .audiences
            .iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            errs.push(
                key("audiences"),
                "required: at least one audience the tokens must be minted for",
            );
        }
        let algorithms = algorithms(
            entry.supported_algs.as_deref(),
            &key("supported_algs"),
            errs,
        );
        out.push(Arc::new(WorkloadIssuer {
            name: name.clone(),
            issuer,
            jwks_url,
            audiences,
            algorithms,
        }));
    }
    out
}

fn algorithms(raw: Option<&[String]>, key: &str, errs: &mut Errors) -> Vec<Algorithm> {
    let Some(list) = raw else {
        return ASYMMETRIC.to_vec();
    };
    let mut out = Vec::new();
    for a in list {
        match a.parse::<Algorithm>() {
            Ok(alg) if ASYMMETRIC.contains(&alg) => out.push(alg),
            Ok(_) => errs.push(
                key,
                format!("{a}: symmetric algorithms cannot be verified with public keys"),
            ),
            Err(_) => errs.push(key, format!("{a}: unknown algorithm")),
        }
    }
    if list.is_empty() {
        errs.push(key, "must name at least one algorithm");
    }
    out
}

/// The issuers a route accepts: its `identity_providers` allowlist (every name must exist),
/// else all of them. Only meaningful with `bearer_token_format: jwt`.
pub fn for_route(
    allow: Option<&[String]>,
    jwt: bool,
    all: &[Arc<WorkloadIssuer>],
    key: &str,
    errs: &mut Errors,
) -> Arc<[Arc<WorkloadIssuer>]> {
    if !jwt {
        if allow.is_some() {
            errs.push(key, "only applies with bearer_token_format: jwt");
        }
        return Arc::from([]);
    }
    if all.is_empty() {
        errs.push(
            key.replace("identity_providers", "bearer_token_format"),
            "jwt needs at least one entry in the global identity_providers",
        );
        return Arc::from([]);
    }
    let Some(names) = allow else {
        return all.iter().cloned().collect();
    };
    let mut out = Vec::new();
    for n in names {
        match all.iter().find(|i| &i.name == n) {
            Some(i) => out.push(Arc::clone(i)),
            None => errs.push(
                key,
                format!("{n:?} is not in the global identity_providers"),
            ),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(yaml: &str) -> (Vec<Arc<WorkloadIssuer>>, Vec<String>) {
        let raw: BTreeMap<String, RawWorkloadIssuer> = match serde_yaml_ng::from_str(yaml) {
            Ok(r) => r,
            Err(e) => panic!("test yaml: {e}"),
        };
        let mut errs = Errors::default();
        let out = compile(Some(&raw), &mut errs);
        (out, messages(errs))
    }

    fn messages(errs: Errors) -> Vec<String> {
        errs.into_errors().0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_complete_entry_compiles_with_every_asymmetric_algorithm_by_default() {
        let (out, errs) = compiled(
            "github:\n  issuer: https://token.actions.githubusercontent.com\n  audiences: [vallum]\n",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(out[0].name, "github");
        assert!(out[0].algorithms.contains(&Algorithm::RS256));
        assert!(!out[0].algorithms.contains(&Algorithm::HS256));
        assert_eq!(
            out[0].keys_source(),
            "https://token.actions.githubusercontent.com/.well-known/openid-configuration"
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let (_, errs) = compiled(
            "k8s:\n  issuer: kubernetes:///\n  audiences: [a]\n\
             spiffe:\n  issuer: spiffe://example.org\n  audiences: []\n  supported_algs: [HS256, XX1]\n\
             'a/b':\n  issuer: https://x\n  audiences: [a]\n",
        );
        let all = errs.join("\n");
        for want in [
            "identity_providers.k8s.issuer",
            "identity_providers.spiffe.jwks_url",
            "identity_providers.spiffe.audiences",
            "HS256: symmetric",
            "XX1: unknown algorithm",
            "contain no '/'",
        ] {
            assert!(all.contains(want), "{want} missing from {all}");
        }
    }

    #[test]
    fn a_route_allowlist_names_existing_providers_and_needs_the_jwt_format() {
        let (all, _) = compiled(
            "a:\n  issuer: https://a\n  audiences: [x]\nb:\n  issuer: https://b\n  audiences: [x]\n",
        );
        let mut errs = Errors::default();
        let only_b = for_route(
            Some(&["b".into()]),
            true,
            &all,
            "routes[0].identity_providers",
            &mut errs,
        );
        assert_eq!(only_b.len(), 1);
        assert_eq!(only_b[0].name, "b");
        assert_eq!(for_route(None, true, &all, "k", &mut errs).len(), 2);
        assert!(errs.is_empty());
        for_route(
            Some(&["c".into()]),
            true,
            &all,
            "routes[0].identity_providers",
            &mut errs,
        );
        for_route(
            Some(&["a".into()]),
            false,
            &all,
            "routes[1].identity_providers",
            &mut errs,
        );
        for_route(None, true, &[], "routes[2].identity_providers", &mut errs);
        let all = messages(errs).join("\n");
        assert!(all.contains("\"c\" is not in the global"), "{all}");
        assert!(
            all.contains("only applies with bearer_token_format: jwt"),
            "{all}"
        );
        assert!(all.contains("routes[2].bearer_token_format"), "{all}");
    }
}
