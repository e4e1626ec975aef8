//! TLS-ALPN-01 (RFC 8737) on the TLS listener. The CA's validator opens a TLS connection that
//! offers only the `acme-tls/1` protocol and expects the challenge certificate for the host it
//! names. Pingora's acceptor cannot offer that protocol, so this hook, run before Pingora's
//! handshake, reads the ClientHello and puts it back; when the hello asks for `acme-tls/1` it
//! completes that handshake itself with the challenge certificate and ends the connection.
//! Every other connection goes on to Pingora untouched, and when autocert is off the hook
//! returns before reading anything.

use crate::acme::{Acme, ACME_TLS_ALPN};
use crate::snapshot::SharedSnapshot;
use async_trait::async_trait;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::{Error, ErrorType};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most a ClientHello is read for: one TLS record.
const MAX_HELLO: usize = 16 * 1024 + 5;
const HELLO_WAIT: Duration = Duration::from_secs(10);

pub struct AlpnChallenge {
    pub runtime: SharedSnapshot,
    pub acme: Arc<Acme>,
}

#[async_trait]
impl PreTlsProcess for AlpnChallenge {
    async fn process(&self, stream: &mut Stream) -> pingora_core::Result<()> {
        if self.runtime.load().settings.autocert.is_none() {
            return Ok(());
        }
        // Whatever was read goes back, also when the client is too slow to finish its hello.
        let mut read = Vec::with_capacity(1024);
        let hello = tokio::time::timeout(HELLO_WAIT, read_hello(stream, &mut read))
            .await
            .unwrap_or_default();
        stream.rewind(&read);
        let Some(host) = hello else {
            return Ok(());
        };
        let Some(cert) = self.acme.alpn01(&host).await else {
            return Error::e_explain(
                ErrorType::HandshakeError,
                format!("TLS-ALPN-01 challenge for {host}, which has no order in progress"),
            );
        };
        answer(stream, cert).await;
        // The validator only needed the handshake; ending here keeps it away from the proxy.
        Error::e_explain(ErrorType::HandshakeError, "TLS-ALPN-01 challenge answered")
    }
}

/// Reads into `read` until rustls has a whole ClientHello (or gives up): the server name when
/// the hello offers `acme-tls/1`.
async fn read_hello(stream: &mut Stream, read: &mut Vec<u8>) -> Option<String> {
    let mut acceptor = Acceptor::default();
    let mut chunk = [0u8; 4096];
    while read.len() < MAX_HELLO {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        read.extend_from_slice(&chunk[..n]);
        if acceptor.read_tls(&mut &chunk[..n]).is_err() {
            break;
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let acme = hello
                    .alpn()
                    .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
                let host = hello.server_name().map(str::to_string);
                return host.filter(|_| acme);
            }
            Err(_) => break,
        }
    }
    None
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

async fn answer(stream: &mut Stream, cert: Arc<CertifiedKey>) {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(cert)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    let accept = async {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(Acceptor::default(), &mut *stream).await?;
        let mut tls = start.into_stream(Arc::new(config)).await?;
        tls.shutdown().await
    };
    if let Err(e) = tokio::time::timeout(HELLO_WAIT, accept)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        tracing::debug!(error = %e, "autocert: TLS-ALPN-01 handshake did not complete");
    }
}
