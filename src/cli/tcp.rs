//! `vallum tcp`: the client end of a TCP tunnel. It listens locally and carries each accepted
//! connection to the gateway as an HTTP/1.1 `Upgrade: tcp` request for the tunnel route's
//! `host:port`, authenticated with the token from `vallum login`; after the gateway's 101 the
//! bytes flow both ways untouched.
//!
//! Pomerium uses HTTP `CONNECT`; Pingora does not hand a CONNECT request's stream to the
//! application, while it does switch an upgraded request to pass-through after a 101, so
//! Vallum tunnels over an upgrade (like websockets) on the gateway's ordinary HTTPS port.

use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("{0} is not host:port")]
    BadTarget(String),
    #[error("cannot reach the gateway: {0}")]
    Gateway(String),
    #[error("the gateway refused the tunnel ({status}): {body}")]
    Refused { status: u16, body: String },
}

pub struct TunnelOptions {
    /// The tunnel route's `host:port`, as in its `from: tcp+https://host:port`.
    pub target: String,
    /// Where the gateway listens (default: `https://` + the target's host).
    pub gateway: Url,
    pub token: String,
    pub insecure: bool,
}

fn client(opts: &TunnelOptions) -> Result<reqwest::Client, TunnelError> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .danger_accept_invalid_certs(opts.insecure);
    if let Some(h) = opts
        .gateway
        .host_str()
        .filter(|h| h.ends_with(".localhost"))
    {
        b = b.resolve(h, SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    b.build().map_err(|e| TunnelError::Gateway(e.to_string()))
}

/// Opens one tunnel through the gateway (checks the token and policy for this connection).
pub async fn open(
    http: &reqwest::Client,
    opts: &TunnelOptions,
) -> Result<reqwest::Upgraded, TunnelError> {
    let resp = http
        .get(opts.gateway.as_str())
        .header("host", &opts.target)
        .header("connection", "Upgrade")
        .header("upgrade", "tcp")
        .header("authorization", format!("Pomerium {}", opts.token))
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| TunnelError::Gateway(e.to_string()))?;
    if resp.status().as_u16() != 101 {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        return Err(TunnelError::Refused {
            status,
            body: body.trim().to_string(),
        });
    }
    resp.upgrade()
        .await
        .map_err(|e| TunnelError::Gateway(e.to_string()))
}

/// Accepts local connections on `listen` and carries each through its own tunnel, until the
/// process is stopped. A refused tunnel closes its local connection and is logged.
pub async fn serve(listen: SocketAddr, opts: TunnelOptions) -> Result<(), TunnelError> {
    if !opts.target.contains(':') {
        return Err(TunnelError::BadTarget(opts.target));
    }
    let http = client(&opts)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| TunnelError::Listen(listen, e))?;
    eprintln!(
        "listening on {} → {} through {}",
        listener.local_addr().unwrap_or(listen),
        opts.target,
        opts.gateway
    );
    let opts = std::sync::Arc::new(opts);
    loop {
        let Ok((mut local, peer)) = listener.accept().await else {
            continue;
        };
        let (http, opts) = (http.clone(), std::sync::Arc::clone(&opts));
        tokio::spawn(async move {
            match open(&http, &opts).await {
                Ok(mut remote) => {
                    let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                }
                Err(e) => eprintln!("vallum tcp: connection from {peer}: {e}"),
            }
        });
    }
}
