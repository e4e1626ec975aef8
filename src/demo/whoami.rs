//! The demo's upstream app: shows what Vallum told it — the identity headers it received and
//! whether the `X-Pomerium-Jwt-Assertion` verifies against the gateway's published JWKS, exactly
//! as a real app would check it.

use crate::respond::pages::{escape, page};
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

pub struct Whoami {
    /// Where the gateway listens, to fetch its JWKS.
    pub gateway: std::net::SocketAddr,
    pub http: reqwest::Client,
}

impl Whoami {
    async fn verify(&self, jwt: &str, host: &str) -> Result<serde_json::Value, String> {
        let jwks: jsonwebtoken::jwk::JwkSet = self
            .http
            .get(format!(
                "http://{}/.well-known/pomerium/jwks.json",
                self.gateway
            ))
            .header("host", host)
            .send()
            .await
            .map_err(|e| format!("cannot fetch the JWKS: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("cannot fetch the JWKS: {e}"))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("bad JWKS: {e}")))?;
        let header = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
        let jwk = jwks
            .find(header.kid.as_deref().unwrap_or(""))
            .ok_or("unknown kid")?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let aud = host.split(':').next().unwrap_or(host);
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_audience(&[aud]);
        jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl ServeHttp for Whoami {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let host = req
            .headers
            .get("x-forwarded-host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut rows = String::new();
        let mut jwt = None;
        for (k, v) in req.headers.iter() {
            let value = v.to_str().unwrap_or("<binary>");
            if k.as_str() == "x-pomerium-jwt-assertion" {
                jwt = Some(value.to_string());
            }
            let shown = if value.len() > 80 {
                format!("{}…", &value[..80])
            } else {
                value.to_string()
            };
            rows.push_str(&format!(
                "<tr><th>{}</th><td><code>{}</code></td></tr>",
                escape(k.as_str()),
                escape(&shown)
            ));
        }
        let verdict = match &jwt {
            None => "<p>No <code>X-Pomerium-Jwt-Assertion</code>: this route does not pass identity headers, or you are not signed in.</p>".to_string(),
            Some(token) => match self.verify(token, &host).await {
                Ok(claims) => format!(
                    "<p><strong>✔ The JWT assertion verified</strong> against the gateway's JWKS.</p><pre>{}</pre>",
                    escape(&serde_json::to_string_pretty(&claims).unwrap_or_default())
                ),
                Err(e) => format!("<p><strong>✘ The JWT assertion did not verify:</strong> {}</p>", escape(&e)),
            },
        };
        let body = page(
            None,
            &format!("whoami — {}", host),
            &format!(
                "{verdict}<h2>Headers this app received</h2><table>{rows}</table>\
                 <p><a href=\"/.pomerium/\">/.pomerium/</a> · <a href=\"/.pomerium/sign_out\">sign out</a></p>"
            ),
        );
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/html; charset=utf-8")
            .body(body.into_bytes())
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
