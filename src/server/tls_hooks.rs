//! The TLS hooks the listeners install: the SNI certificate resolver, the client-certificate
//! verifier and the handshake recorder. Each reads the live snapshot per handshake, so a reload
//! that renews a certificate or changes `downstream_mtls` applies to the next connection without
//! restarting a listener. Under `reject_connection` the handshake itself fails; under the policy
//! modes any certificate passes the handshake (its key possession still proven by the handshake
//! signature) and its verdict, computed once in `HandshakeRecorder`, travels with the connection
//! to the proxy, where it becomes the `invalid_client_certificate` and `client_certificate`
//! criteria.

use crate::acme::Acme;
use crate::snapshot::SharedSnapshot;
use crate::telemetry::metrics::Metrics;
use crate::tls::client_ca::{provider, Enforcement};
use crate::tls::peer::{CertState, ConnTls, PeerCert};
use async_trait::async_trait;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::any::Any;
use std::sync::Arc;

/// rustls hook that picks the certificate: a configured one that covers the name, else the one
/// autocert issued for it, else the default (the first configured, or the self-signed fallback).
pub struct SniResolver {
    runtime: SharedSnapshot,
    acme: Arc<Acme>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl SniResolver {
    pub fn new(runtime: SharedSnapshot, acme: Arc<Acme>) -> Self {
        Self { runtime, acme }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snap = self.runtime.load();
        let certs = &snap.settings.certs;
        hello
            .server_name()
            .and_then(|name| certs.covering(name).or_else(|| self.acme.lookup(name)))
            .or_else(|| certs.default_cert())
    }
}

/// rustls's client-certificate hook. Reads the snapshot per handshake.
pub struct ClientCertGate {
    runtime: SharedSnapshot,
    provider: Arc<CryptoProvider>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ClientCertGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertGate").finish_non_exhaustive()
    }
}

impl ClientCertGate {
    pub fn new(runtime: SharedSnapshot, metrics: Arc<Metrics>) -> Self {
        Self {
            runtime,
            provider: provider(),
            metrics,
        }
    }
}

impl ClientCertVerifier for ClientCertGate {
    fn offer_client_auth(&self) -> bool {
        let snap = self.runtime.load();
        snap.settings.client_ca.is_some() || snap.route_client_cas
    }

    fn client_auth_mandatory(&self) -> bool {
        self.runtime
            .load()
            .settings
            .client_ca
            .as_ref()
            .is_some_and(|ca| ca.enforcement == Enforcement::RejectConnection)
    }

    /// No hints: the list would have to outlive the snapshot it came from. Browsers then offer
    /// every certificate the user has, which is what they do for most servers anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let snap = self.runtime.load();
        let Some(ca) = &snap.settings.client_ca else {
            return Ok(ClientCertVerified::assertion());
        };
        if ca.enforcement != Enforcement::RejectConnection {
            // Judged in `HandshakeRecorder`, so the verdict reaches the policy engine.
            return Ok(ClientCertVerified::assertion());
        }
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        ca.check(&chain, now).map_err(|reason| {
            tracing::info!(%reason, "listener connection failure: client certificate refused");
            self.metrics
                .client_certificates
                .with_label_values(&["rejected"])
                .inc();
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Records SNI and the certificate verdict once per connection.
pub struct HandshakeRecorder {
    runtime: SharedSnapshot,
    metrics: Arc<Metrics>,
}

impl HandshakeRecorder {
    pub fn new(runtime: SharedSnapshot, metrics: Arc<Metrics>) -> Self {
        Self { runtime, metrics }
    }
}

#[async_trait]
impl pingora_core::listeners::TlsAccept for HandshakeRecorder {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora_core::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let sni = tls
            .server_name()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let chain = tls.peer_cert_chain_der().unwrap_or_default();
        let cert = match chain.first().and_then(PeerCert::parse) {
            None => CertState::Absent,
            Some(parsed) => {
                let parsed = Arc::new(parsed);
                let snap = self.runtime.load();
                match &snap.settings.client_ca {
                    Some(ca) => match ca.check(chain, UnixTime::now()) {
                        Ok(()) => CertState::Trusted(parsed),
                        Err(reason) => {
                            tracing::debug!(%reason, "client certificate not trusted");
                            CertState::Untrusted(parsed)
                        }
                    },
                    None => CertState::Untrusted(parsed),
                }
            }
        };
        if self.runtime.load().settings.client_ca.is_some() {
            let result = match &cert {
                CertState::Absent => "absent",
                CertState::Untrusted(_) => "untrusted",
                CertState::Trusted(_) => "trusted",
            };
            self.metrics
                .client_certificates
                .with_label_values(&[result])
                .inc();
        }
        let chain = match self.runtime.load().route_client_cas {
            true => chain.iter().map(|c| c.clone().into_owned()).collect(),
            false => Vec::new(),
        };
        Some(Arc::new(ConnTls { sni, cert, chain }))
    }
}
