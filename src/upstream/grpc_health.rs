//! `grpc_health_check`: the standard `grpc.health.v1.Health/Check` call over HTTP/2 (prior
//! knowledge on `h2c://` and `http://` targets, ALPN on `https://`). A backend is healthy when
//! the call succeeds (`grpc-status: 0`) and answers SERVING for the configured service name.

use super::health::hc_error;
use super::pool::PoolSpec;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use pingora_load_balancing::Backend;
use std::time::Duration;

const PATH: &[u8] = b"/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

pub struct GrpcCheck {
    connector: Connector,
    peer: HttpPeer,
    authority: String,
    /// The framed `HealthCheckRequest` message.
    request: Bytes,
    timeout: Duration,
}

impl GrpcCheck {
    pub fn new(spec: &PoolSpec, service: &str, authority: Option<&str>, timeout: Duration) -> Self {
        let first = spec.targets.first();
        let tls = first.is_some_and(|t| t.tls);
        let mut peer = HttpPeer::new(("0.0.0.0", 0), tls, String::new());
        peer.options.alpn = ALPN::H2;
        if tls {
            let host = first.map(|t| t.host.as_str()).unwrap_or_default();
            spec.tls.secure(&mut peer, host);
        }
        peer.options.connection_timeout = Some(timeout);
        peer.options.read_timeout = Some(timeout);
        peer.options.write_timeout = Some(timeout);
        GrpcCheck {
            connector: Connector::new(None),
            peer,
            authority: authority
                .map(str::to_string)
                .or_else(|| first.map(|t| t.authority.clone()))
                .unwrap_or_default(),
            request: frame(&request_message(service)),
            timeout,
        }
    }

    pub async fn check(&self, target: &Backend) -> pingora_core::Result<()> {
        match tokio::time::timeout(self.timeout, self.call(target)).await {
            Ok(r) => r,
            Err(_) => Err(hc_error("gRPC health check timed out".into())),
        }
    }

    async fn call(&self, target: &Backend) -> pingora_core::Result<()> {
        let mut peer = self.peer.clone();
        peer._address = target.addr.clone();
        let (mut session, _) = self.connector.get_http_session(&peer).await?;
        let mut req = RequestHeader::build("POST", PATH, None)?;
        req.insert_header("host", &self.authority)?;
        req.insert_header("content-type", "application/grpc")?;
        req.insert_header("te", "trailers")?;
        session.write_request_header(Box::new(req)).await?;
        session
            .write_request_body(self.request.clone(), true)
            .await?;
        session.read_response_header().await?;
        let head = session
            .response_header()
            .ok_or_else(|| hc_error("no response".into()))?;
        if head.status != 200 {
            return Err(hc_error(format!("HTTP status {}", head.status)));
        }
        // Trailers-Only: a failed call carries its status in the headers.
        let early = head
            .headers
            .get("grpc-status")
            .map(|v| v.as_bytes().to_vec());
        let mut body = Vec::new();
        while let Some(chunk) = session.read_response_body().await? {
            body.extend_from_slice(&chunk);
        }
        let trailers = match &mut session {
            HttpSession::H2(h2) => h2.read_trailers().await?,
            _ => return Err(hc_error("the backend did not speak HTTP/2".into())),
        };
        let status = early.or_else(|| {
            trailers
                .as_ref()
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.as_bytes().to_vec())
        });
        if status.as_deref() != Some(b"0") {
            let s = status.map(|s| String::from_utf8_lossy(&s).into_owned());
            return Err(hc_error(format!(
                "grpc-status {}",
                s.unwrap_or("missing".into())
            )));
        }
        match serving_status(&body) {
            Some(SERVING) => Ok(()),
            Some(s) => Err(hc_error(format!("serving status {s} (not SERVING)"))),
            None => Err(hc_error("unreadable HealthCheckResponse".into())),
        }
    }
}

/// `HealthCheckRequest { string service = 1; }` in protobuf wire format.
fn request_message(service: &str) -> Vec<u8> {
    if service.is_empty() {
        return Vec::new();
    }
    let mut m = vec![0x0a];
    put_varint(&mut m, service.len() as u64);
    m.extend_from_slice(service.as_bytes());
    m
}

/// One gRPC message: uncompressed flag, big-endian length, payload.
fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// `HealthCheckResponse { ServingStatus status = 1; }` from one framed message; an absent field
/// is 0 (UNKNOWN), as protobuf defaults it.
fn serving_status(body: &[u8]) -> Option<u64> {
    let (head, rest) = (body.get(..5)?, body.get(5..)?);
    if head[0] != 0 {
        return None; // compressed: never asked for
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut msg = rest.get(..len)?;
    let mut status = 0;
    while !msg.is_empty() {
        let (key, n) = varint(msg)?;
        msg = msg.get(n..)?;
        match key & 7 {
            0 => {
                let (v, n) = varint(msg)?;
                msg = msg.get(n..)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let (len, n) = varint(msg)?;
                msg = msg.get(n + len as usize..)?;
            }
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_service() {
        assert_eq!(request_message(""), Vec::<u8>::new());
        assert_eq!(request_message("svc"), vec![0x0a, 3, b's', b'v', b'c']);
        assert_eq!(&frame(b"ab")[..], &[0, 0, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn serving_status_is_read_from_the_framed_response() {
        assert_eq!(serving_status(&frame(&[0x08, 1])), Some(1));
        assert_eq!(serving_status(&frame(&[0x08, 2])), Some(2));
        assert_eq!(serving_status(&frame(&[])), Some(0), "absent: UNKNOWN");
        // An unknown length-delimited field is skipped.
        assert_eq!(serving_status(&frame(&[0x12, 1, b'x', 0x08, 1])), Some(1));
        assert_eq!(serving_status(&[0, 0, 0]), None);
        assert_eq!(serving_status(&frame(&[0x08])), None, "truncated varint");
    }
}
