//! `vallum login`: the client side of the programmatic login, folded into the one binary
//! (Pomerium ships a separate `pomerium-cli`). It listens on a loopback port, asks the route host
//! for a sign-in URL that returns there, opens (or prints) it, receives the token the gateway
//! hands over after sign-in, and caches it per host with owner-only permissions.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0} is not an http(s) URL with a host")]
    BadUrl(String),
    #[error("cannot reach the gateway: {0}")]
    Gateway(String),
    #[error("the gateway refused the login request ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("no sign-in completed within {0:?}")]
    TimedOut(Duration),
    #[error("cannot listen on loopback: {0}")]
    Listen(std::io::Error),
    #[error("cannot write the token cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct LoginOptions {
    pub url: Url,
    /// Skip TLS verification of the gateway (for test setups with private CAs).
    pub insecure: bool,
    pub open_browser: bool,
    pub timeout: Duration,
}

/// Where tokens are cached: `$VALLUM_CACHE_DIR`, else `$XDG_CACHE_HOME/vallum`, else
/// `~/.cache/vallum`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VALLUM_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("vallum");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache")
        .join("vallum")
}

/// The route host a URL names, as the gateway binds tokens to it (`host[:port]`).
pub fn host_key(url: &Url) -> Result<String, LoginError> {
    let host = url
        .host_str()
        .filter(|_| matches!(url.scheme(), "http" | "https"))
        .ok_or_else(|| LoginError::BadUrl(url.to_string()))?;
    Ok(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

pub fn cache_path(dir: &Path, url: &Url) -> Result<PathBuf, LoginError> {
    let safe: String = host_key(url)?
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(dir.join("tokens").join(format!("{safe}.token")))
}

/// A client for the gateway: `*.localhost` names go to loopback (RFC 6761), whatever the
/// system resolver does with them.
fn client(url: &Url, insecure: bool) -> Result<reqwest::Client, LoginError> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .danger_accept_invalid_certs(insecure);
    if let Some(h) = url.host_str().filter(|h| h.ends_with(".localhost")) {
        b = b.resolve(h, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    b.build().map_err(|e| LoginError::Gateway(e.to_string()))
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Runs the whole login and returns the token (also written to the cache).
pub async fn login(opts: &LoginOptions) -> Result<String, LoginError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(LoginError::Listen)?;
    let port = listener.local_addr().map_err(LoginError::Listen)?.port();
    let back = format!("http://127.0.0.1:{port}/callback");
    let http = client(&opts.url, opts.insecure)?;
    let mut api = Url::parse(&format!("{}/.pomerium/api/v1/login", origin(&opts.url)))
        .map_err(|_| LoginError::BadUrl(opts.url.to_string()))?;
    api.query_pairs_mut()
        .append_pair("pomerium_redirect_uri", &back);
    let resp = http
        .get(api)
        .send()
        .await
        .map_err(|e| LoginError::Gateway(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    if status != 200 {
        return Err(LoginError::Refused {
            status,
            body: body.trim().to_string(),
        });
    }
    let sign_in = body.trim().to_string();
    eprintln!("Sign in at:\n\n  {sign_in}\n");
    if opts.open_browser {
        for opener in ["xdg-open", "open"] {
            if std::process::Command::new(opener)
                .arg(&sign_in)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .is_ok()
            {
                break;
            }
        }
    }
    let token = tokio::time::timeout(opts.timeout, receive_token(&listener))
        .await
        .map_err(|_| LoginError::TimedOut(opts.timeout))?;
    let path = cache_path(&cache_dir(), &opts.url)?;
    write_private(&path, &token).map_err(|source| LoginError::Cache { path, source })?;
    Ok(token)
}

/// Accepts connections until one brings `/callback?…pomerium_jwt=…`.
async fn receive_token(listener: &tokio::net::TcpListener) -> String {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or(&[])),
            }
        }
        let head = String::from_utf8_lossy(&buf);
        let target = head.split(' ').nth(1).unwrap_or("");
        let token = Url::parse(&format!("http://127.0.0.1{target}"))
            .ok()
            .filter(|u| u.path() == "/callback")
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "pomerium_jwt")
                    .map(|(_, v)| v.to_string())
            });
        let (status, page) = match &token {
            Some(_) => (
                "200 OK",
                "Signed in. You can close this tab and return to the terminal.",
            ),
            None => ("404 Not Found", "Not the sign-in callback."),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = conn.write_all(reply.as_bytes()).await;
        let _ = conn.shutdown().await;
        if let Some(t) = token {
            return t;
        }
    }
}

/// The token cache: its directory private to the user, the file written by
/// `crypto::private_file` (owner-only from creation, replaced whole).
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    crate::crypto::private_file::write(path, content.as_bytes())
}

/// The cached token for `url`, if there is one and the gateway still accepts it.
pub async fn cached_valid(url: &Url, insecure: bool) -> Option<String> {
    let path = cache_path(&cache_dir(), url).ok()?;
    let token = std::fs::read_to_string(path).ok()?.trim().to_string();
    let http = client(url, insecure).ok()?;
    let resp = http
        .get(format!("{}/.pomerium/user", origin(url)))
        .header("authorization", format!("Pomerium {token}"))
        .header("accept", "application/json")
        .send()
        .await
        .ok()?;
    (resp.status().as_u16() == 200).then_some(token)
}
