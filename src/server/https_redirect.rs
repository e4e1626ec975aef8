//! `http_redirect_addr`: a plain-HTTP listener that sends every request to HTTPS (301), so
//! `http://` links keep working without serving anything in clear text. The one exception is
//! the ACME HTTP-01 challenge (`/.well-known/acme-challenge/<token>`), which a CA fetches over
//! plain HTTP on port 80: answered while an order is in progress, 404 otherwise.

use crate::acme::{Acme, HTTP01_PREFIX};
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::Arc;

pub struct HttpsRedirect {
    /// Port of the HTTPS listener; omitted from the location when it is 443.
    pub https_port: u16,
    pub acme: Arc<Acme>,
}

impl HttpsRedirect {
    async fn challenge(&self, path: &str) -> Response<Vec<u8>> {
        let token = path.strip_prefix(HTTP01_PREFIX).unwrap_or_default();
        let answer = match token {
            "" => None,
            t => self.acme.http01(t).await,
        };
        let builder = Response::builder();
        let resp = match answer {
            Some(ka) => builder
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .header(http::header::CONTENT_LENGTH, ka.len())
                .body(ka.into_bytes()),
            None => builder
                .status(StatusCode::NOT_FOUND)
                .header(http::header::CONTENT_LENGTH, "0")
                .body(Vec::new()),
        };
        resp.unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[async_trait]
impl ServeHttp for HttpsRedirect {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.uri.path().starts_with(HTTP01_PREFIX) {
            let path = req.uri.path().to_string();
            return self.challenge(&path).await;
        }
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_string());
        let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let builder = Response::builder();
        let resp = match host {
            Some(h) if path.starts_with('/') => {
                let port = if self.https_port == 443 {
                    String::new()
                } else {
                    format!(":{}", self.https_port)
                };
                builder
                    .status(StatusCode::MOVED_PERMANENTLY)
                    .header(http::header::LOCATION, format!("https://{h}{port}{path}"))
                    .header(http::header::CONTENT_LENGTH, "0")
                    .body(Vec::new())
            }
            _ => builder
                .status(StatusCode::BAD_REQUEST)
                .header(http::header::CONTENT_LENGTH, "0")
                .body(Vec::new()),
        };
        resp.unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
