//! What the client really sent on the request line. Pingora repairs an HTTP/1 request line whose
//! target holds bytes its parser refuses (a space, a tab, `"`, `<`, `>`, control bytes) by
//! percent-encoding them and parsing again, so by `request_filter` `GET /a b HTTP/1.1` reads as
//! `GET /a%20b HTTP/1.1`, and the raw head Pingora keeps is the repaired one. Two parsers that
//! split such a line differently is how requests get smuggled, so Vallum refuses it instead.
//!
//! `WireTap` wraps each downstream connection and looks at the first line of each request head
//! (on a new connection, and after each request ends), remembering it when it is a request line
//! with such bytes in it: no scan of header lines or bodies, and no copy of ordinary traffic. A
//! pipelined request whose head arrived in the same read as the one before it is not looked at. `repaired_line` tells the hygiene step whether the request line it
//! sees is Pingora's repair of one of them. `TappedApp` installs the tap on every connection.

use super::head_deadline::{late, HeadDeadline};
use crate::snapshot::SharedSnapshot;
use async_trait::async_trait;
use percent_encoding::{AsciiSet, CONTROLS};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::protocols::Stream;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The bytes Pingora percent-encodes when it repairs a request target (its `URI_ESC_CHARSET`).
const REPAIRED: &AsciiSet = &CONTROLS.add(b' ').add(b'<').add(b'>').add(b'"');
/// Longest line kept while it may still be a request line.
const MAX_LINE: usize = 16 * 1024;
/// How many suspect lines are remembered (a pipelined burst may hold several).
const KEEP: usize = 4;

/// Finds lines shaped like `token SP … HTTP/d…` whose target holds a byte Pingora would repair.
#[derive(Debug, Default)]
struct Lines {
    /// Past the first line of the current head: nothing to look at until the next head.
    past_first_line: bool,
    /// The current line so far, while it may be a request line (cleared as soon as it cannot).
    line: Vec<u8>,
    /// Whether the current line has been ruled out.
    ruled_out: bool,
    suspects: Vec<Vec<u8>>,
}

impl Lines {
    /// Looks at the lines in `bytes` without copying them: only a line split across reads is
    /// kept (while it may still be a request line), and only a suspect line is stored.
    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.past_first_line {
            let end = memchr::memchr(b'\n', bytes);
            let chunk = &bytes[..end.unwrap_or(bytes.len())];
            if !self.ruled_out {
                if self.line.is_empty() {
                    self.ruled_out = !may_be_request_line(chunk);
                } else {
                    self.line.extend_from_slice(chunk);
                    self.ruled_out = !may_be_request_line(&self.line) || self.line.len() > MAX_LINE;
                }
            }
            let Some(end) = end else {
                // The line goes on in the next read: keep it while it may matter.
                if !self.ruled_out && self.line.is_empty() {
                    self.line.extend_from_slice(chunk);
                }
                if self.ruled_out {
                    self.line.clear();
                }
                return;
            };
            let whole_was_empty = self.line.is_empty();
            if !self.ruled_out {
                let whole = std::mem::take(&mut self.line);
                let line = if whole.is_empty() { chunk } else { &whole[..] };
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if needs_repair(line) {
                    if self.suspects.len() == KEEP {
                        self.suspects.remove(0);
                    }
                    self.suspects.push(line.to_vec());
                }
            }
            self.line.clear();
            self.ruled_out = false;
            bytes = &bytes[end + 1..];
            // A blank line before a request is allowed (RFC 9112 §2.2); any other ends the look.
            self.past_first_line =
                !chunk.strip_suffix(b"\r").unwrap_or(chunk).is_empty() || !whole_was_empty;
        }
    }
}

/// A prefix that could still grow into a request line: method characters, then a space.
fn may_be_request_line(prefix: &[u8]) -> bool {
    let method = prefix
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_');
    let n = method.count();
    match prefix.get(n) {
        None => n <= 32,
        Some(b' ') => n > 0,
        Some(_) => false,
    }
}

