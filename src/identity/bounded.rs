//! The HTTP client every identity-provider call goes through: no redirects followed (an IdP
//! endpoint that redirects is a misconfiguration or an SSRF attempt), a time limit, and a size
//! limit on every response body, read as it arrives, so a hostile or broken IdP cannot make a
//! gateway buffer without bound. reqwest is built without decompression, so the limit is on
//! the bytes received and nothing is inflated.

use std::time::Duration;

/// Largest IdP response read (discovery, JWKS, token and userinfo responses are a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Longest an IdP call may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("the identity provider's response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("invalid response: {0}")]
    Invalid(String),
}

pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .build()
}

/// Reads a response body, refusing it as soon as it passes `MAX_RESPONSE_BYTES`.
pub async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, BoundedError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(BoundedError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(BoundedError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// One `openidconnect` request over `http`, with the body limit applied.
pub async fn call(
    http: &reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, BoundedError> {
    use tracing::Instrument;
    let (parts, body) = request.into_parts();
    // The IdP endpoint without its query (never a token; those travel in bodies and headers).
    let endpoint = format!(
        "{}://{}{}",
        parts.uri.scheme_str().unwrap_or("https"),
        parts.uri.authority().map_or("", |a| a.as_str()),
        parts.uri.path()
    );
    let span = if crate::telemetry::traces::in_request() {
        crate::trace_span!(
            "idp",
            otel.kind = "client",
            http.request.method = parts.method.as_str(),
            url.full = endpoint,
            http.response.status_code = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    let resp = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .instrument(span.clone())
        .await?;
    let status = resp.status();
    span.record("http.response.status_code", status.as_u16());
    let headers = resp.headers().clone();
    let body = read_body(resp).instrument(span).await?;
    let mut out = http::Response::builder()
        .status(status)
        .body(body)
        .map_err(|e| BoundedError::Invalid(e.to_string()))?;
    *out.headers_mut() = headers;
    Ok(out)
}

/// `call` as the client type `openidconnect` takes.
#[derive(Clone)]
pub struct Bounded(pub reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for Bounded {
    type Error = BoundedError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, BoundedError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(call(&self.0, request))
    }
}
