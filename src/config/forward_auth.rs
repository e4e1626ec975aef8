//! Forward auth: Vallum as the decision point beside an ingress that proxies itself (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik ForwardAuth, Envoy `ext_authz`). Plain data;
//! the endpoint is `proxy::verify`.
//!
//! - `forward_auth_url` (Pomerium, removed in its v0.21): the host on which Vallum answers the
//!   ingress's sub-requests (`/verify?uri=…`, `/?uri=…`, or the forwarded headers).
//! - `forward_auth_ingresses` (Vallum): the peers whose sub-requests are believed, since a
//!   sub-request names the request it is about; anyone else could ask about a URL it is not
//!   requesting. Loopback by default.

use super::error::Errors;
use super::ops::nets;
use super::raw::RawSettings;
use ipnet::IpNet;

#[derive(Debug, Clone)]
pub struct ForwardAuth {
    /// The verify host, lower-case, without port.
    pub host: String,
    /// Its port when the URL names one.
    pub port: Option<u16>,
    pub ingresses: Vec<IpNet>,
}

impl ForwardAuth {
    pub fn serves(&self, host: &str, port: u16) -> bool {
        self.host == host && self.port.is_none_or(|p| p == port)
    }

    pub fn trusts(&self, peer: Option<std::net::IpAddr>) -> bool {
        peer.is_some_and(|ip| self.ingresses.iter().any(|n| n.contains(&ip)))
    }
}

pub fn compile(raw: &RawSettings, errs: &mut Errors) -> Option<ForwardAuth> {
    let ingresses = match &raw.forward_auth_ingresses {
        Some(list) => nets("forward_auth_ingresses", list, errs),
        None => ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect(),
    };
    let url = raw.forward_auth_url.as_deref()?.trim();
    let parsed = url::Url::parse(url).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    let Some(u) = parsed else {
        errs.push(
            "forward_auth_url",
            format!("{url:?} is not an http:// or https:// URL with a host"),
        );
        return None;
    };
    if u.path() != "/" || u.query().is_some() {
        errs.push(
            "forward_auth_url",
            "names a host only: the endpoints are /verify and / on it",
        );
    }
    Some(ForwardAuth {
        host: u
            .host_str()
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_ascii_lowercase(),
        port: u.port(),
        ingresses,
    })
}
