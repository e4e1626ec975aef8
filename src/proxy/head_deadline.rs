//! A deadline for the request head. Pingora reads a head under its per-read timeout only (60 s
//! on a new connection, the keep-alive timeout after that), and `timeout_read` starts to apply
//! once the head is parsed, so a client that sends part of a head and waits, or trickles it a
//! byte at a time, could hold a connection for minutes. The deadline runs from accept on a new
//! connection (the time to the first byte counts) and from the first byte of each next request
//! on a kept-alive one (before it, `timeout_idle` governs), and ends when the head is parsed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

#[derive(Debug, Default)]
pub struct HeadDeadline {
    limit: Duration,
    /// When the head must be complete; `None` while disarmed or not yet started.
    until: Option<Instant>,
    /// Waiting for the first byte of a kept-alive connection's next request.
    on_first_byte: bool,
    /// A head has begun and is still incomplete: the clock is read (and `until` set) only if a
    /// read has to wait for more of it, so a head that arrives whole costs no clock read.
    started: bool,
    /// Set by the proxy when the head has been parsed (`request_filter` runs).
    done: AtomicBool,
    /// Set by the proxy when a request ends: the connection's next head, if any, is timed
    /// from its first byte, with this limit (milliseconds).
    next: AtomicBool,
    next_limit_ms: AtomicU64,
    /// The timer, made only when a read has to wait while the deadline runs.
    timer: Option<Pin<Box<Sleep>>>,
}

impl HeadDeadline {
    /// A new connection: the clock starts now.
    pub fn start_now(&mut self, limit: Duration) {
        self.reset(limit);
        self.until = Some(Instant::now() + limit);
    }

    /// A kept-alive connection: the clock starts with the next request's first byte.
    fn start_at_first_byte(&mut self, limit: Duration) {
        self.reset(limit);
        self.on_first_byte = true;
    }

    /// No deadline (HTTP/2: its frames are not a head).
    pub fn off(&mut self) {
        self.reset(Duration::ZERO);
    }

    fn reset(&mut self, limit: Duration) {
        self.limit = limit;
        self.until = None;
        self.on_first_byte = false;
        self.started = false;
        self.done.store(false, Ordering::Relaxed);
    }

    /// The head has been parsed: the deadline no longer applies.
    pub fn head_received(&self) {
        self.done.store(true, Ordering::Relaxed);
    }

    /// The request has ended (HTTP/1 keeps the connection for the next one, read by Pingora
    /// without coming back through the app): time the next head from its first byte.
    pub fn request_ended(&self, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.next_limit_ms.store(ms, Ordering::Relaxed);
        self.next.store(true, Ordering::Release);
    }

    /// Starts timing the next head if the last request has ended; `true` when it had (the next
    /// bytes begin a new head).
    pub fn take_next(&mut self) -> bool {
        if !self.next.swap(false, Ordering::Acquire) {
            return false;
        }
        let limit = Duration::from_millis(self.next_limit_ms.load(Ordering::Relaxed));
        self.start_at_first_byte(limit);
        true
    }

    /// After a read returned `got` bytes: starts the clock on a first byte, and says whether
    /// the deadline has passed.
    pub fn after_read(&mut self, got: usize) -> bool {
        if self.done.load(Ordering::Relaxed) {
            return false;
        }
        if self.on_first_byte {
            if got > 0 {
                self.on_first_byte = false;
                self.started = true;
            }
            return false;
        }
        self.until.is_some_and(|u| Instant::now() >= u)
    }

    /// While a read waits: `Ready` once the deadline has passed.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.started && self.until.is_none() && !self.done.load(Ordering::Relaxed) {
            // The head began in the last read and the rest has to be waited for: the clock
            // starts now (a few microseconds after its first byte).
            self.until = Some(Instant::now() + self.limit);
        }
        let Some(until) = self.until.filter(|_| !self.done.load(Ordering::Relaxed)) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(until);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

/// The error a read gets when the head is late.
pub fn late() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the request head did not arrive within timeout_read",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_alive_clock_starts_at_the_first_byte_and_stops_at_the_head() {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut d = HeadDeadline::default();
        d.start_at_first_byte(Duration::ZERO);
        assert!(!d.after_read(0), "no byte yet: the idle timeout's business");
        assert!(
            d.poll_expired(&mut cx).is_pending(),
            "nothing started: no timer"
        );
        assert!(!d.after_read(1), "a head that arrives whole is never timed");
        assert!(d.until.is_none());
        // The rest of the head has to be waited for: the clock starts, and a zero limit has
        // passed by the next read.
        rt.block_on(async {
            let _ = d.poll_expired(&mut cx);
        });
        assert!(d.until.is_some());
        assert!(d.after_read(1));
        d.head_received();
        assert!(!d.after_read(10), "parsed: no deadline");
        d.start_now(Duration::from_secs(60));
        assert!(!d.after_read(1));
        d.off();
        assert!(!d.after_read(1));
        d.head_received();
        d.request_ended(Duration::ZERO);
        assert!(d.take_next(), "a new head begins");
        assert!(!d.take_next(), "once");
        assert!(!d.after_read(0), "the next head has not started");
        assert!(
            !d.after_read(1) && d.started,
            "it started, untimed until a read waits"
        );
    }
}
