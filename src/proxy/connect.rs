//! Pomerium's tunnel clients (`pomerium-cli tcp`, Pomerium Desktop) open a TCP route with
//! `CONNECT host:port` and wait for `200`. Pingora's HTTP/1 server has no CONNECT tunnel: it
//! answers 405, or (when allowed) reads the request as one without a body and never hands the
//! connection over. So the first request of a connection, when it is a `CONNECT`, is rewritten
//! on the wire into Vallum's own tunnel request (`GET /` with `Upgrade: tcp`, what `vallum tcp`
//! sends): it then takes the same route match, sign-in, policy and tunnel, and the `101` that
//! opens the tunnel goes back to the client as the `200` it waits for. A refusal goes back as it
//! is (an unauthenticated client gets the 302 to sign in, which is what tells `pomerium-cli` to
//! fetch a token). Only a connection's first request is looked at; the clients open one
//! connection per tunnel.

use pingora_core::protocols::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const CONNECT: &[u8] = b"CONNECT ";
/// The client connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest CONNECT head read before giving up on it (Pingora then answers what it sees).
const MAX_HEAD: usize = 16 * 1024;
const OPENED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// What the first read of a connection turned out to be.
pub enum First {
    /// The client closed or sent nothing in time.
    Nothing,
    /// Bytes to hand to Pingora as read; `true` when they are a rewritten CONNECT.
    Bytes(Vec<u8>, bool),
}

/// Reads the start of a connection: whatever the client sent first, and, when it begins with
/// `CONNECT `, the whole head (rewritten, with anything after it).
pub async fn first_read<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> First {
    let read = async {
        let mut buf = Vec::with_capacity(4096);
        loop {
            let starts = |pat: &[u8]| {
                let n = buf.len().min(pat.len());
                buf.get(..n) == pat.get(..n)
            };
            if !starts(CONNECT) {
                // An h2c preface is read whole, so Pingora can recognise it by peeking.
                if !(starts(H2_PREFACE) && buf.len() < H2_PREFACE.len()) {
                    return Ok::<_, std::io::Error>(First::Bytes(buf, false));
                }
                if s.read_buf(&mut buf).await? == 0 {
                    return Ok(First::Bytes(buf, false));
                }
                continue;
            }
            if buf.len() >= CONNECT.len() {
                if let Some(end) = head_end(&buf) {
                    return Ok(match rewrite(&buf, end) {
                        Some(r) => First::Bytes(r, true),
                        None => First::Bytes(buf, false),
                    });
                }
                if buf.len() > MAX_HEAD {
                    return Ok(First::Bytes(buf, false));
                }
            }
            if s.read_buf(&mut buf).await? == 0 {
                return Ok(match buf.is_empty() {
                    true => First::Nothing,
                    false => First::Bytes(buf, false),
                });
            }
        }
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(first)) => first,
        _ => First::Nothing,
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// Headers that frame or route the original request, not carried into the rewritten one.
const DROPPED: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "proxy-connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
];

/// `CONNECT host:port HTTP/1.1` + headers → `GET / HTTP/1.1`, `Host: host:port`,
/// `Upgrade: tcp`, the other headers as they were, then whatever followed the head. `None`
/// when it is not a well-formed CONNECT to an authority.
fn rewrite(buf: &[u8], end: usize) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = req.parse(buf.get(..end)?) else {
        return None;
    };
    let authority = req.path?;
    let (host, port) = authority.rsplit_once(':')?;
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._[]:".contains(c);
    if req.method != Some("CONNECT")
        || host.is_empty()
        || !host.chars().all(plain)
        || port.parse::<u16>().is_err()
    {
        return None;
    }
    let mut out = Vec::with_capacity(end + 64);
    out.extend_from_slice(b"GET / HTTP/1.1\r\nHost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\nUpgrade: tcp\r\nConnection: upgrade\r\n");
    for h in req.headers.iter() {
        if DROPPED.iter().any(|d| h.name.eq_ignore_ascii_case(d)) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(buf.get(len..)?);
    Some(out)
}

/// The wire side of a connection's first request: bytes read ahead to hand to Pingora, and,
/// for a rewritten CONNECT, the turn of its `101` into `200`.
#[derive(Debug, Default)]
pub struct Shim {
    replay: Vec<u8>,
    at: usize,
    answer: Answer,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Answer {
    #[default]
    AsIs,
    /// A rewritten CONNECT waits for its first response.
    Awaiting,
    /// Writing the `200` in place of a `101` head of `report` bytes.
    Opening { at: usize, report: usize },
}

impl Shim {
    pub fn new(replay: Vec<u8>, connect: bool) -> Shim {
        Shim {
            replay,
            at: 0,
            answer: if connect {
                Answer::Awaiting
            } else {
                Answer::AsIs
            },
        }
    }

