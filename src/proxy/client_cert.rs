//! Step 6: the client certificate (downstream mTLS). The verdict was reached once per connection
//! at the handshake (`server::tls_hooks`); here it meets the route: `Host` must not cross a
//! certificate boundary the connection's SNI did not, and under `policy_with_default_deny` a
//! request without a trusted certificate goes no further (495, never a sign-in redirect).

use super::target::Addressed;
use crate::policy::{CertInput, Reason};
use crate::respond::refusal::Refusal;
use crate::routes::route::{Access, Route};
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::Metrics;
use crate::tls::client_ca::Enforcement;
use crate::tls::peer::{CertState, ConnTls, PeerCert};
use pingora_proxy::Session;
use std::sync::Arc;

/// The connection's TLS facts, when it came over TLS.
pub fn conn(session: &Session) -> Option<&ConnTls> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<ConnTls>()
}

/// What the policy sees of the certificate.
pub fn input(conn: Option<&ConnTls>) -> CertInput<'_> {
    match conn.map(|c| &c.cert) {
        Some(CertState::Trusted(c)) => CertInput::Trusted(c),
        Some(CertState::Untrusted(_)) => CertInput::Untrusted,
        _ => CertInput::Absent,
    }
}

/// The certificate the route may pass upstream (header templates), once the checks passed.
pub fn check(
    conn: Option<&ConnTls>,
    snap: &Snapshot,
    route: &Route,
    at: &Addressed,
    metrics: &Metrics,
    request_id: &str,
) -> Result<Option<Arc<PeerCert>>, Refusal> {
    if let Some(route_ca) = &route.client_ca {
        return per_route(conn, route_ca, route, metrics, request_id);
    }
    let Some(ca) = &snap.settings.client_ca else {
        return Ok(None);
    };
    let needs_cert = |r: &Route| {
        ca.enforcement == Enforcement::PolicyWithDefaultDeny
            || matches!(&r.access, Access::Policy(p) if p.mentions_client_certificate())
    };
    // Domain fronting: a connection made for a host that asks nothing of client certificates
    // must not carry requests for one that does.
    let (host, port, path) = (at.host.as_str(), at.port, at.target.path.as_str());
    if let Some(sni) = conn.and_then(|c| c.sni.as_deref()) {
        if sni != host
            && needs_cert(route)
            && !snap
                .routes
                .find(sni, port, path)
                .is_some_and(|r| needs_cert(r))
        {
            tracing::info!(request_id, %sni, %host, "request refused: Host differs from SNI across a client-certificate boundary");
            return Err(Refusal::Misdirected);
        }
    }
    let cert = input(conn);
    if ca.enforcement == Enforcement::PolicyWithDefaultDeny
        && !matches!(cert, CertInput::Trusted(_))
    {
        let reason = match cert {
            CertInput::Absent => Reason::ClientCertificateRequired,
            _ => Reason::InvalidClientCertificate,
        };
        metrics
            .authorize
            .with_label_values(&[&route.id, "deny", reason.as_str()])
            .inc();
        tracing::info!(request_id, route_id = %route.id, %reason, "request refused: no trusted client certificate");
        return Err(Refusal::ClientCertificate(reason));
    }
    Ok(match conn.map(|c| &c.cert) {
        Some(CertState::Trusted(c)) => Some(Arc::clone(c)),
        _ => None,
    })
}

/// A route with its own client CA (`tls_downstream_client_ca`): the chain the connection
/// presented must verify against it, on every request (so a connection made for another host
/// proves nothing here), else 495.
fn per_route(
    conn: Option<&ConnTls>,
    ca: &crate::tls::client_ca::ClientCa,
    route: &Route,
    metrics: &Metrics,
    request_id: &str,
) -> Result<Option<Arc<PeerCert>>, Refusal> {
    let presented = conn.and_then(|c| c.presented());
    let chain = conn.map_or(&[][..], |c| c.chain.as_slice());
    let reason = match presented {
        None => Reason::ClientCertificateRequired,
        Some(cert) => match ca.check(chain, rustls::pki_types::UnixTime::now()) {
            Ok(()) => return Ok(Some(Arc::clone(cert))),
            Err(why) => {
                tracing::debug!(%why, "client certificate not issued by the route's CA");
                Reason::InvalidClientCertificate
            }
        },
    };
    metrics
        .authorize
        .with_label_values(&[&route.id, "deny", reason.as_str()])
        .inc();
    tracing::info!(request_id, route_id = %route.id, %reason, "request refused: no client certificate from the route's CA");
    Err(Refusal::ClientCertificate(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::target::Addressed;
    use crate::routes::path::Target;

    fn at(host: &str) -> Addressed {
        let target = Target {
            path: "/".into(),
            query: None,
        };
        Addressed::new(target, host.into(), None, "https")
    }

    /// A TLS snapshot with `downstream_mtls` (the CA and the server certificate made here).
    fn mtls_snapshot(enforcement: &str) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["app.test".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let write = |name: &str, pem: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            p.display().to_string()
        };
        let yaml = format!(
            "address: 127.0.0.1:0\ncertificates:\n  - cert: {}\n    key: {}\n\
             downstream_mtls:\n  ca_file: {}\n  enforcement: {enforcement}\n\
             routes:\n  - from: https://app.test\n    to: http://127.0.0.1:9\n    allow_public_unauthenticated_access: true\n",
            write("leaf.pem", leaf.pem()),
            write("leaf.key", key.serialize_pem()),
            write("ca.pem", ca.pem()),
        );
        Snapshot::from_str(&yaml, &|_| None, None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn default_deny_refuses_without_a_trusted_certificate() {
        let metrics = Metrics::new().unwrap();
        let snap = mtls_snapshot("policy_with_default_deny");
        let route = crate::proxy::testing::route_on(&snap, "app.test", 443, "/");
        assert_eq!(
            check(None, &snap, &route, &at("app.test"), &metrics, "rid"),
            Err(Refusal::ClientCertificate(
                Reason::ClientCertificateRequired
            ))
        );
        let snap = mtls_snapshot("policy");
        let route = crate::proxy::testing::route_on(&snap, "app.test", 443, "/");
        assert_eq!(
            check(None, &snap, &route, &at("app.test"), &metrics, "rid"),
            Ok(None),
            "policy mode: only routes that ask care"
        );
        assert!(matches!(input(None), CertInput::Absent));
    }
}
