//! The ACME client's HTTP transport: the gateway's own `reqwest` (rustls, ring) instead of a
//! second HTTP stack, trusting the public roots plus `autocert_trusted_ca`, with a timeout on
//! every call so a CA that hangs cannot stall renewals.

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub struct Transport(reqwest::Client);

impl Transport {
    pub fn new(trusted: &[CertificateDer<'static>]) -> Result<Transport, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("vallum/", env!("CARGO_PKG_VERSION"), " (ACME)"))
            .https_only(true);
        for der in trusted {
            let cert = reqwest::Certificate::from_der(der)
                .map_err(|e| format!("autocert_trusted_ca: {e}"))?;
            builder = builder.add_root_certificate(cert);
        }
        builder
            .build()
            .map(Transport)
            .map_err(|e| format!("ACME HTTP client: {e}"))
    }
}

impl HttpClient for Transport {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(never) => match never {},
            };
            let rsp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(http::Response::from(rsp)))
        })
    }
}