    /// Hands over read-ahead bytes; how many (0: none left).
    pub fn replay(&mut self, buf: &mut ReadBuf<'_>) -> usize {
        let rest = self.replay.get(self.at..).unwrap_or(&[]);
        let n = rest.len().min(buf.remaining());
        buf.put_slice(rest.get(..n).unwrap_or(&[]));
        self.at += n;
        if self.at >= self.replay.len() && !self.replay.is_empty() {
            self.replay = Vec::new();
            self.at = 0;
        }
        n
    }

    /// Writes `buf` to `inner`, turning a rewritten CONNECT's `101` head into `200`.
    pub fn poll_write(
        &mut self,
        inner: &mut Stream,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.answer == Answer::Awaiting {
            self.answer = match head_end(buf) {
                Some(report) if buf.starts_with(b"HTTP/1.1 101 ") => {
                    Answer::Opening { at: 0, report }
                }
                _ => Answer::AsIs,
            };
        }
        let Answer::Opening { at, report } = &mut self.answer else {
            return Pin::new(inner).poll_write(cx, buf);
        };
        while *at < OPENED.len() {
            match Pin::new(&mut *inner).poll_write(cx, OPENED.get(*at..).unwrap_or(&[])) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => *at += n,
                other => return other,
            }
        }
        let report = *report;
        self.answer = Answer::AsIs;
        Poll::Ready(Ok(report))
    }

    /// Pingora peeks at a new connection only to look for the h2c preface. `first_read` read a
    /// whole preface whenever the client sent one, so the read-ahead answers at once: copied into
    /// `buf` (zero-filled past its end, which then cannot match). Peeking the socket instead
    /// would wait for `buf.len()` bytes, unbounded by the head deadline. False: nothing read ahead.
    pub fn peek(&self, buf: &mut [u8]) -> bool {
        let ahead = self.replay.get(self.at..).unwrap_or(&[]);
        if ahead.is_empty() {
            return false;
        }
        let n = ahead.len().min(buf.len());
        let (head, rest) = buf.split_at_mut(n);
        head.copy_from_slice(ahead.get(..n).unwrap_or(&[]));
        rest.fill(0);
        true
    }

    /// Whether writes must go through [`Shim::poll_write`] (not vectored).
    pub fn rewriting(&self) -> bool {
        self.answer != Answer::AsIs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(bytes: &[u8]) -> (Vec<u8>, bool) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut s = bytes;
        match rt.block_on(first_read(&mut s, Duration::from_secs(1))) {
            First::Bytes(b, c) => (b, c),
            First::Nothing => (Vec::new(), false),
        }
    }

    /// A reader that hands out one byte per read, like a client trickling its first bytes.
    struct Trickle<'a>(&'a [u8]);

    impl tokio::io::AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if let Some((b, rest)) = self.0.split_first() {
                buf.put_slice(&[*b]);
                self.0 = rest;
            }
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn an_h2c_preface_is_read_whole_and_answers_the_peek_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut wire = H2_PREFACE.to_vec();
        wire.extend_from_slice(b"\x00\x00\x00\x04");
        let First::Bytes(b, false) =
            rt.block_on(first_read(&mut Trickle(&wire), Duration::from_secs(1)))
        else {
            panic!("not read as plain bytes")
        };
        assert!(b.starts_with(H2_PREFACE), "{b:?}");
        let mut peeked = [0u8; 24];
        assert!(Shim::new(b, false).peek(&mut peeked));
        assert_eq!(&peeked[..], H2_PREFACE);

        // HTTP/1.1: one byte decides, and the peek answers with what there is.
        let First::Bytes(b, false) = rt.block_on(first_read(
            &mut Trickle(b"GET / HTTP/1.1\r\n"),
            Duration::from_secs(1),
        )) else {
            panic!("not read as plain bytes")
        };
        assert_eq!(b, b"G");
        let mut peeked = [7u8; 24];
        assert!(Shim::new(b, false).peek(&mut peeked));
        assert_eq!(peeked[0], b'G');
        assert!(peeked[1..].iter().all(|&x| x == 0));
        assert!(!Shim::default().peek(&mut peeked), "nothing read ahead");
    }

    #[test]
    fn a_connect_becomes_a_tunnel_request_with_its_headers() {
        let (b, connect) = first(
            b"CONNECT db.example.com:5432 HTTP/1.1\r\nHost: db.example.com:5432\r\n\
              Authorization: Pomerium abc\r\nContent-Length: 5\r\n\r\nearly",
        );
        assert!(connect);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "GET / HTTP/1.1\r\nHost: db.example.com:5432\r\nUpgrade: tcp\r\nConnection: upgrade\r\n\
             Authorization: Pomerium abc\r\n\r\nearly"
        );
    }

    #[test]
    fn anything_else_is_handed_over_as_read() {
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(first(get), (get.to_vec(), false));
        // A CONNECT to a path, or with a bad port, is Pingora's to refuse.
        for bad in [
            &b"CONNECT /x HTTP/1.1\r\n\r\n"[..],
            b"CONNECT a:99999 HTTP/1.1\r\n\r\n",
            b"CONNECT a\"b:1 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(first(bad), (bad.to_vec(), false), "{bad:?}");
        }
        assert_eq!(first(b""), (Vec::new(), false));
    }
}