/// Pingora's repair applies: `\w+ (.+) HTTP/\d` with a byte of `REPAIRED` in the target.
fn needs_repair(line: &[u8]) -> bool {
    split_target(line).is_some_and(|(_, target, _)| {
        target
            .iter()
            .any(|&b| b < 0x20 || b == 0x7f || b" <>\"".contains(&b))
    })
}

/// `(method and space, target, " HTTP/…" rest)`, splitting at the last ` HTTP/<digit>`.
fn split_target(line: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let version_at = (sp + 1..line.len().saturating_sub(6))
        .rev()
        .find(|&i| line[i..].starts_with(b" HTTP/") && line[i + 6].is_ascii_digit())?;
    if version_at <= sp + 1 {
        return None;
    }
    Some((&line[..=sp], &line[sp + 1..version_at], &line[version_at..]))
}

/// The line as Pingora rewrites it.
fn repaired(line: &[u8]) -> Option<Vec<u8>> {
    let (head, target, rest) = split_target(line)?;
    let mut out = head.to_vec();
    for part in percent_encoding::percent_encode(target, REPAIRED) {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// A downstream connection, read through a `Lines` scanner.
#[derive(Debug)]
pub struct WireTap {
    inner: Stream,
    lines: Lines,
    head: HeadDeadline,
    /// The connection's first bytes, read ahead to spot a CONNECT (`proxy::connect`).
    shim: super::connect::Shim,
}

impl WireTap {
    /// The head has been parsed: its deadline no longer applies.
    pub fn head_received(&self) {
        self.head.head_received();
    }

    /// The request has ended; the next head on this connection is timed from its first byte.
    pub fn request_ended(&self, limit: std::time::Duration) {
        self.head.request_ended(limit);
    }

    /// Whether `line`, as Pingora parsed it, is its repair of a line the client sent.
    pub fn repaired_line(&self, line: &[u8]) -> bool {
        // Only a repaired target holds `%XX` of a repaired byte: most lines skip the search.
        line.contains(&b'%')
            && self
                .lines
                .suspects
                .iter()
                .any(|s| repaired(s).is_some_and(|r| r == line))
    }
}

/// The tap on the stream a request came in on, if it has one.
pub fn tap_of(stream: &Stream) -> Option<&WireTap> {
    (**stream).as_any().downcast_ref::<WireTap>()
}

impl AsyncRead for WireTap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        // The last request ended: what comes next is a new head, timed and looked at afresh.
        if this.head.take_next() {
            this.lines.past_first_line = false;
        }
        let replayed = this.shim.replay(buf);
        if replayed > 0 {
            if this.head.after_read(replayed) {
                return Poll::Ready(Err(late()));
            }
            let got = buf.filled().get(before..).unwrap_or(&[]);
            this.lines.scan(got);
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = buf.filled().get(before..).unwrap_or(&[]);
                if this.head.after_read(got.len()) {
                    return Poll::Ready(Err(late()));
                }
                this.lines.scan(got);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.head.poll_expired(cx) {
                Poll::Ready(()) => Poll::Ready(Err(late())),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for WireTap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.shim.poll_write(&mut this.inner, cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.shim.rewriting() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for WireTap {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for WireTap {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for WireTap {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for WireTap {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for WireTap {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for WireTap {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for WireTap {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if self.shim.peek(buf) {
            return Ok(true);
        }
        self.inner.try_peek(buf).await
    }
}

/// A server app whose connections all come through a `WireTap`.
pub struct TappedApp<A> {
    pub app: Arc<A>,
    /// For `timeout_read`, as of each request.
    pub snapshot: SharedSnapshot,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for TappedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Pingora keeps an HTTP/1 connection inside one call for all its requests (the next
        // head is re-timed when a request ends, in `logging`), so a stream arriving here is new;
        // one already tapped is passed on as it is.
        if tap_of(&stream).is_some() {
            return self.app.process_new(stream, shutdown).await;
        }
        let limit = self.snapshot.load().settings.timeout_read;
        let mut tap = Box::new(WireTap {
            inner: stream,
            lines: Lines::default(),
            head: HeadDeadline::default(),
            shim: Default::default(),
        });
        // HTTP/2 frames are not a head: no deadline there, and no CONNECT to look for.
        if tap.inner.selected_alpn_proto() == Some(ALPN::H2) {
            tap.head.off();
            return self.app.process_new(tap, shutdown).await;
        }
        tap.head.start_now(limit);
        let mut stop = shutdown.clone();
        let first = tokio::select! {
            f = super::connect::first_read(&mut tap.inner, limit) => f,
            _ = stop.changed() => super::connect::First::Nothing,
        };
        match first {
            super::connect::First::Nothing => None,
            super::connect::First::Bytes(bytes, connect) => {
                // HTTP/2 with prior knowledge (h2c): frames, not a head, as for ALPN h2 above.
                if bytes.starts_with(super::connect::H2_PREFACE) {
                    tap.head.off();
                }
                tap.shim = super::connect::Shim::new(bytes, connect);
                self.app.process_new(tap, shutdown).await
            }
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suspects(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut l = Lines::default();
        for c in chunks {
            l.scan(c);
        }
        l.suspects
    }

    #[test]
    fn remembers_request_lines_pingora_would_repair() {
        assert_eq!(
            suspects(&[b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"]),
            vec![b"GET /a b HTTP/1.1".to_vec()]
        );
        // Split across reads, anywhere.
        assert_eq!(
            suspects(&[b"GE", b"T /a\t", b"b HTTP/1", b".1\r\nHost: x\r\n\r\n"]),
            vec![b"GET /a\tb HTTP/1.1".to_vec()]
        );
        // A repaired byte other than a space, with only the two separating spaces.
        assert_eq!(
            suspects(&[b"GET /<x> HTTP/1.1\r\n"]),
            vec![b"GET /<x> HTTP/1.1".to_vec()]
        );
        // Ordinary traffic leaves nothing behind.
        assert!(
            suspects(&[b"GET /a%20b HTTP/1.1\r\nHost: a b c\r\nX: \"q\"\r\n\r\nbody <x>\n"])
                .is_empty()
        );
        assert!(suspects(&[b"Host: x y HTTP/1.1\r\n"]).is_empty());
        // Only a head's first line counts (a blank line before it is skipped).
        assert_eq!(
            suspects(&[b"\r\nGET /a b HTTP/1.1\r\n"]),
            vec![b"GET /a b HTTP/1.1".to_vec()]
        );
        assert!(
            suspects(&[b"GET / HTTP/1.1\r\nPOST /a b HTTP/1.1\r\n"]).is_empty(),
            "a request-shaped line later in the head is not its request line"
        );
    }

    #[test]
    fn a_repair_is_recognised_and_an_honest_line_is_not() {
        let mut l = Lines::default();
        l.scan(b"GET /a b?q=\"x\" HTTP/1.1\r\nHost: x\r\n\r\n");
        let tap = WireTap {
            inner: Box::new(tokio_test_stream()),
            lines: l,
            head: HeadDeadline::default(),
            shim: Default::default(),
        };
        assert!(tap.repaired_line(b"GET /a%20b?q=%22x%22 HTTP/1.1"));
        assert!(!tap.repaired_line(b"GET /a%20c HTTP/1.1"));
        assert!(!tap.repaired_line(b"GET / HTTP/1.1"));
        assert_eq!(
            repaired(b"GET  / HTTP/1.1").as_deref(),
            Some(&b"GET %20/ HTTP/1.1"[..])
        );
    }

    fn tokio_test_stream() -> tokio::io::DuplexStream {
        tokio::io::duplex(8).0
    }
}
