//! Pomerium's `dns_*` keys: how upstream host names are resolved. Names are resolved when a
//! request needs them, never when the config loads, so a config naming a service that does not
//! exist yet (a compose stack starting in any order, a Kubernetes service created later) starts.

use super::duration::GoDuration;
use super::error::Errors;
use super::raw::RawSettings;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `dns_lookup_family`, Envoy's values as Pomerium passes them on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LookupFamily {
    /// IPv6 when the name has it, else IPv4 (Envoy's `AUTO`).
    Auto,
    V4Only,
    V6Only,
    /// IPv4 when the name has it, else IPv6: Pomerium's default.
    #[default]
    V4Preferred,
    /// Every address of both families.
    All,
}

/// Where names are looked up and how answers are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsSettings {
    pub family: LookupFamily,
    /// Caps how long an answer is kept; `None`: the record's TTL decides (Pomerium sets Envoy's
    /// `respect_dns_ttl`).
    pub refresh_rate: Option<Duration>,
    /// How long a failed lookup is remembered before the next try (requests meanwhile get 502
    /// at once instead of each waiting on the resolver).
    pub failure_refresh_rate: Duration,
    pub query_timeout: Duration,
    pub query_tries: u32,
    pub use_tcp: bool,
    /// Name servers to ask instead of the system's (`/etc/resolv.conf`).
    pub resolvers: Vec<SocketAddr>,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            family: LookupFamily::default(),
            refresh_rate: None,
            failure_refresh_rate: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
            query_tries: 2,
            use_tcp: false,
            resolvers: Vec::new(),
        }
    }
}

pub fn compile(raw: &RawSettings, errs: &mut Errors) -> DnsSettings {
    let mut s = DnsSettings::default();
    if let Some(f) = &raw.dns_lookup_family {
        match family(f) {
            Some(f) => s.family = f,
            None => errs.push(
                "dns_lookup_family",
                format!(
                    "unknown family {f:?}; expected AUTO, V4_ONLY, V6_ONLY, V4_PREFERRED or ALL"
                ),
            ),
        }
    }
    let at_least_1ms = |key: &str, d: Option<GoDuration>, errs: &mut Errors| {
        let d = d?.0;
        if d < Duration::from_millis(1) {
            errs.push(key, "must be at least 1ms");
            return None;
        }
        Some(d)
    };
    s.refresh_rate = at_least_1ms("dns_refresh_rate", raw.dns_refresh_rate, errs);
    if let Some(d) = at_least_1ms(
        "dns_failure_refresh_rate",
        raw.dns_failure_refresh_rate,
        errs,
    ) {
        s.failure_refresh_rate = d;
    }
    if let Some(d) = raw.dns_query_timeout.map(|d| d.0) {
        if d.is_zero() {
            errs.push("dns_query_timeout", "must be positive");
        } else {
            s.query_timeout = d;
        }
    }
    if let Some(t) = raw.dns_query_tries {
        if t == 0 {
            errs.push("dns_query_tries", "must be at least 1");
        } else {
            s.query_tries = t;
        }
    }
    s.use_tcp = raw.dns_use_tcp.unwrap_or(false);
    for (i, r) in raw.dns_resolvers.iter().flat_map(|l| &l.0).enumerate() {
        match name_server(r, s.use_tcp) {
            Ok((addr, tcp)) => {
                s.resolvers.push(addr);
                s.use_tcp |= tcp;
            }
            Err(m) => errs.push(format!("dns_resolvers[{i}]"), m),
        }
    }
    s
}

fn family(v: &str) -> Option<LookupFamily> {
    Some(match v.to_ascii_uppercase().as_str() {
        "AUTO" => LookupFamily::Auto,
        "V4_ONLY" => LookupFamily::V4Only,
        "V6_ONLY" => LookupFamily::V6Only,
        "V4_PREFERRED" | "" => LookupFamily::V4Preferred,
        "ALL" => LookupFamily::All,
        _ => return None,
    })
}

/// `IP`, `IP:port`, `[v6]:port`, or either behind `udp://` / `tcp://` (port 53 by default).
/// Returns the address and whether TCP was asked for.
fn name_server(v: &str, tcp: bool) -> Result<(SocketAddr, bool), String> {
    let (rest, tcp) = match v.split_once("://") {
        Some(("udp", r)) => (r, tcp),
        Some(("tcp", r)) => (r, true),
        Some((s, _)) => {
            return Err(format!(
                "scheme {s}:// is not a name server; use udp:// or tcp://"
            ))
        }
        None => (v, tcp),
    };
    let rest = rest.trim_end_matches('/');
    if let Ok(ip) = rest.parse::<IpAddr>() {
        return Ok((SocketAddr::new(ip, 53), tcp));
    }
    rest.parse::<SocketAddr>()
        .map(|a| (a, tcp))
        .map_err(|_| format!("{v:?} is not an IP address with an optional port (e.g. 10.0.0.2:53)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(yaml: &str) -> (DnsSettings, String) {
        let raw: RawSettings = serde_yaml_ng::from_str(yaml).unwrap();
        let mut errs = Errors::default();
        let s = compile(&raw, &mut errs);
        (s, errs.paths().collect::<Vec<_>>().join(" "))
    }

    #[test]
    fn pomerium_defaults_and_values() {
        let (s, e) = compiled("{}");
        assert_eq!(
            (s.family, s.refresh_rate, e.as_str()),
            (LookupFamily::V4Preferred, None, "")
        );
        let (s, e) = compiled(
            "dns_lookup_family: v6_only\ndns_refresh_rate: 30s\ndns_failure_refresh_rate: 100ms\n\
             dns_resolvers: [\"10.0.0.2\", \"udp://[::1]:5353\", \"tcp://127.0.0.1:53\"]\n",
        );
        assert_eq!(e, "");
        assert_eq!(s.family, LookupFamily::V6Only);
        assert_eq!(s.refresh_rate, Some(Duration::from_secs(30)));
        assert_eq!(s.failure_refresh_rate, Duration::from_millis(100));
        assert_eq!(
            s.resolvers,
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[::1]:5353".parse().unwrap(),
                "127.0.0.1:53".parse().unwrap()
            ]
        );
        assert!(s.use_tcp, "tcp:// asks for TCP");
    }

    #[test]
    fn bad_values_name_their_key() {
        let (_, e) = compiled(
            "dns_lookup_family: V5\ndns_refresh_rate: 0s\ndns_query_timeout: 0s\ndns_resolvers: dns.example\n",
        );
        for key in [
            "dns_lookup_family",
            "dns_refresh_rate",
            "dns_query_timeout",
            "dns_resolvers[0]",
        ] {
            assert!(e.contains(key), "{key} in {e}");
        }
    }
}
