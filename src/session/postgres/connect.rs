//! From settings to a connection: the client config (with the server-side statement timeout for
//! pooled connections) and the TLS connector that does what libpq's `sslmode` says.

use crate::config::pem;
use crate::config::postgres::{PostgresSettings, SslMode};
use crate::tls::client_ca::provider;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The client config. `statement_timeout`: set on pooled connections, so the server stops a
/// statement the gateway stopped waiting for; the listening connection has none.
pub fn client_config(
    s: &PostgresSettings,
    statement_timeout: Option<Duration>,
) -> Result<tokio_postgres::Config, String> {
    let mut c = tokio_postgres::Config::from_str(&s.url)
        .map_err(|e| format!("not a valid PostgreSQL URL ({e})"))?;
    c.ssl_mode(match s.ssl {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(5));
    }
    // A peer that vanished without a word is noticed in seconds, not hours.
    c.keepalives_idle(Duration::from_secs(10));
    if c.get_application_name().is_none() {
        c.application_name("vallum");
    }
    if let Some(t) = statement_timeout {
        let ms = t.as_millis().max(1);
        let options = match c.get_options() {
            Some(o) => format!("{o} -c statement_timeout={ms}"),
            None => format!("-c statement_timeout={ms}"),
        };
        c.options(options);
    }
    Ok(c)
}

/// The TLS connector for `sslmode`. `prefer` and `require` without a root certificate encrypt
/// without verifying, as libpq does; `verify-ca` checks the chain, `verify-full` the host name
/// too, against `sslrootcert` or the system's roots.
pub fn tls(s: &PostgresSettings) -> Result<MakeRustlsConnect, String> {
    let p = provider();
    let lenient = |chain| -> Arc<dyn ServerCertVerifier> {
        Arc::new(Lenient {
            provider: Arc::clone(&p),
            chain,
        })
    };
    let verifier: Arc<dyn ServerCertVerifier> = match s.ssl {
        _ if s.skip_verify => lenient(None),
        SslMode::Disable | SslMode::Prefer | SslMode::Require => lenient(None),
        SslMode::VerifyCa => lenient(Some(webpki(s, &p)?)),
        SslMode::VerifyFull => webpki(s, &p)?,
    };
    let b = rustls::ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &s.tls.client {
        Some((cert, key)) => {
            let chain = pem::certs(cert).map_err(|e| format!("client certificate: {e}"))?;
            let key = pem::private_key(key).map_err(|e| format!("client key: {e}"))?;
            b.with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => b.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn webpki(
    s: &PostgresSettings,
    p: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    let mut roots = RootCertStore::empty();
    match &s.tls.ca_pem {
        Some(ca) => {
            for c in pem::certs(ca).map_err(|e| format!("CA file: {e}"))? {
                roots
                    .add(c)
                    .map_err(|e| format!("CA file: not a usable trust anchor: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(p))
        .build()
        .map_err(|e| format!("cannot verify PostgreSQL's certificate: {e}"))
}

/// The two checks libpq makes short of `verify-full`: none of the certificate (`prefer`,
/// `require`, `databroker_storage_tls_skip_verify`), or its chain but not its name (`verify-ca`).
/// The handshake signature is checked either way, with the provider's algorithms (which is what
/// the webpki verifier does too).
#[derive(Debug)]
struct Lenient {
    provider: Arc<CryptoProvider>,
    /// `Some`: the chain must lead to a trusted root.
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
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
