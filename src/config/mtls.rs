//! `downstream_mtls`: which client certificates Vallum trusts and what happens without one.

use super::error::Errors;
use super::pem::{self, PemSource};
use crate::tls::client_ca::{ClientCa, Enforcement};
use crate::tls::peer::SanKind;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateRevocationListDer;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The block as written (Pomerium's keys).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawDownstreamMtls {
    pub ca: Option<String>,
    pub ca_file: Option<String>,
    pub crl: Option<String>,
    pub crl_file: Option<String>,
    pub enforcement: Option<String>,
    pub match_subject_alt_names: Vec<BTreeMap<String, String>>,
    pub max_verify_depth: Option<u32>,
}

const KEY: &str = "downstream_mtls";

fn source(
    inline: &Option<String>,
    file: &Option<String>,
    name: &str,
    errs: &mut Errors,
) -> Option<PemSource> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            errs.push(
                format!("{KEY}.{name}"),
                format!("set either {name} or {name}_file, not both"),
            );
            None
        }
        (Some(v), None) => Some(PemSource::Inline(v.clone())),
        (None, Some(f)) => Some(PemSource::File(PathBuf::from(f))),
        (None, None) => None,
    }
}

/// `None` when the block is absent (no client certificates are asked for).
/// `match_subject_alt_names`: one SAN type per entry, each a whole-string regex (as in Envoy).
fn san_rules(raw: &RawDownstreamMtls, errs: &mut Errors) -> Vec<(SanKind, regex::Regex)> {
    let mut san_rules = Vec::new();
    for (i, m) in raw.match_subject_alt_names.iter().enumerate() {
        let at = format!("{KEY}.match_subject_alt_names[{i}]");
        if m.len() != 1 {
            errs.push(&at, "each entry names exactly one SAN type: dns, email, ip_address, uri or user_principal_name");
            continue;
        }
        for (k, re) in m {
            let Some(kind) = SanKind::parse(k) else {
                errs.push(
                    format!("{at}.{k}"),
                    "unknown SAN type; expected dns, email, ip_address, uri or user_principal_name",
                );
                continue;
            };
            // The whole SAN must match, as in Envoy.
            match regex::Regex::new(&format!("^(?:{re})$")) {
                Ok(r) => san_rules.push((kind, r)),
                Err(e) => errs.push(format!("{at}.{k}"), format!("invalid regex: {e}")),
            }
        }
    }
    san_rules
}

pub fn compile(
    raw: Option<&RawDownstreamMtls>,
    insecure: bool,
    files: &mut Vec<PathBuf>,
    errs: &mut Errors,
) -> Option<ClientCa> {
    let raw = raw?;
    let enforcement = match raw.enforcement.as_deref() {
        None | Some("policy_with_default_deny") => Enforcement::PolicyWithDefaultDeny,
        Some("policy") => Enforcement::Policy,
        Some("reject_connection") => Enforcement::RejectConnection,
        Some(other) => {
            errs.push(
                format!("{KEY}.enforcement"),
                format!("unknown value {other:?}; expected policy_with_default_deny, policy or reject_connection"),
            );
            return None;
        }
    };
    let Some(ca_src) = source(&raw.ca, &raw.ca_file, "ca", errs) else {
        if raw.ca.is_none() && raw.ca_file.is_none() {
            errs.push(
                format!("{KEY}.ca"),
                "downstream mTLS needs the trusted client CA bundle (ca or ca_file)",
            );
        }
        return None;
    };
    if insecure {
        errs.push(
            KEY,
            "client certificates need TLS, but insecure_server is true",
        );
        return None;
    }
    let path = |n: &str, s: &PemSource| match s {
        PemSource::File(_) => format!("{KEY}.{n}_file"),
        PemSource::Inline(_) => format!("{KEY}.{n}"),
    };
    if let PemSource::File(f) = &ca_src {
        files.push(f.clone());
    }
    let anchors = match pem::read(&ca_src).and_then(|b| pem::certs(&b)) {
        Ok(c) => c,
        Err(e) => {
            errs.push(path("ca", &ca_src), e);
            return None;
        }
    };
    let mut crls = Vec::new();
    if let Some(crl_src) = source(&raw.crl, &raw.crl_file, "crl", errs) {
        if let PemSource::File(f) = &crl_src {
            files.push(f.clone());
        }
        let parsed = pem::read(&crl_src).and_then(|b| {
            let list: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&b)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("bad PEM CRL: {e}"))?;
            if list.is_empty() {
                return Err("no X509 CRL found in PEM".to_string());
            }
            Ok(list)
        });
        match parsed {
            Ok(l) => crls = l,
            Err(e) => {
                errs.push(path("crl", &crl_src), e);
                return None;
            }
        }
    }
    let san_rules = san_rules(raw, errs);
    // Pomerium's default is 1 (only certificates issued directly by a trusted CA); 0 = no limit.
    let max_depth = match raw.max_verify_depth.unwrap_or(1) {
        0 => None,
        n => Some(n as usize),
    };
    match ClientCa::new(enforcement, anchors, crls, max_depth, san_rules) {
        Ok(ca) => Some(ca),
        Err(e) => {
            errs.push(KEY, e);
            None
        }
    }
}
