//! The per-request log lines (access and authorize), written without the request waiting.
//!
//! Through `tracing`'s formatter, the two lines cost a request about 16 µs: a generic serializer
//! for each field and one `write(2)` on stderr per line, in the request's own thread. Here a line
//! is built straight into a reused string in the formatter's exact shape (JSON or text, same
//! fields, same order) and appended to its thread's own buffer; one thread of its own takes every
//! buffer whole every 10 ms and writes each out as it is, one `write(2)` a thread a tick (a pipe
//! on stderr is widened to 1 MiB). A line therefore costs its request no allocation, no free on
//! another thread and no shared queue: only an uncontended lock and a copy. A destination that
//! is slow or blocked fills the buffers and nothing else: past 16,384 lines waiting in one
//! thread's buffer new ones are dropped, counted (`vallum_log_lines_dropped_total`) and reported
//! in a log line (`VALLUM_LOG_QUEUE` sets another size). The buffers are written out before the
//! process exits (shutdown, graceful upgrade).
//!
//! Lines keep their order within a thread; lines of different threads reach the destination a
//! tick's worth of buffers at a time, each line with its own timestamp. Other log lines (start-up,
//! reloads, warnings, refusals) go through `tracing`'s formatter, which writes them through a
//! non-blocking writer of its own ([`tracing_writer`]): they are rarer, and a line from one path
//! can reach the destination a few milliseconds after one written later through the other.

use super::escape::{debug_str, json_str, plain};
use prometheus::IntCounter;
use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines waiting at most in one thread's buffer, unless `VALLUM_LOG_QUEUE` says otherwise (a
/// bigger burst to absorb, or, in tests, a small one to fill).
const QUEUE: usize = 16_384;

#[allow(clippy::expect_used)] // constant options, valid by construction
pub static DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "vallum_log_lines_dropped_total",
        "Access and authorize lines dropped because the log destination fell behind (buffer full)",
    )
    .expect("a valid metric")
});

/// A field's name as a line writes it, both forms spelt out at compile time ([`key!`]): one
/// copy per field instead of three.
#[derive(Clone, Copy)]
pub struct Key {
    json: &'static str,
    text: &'static str,
}

/// The [`Key`] of a field named by a literal (Vallum's own names, plain by construction).
macro_rules! key {
    ($name:literal) => {
        $crate::telemetry::lines::Key::new(concat!(",\"", $name, "\":"), concat!(" ", $name, "="))
    };
}
pub(crate) use key;

impl Key {
    #[doc(hidden)]
    pub const fn new(json: &'static str, text: &'static str) -> Key {
        Key { json, text }
    }
}

/// The writer: its format, and where an exit asks for a last flush.
struct Writer {
    json: bool,
    flush: SyncSender<SyncSender<()>>,
}

static WRITER: OnceLock<Writer> = OnceLock::new();
/// Lines waiting at most per thread (`QUEUE` or `VALLUM_LOG_QUEUE`).
static LIMIT: AtomicUsize = AtomicUsize::new(QUEUE);
/// Every thread's buffer that has held a line, for the writer to take.
static BUFFERS: Mutex<Vec<Arc<Buffer>>> = Mutex::new(Vec::new());
/// Flushes `tracing`'s non-blocking writer when dropped (taken at exit).
static TRACING_GUARD: Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> = Mutex::new(None);

/// One thread's lines not yet taken by the writer. The lock is the thread's own but for the
/// moment once a tick when the writer swaps the bytes out.
#[derive(Default)]
struct Buffer(Mutex<Pending>);

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
}

thread_local! {
    /// This thread's buffer, registered with the writer on the thread's first line.
    static MINE: Arc<Buffer> = {
        let b = Arc::new(Buffer::default());
        BUFFERS.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::clone(&b));
        b
    };
    /// The string the thread's next line is built in, kept with its capacity between lines.
    static SCRATCH: Cell<String> = const { Cell::new(String::new()) };
}

/// The writer for `tracing`'s formatter: stderr through a bounded queue and a thread of its own
/// (tracing-appender), buffered and flushed whenever the queue runs dry, so no log line at all
/// waits on the destination in a request's thread.
pub fn tracing_writer() -> tracing_appender::non_blocking::NonBlocking {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("vallum-log-events")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    if let Ok(mut g) = TRACING_GUARD.lock() {
        *g = Some(guard);
    }
    writer
}

/// Starts the writer thread; lines are JSON unless `json` is false (`VALLUM_LOG_FORMAT=text`).
pub fn install(json: bool) -> std::io::Result<()> {
    let limit = std::env::var("VALLUM_LOG_QUEUE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(QUEUE);
    LIMIT.store(limit, Ordering::Relaxed);
    let (flush, asked) = mpsc::sync_channel(4);
    widen_pipe();
    std::thread::Builder::new()
        .name("vallum-log".into())
        .spawn(move || write_out(asked, json))?;
    let _ = WRITER.set(Writer { json, flush });
    Ok(())
}

/// A pipe on stderr (a log shipper reading it) holds 64 KiB by default, less than the lines of
/// one tick under load: the writer thread then blocks and is woken several times a tick, on the
/// proxy's cores. 1 MiB, Linux's default ceiling, takes a tick's lines in one go. Best effort.
fn widen_pipe() {
    use rustix::fs::FileType;
    let stderr = std::io::stderr();
    let fifo = rustix::fs::fstat(&stderr)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Fifo);
    if fifo {
        let _ = rustix::pipe::fcntl_setpipe_size(&stderr, 1 << 20);
    }
}

/// Whether lines are JSON (the default, also before `install`).
fn json() -> bool {
    WRITER.get().is_none_or(|w| w.json)
}

/// Appends a finished line to this thread's buffer; without a writer (library use, tests), or
/// in a thread already being torn down, it is written at once.
fn emit(line: &str) {
    if WRITER.get().is_none() || MINE.try_with(|b| append(b, line)).is_err() {
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

fn append(buffer: &Buffer, line: &str) {
    let mut p = buffer.0.lock().unwrap_or_else(PoisonError::into_inner);
    if p.lines >= LIMIT.load(Ordering::Relaxed) {
        drop(p);
        DROPPED.inc();
        return;
    }
    p.bytes.extend_from_slice(line.as_bytes());
    p.lines += 1;
}

/// Writes out what is waiting, waiting at most a second (the process is about to exit).
pub fn flush_before_exit() {
    if let Some(guard) = TRACING_GUARD.lock().ok().and_then(|mut g| g.take()) {
        drop(guard);
    }
    if let Some(w) = WRITER.get() {
        let (done, finished) = mpsc::sync_channel(1);
        if w.flush.send(done).is_ok() {
            let _ = finished.recv_timeout(Duration::from_secs(1));
        }
    }
}

/// How often the writer takes the buffers. It never sleeps on them: a request's thread that had
/// to wake it would pay a futex call and, on a pinned core, a context switch per line (that cost
/// 20 µs per request); a buffer nobody waits on costs an append and nothing else.
const TICK: Duration = Duration::from_millis(10);

fn write_out(asked: Receiver<SyncSender<()>>, json: bool) {
    // Each thread's bytes are already one block (~180 KB a tick at 30,000 requests/s): written as
    // they are, not copied into a buffer of the writer's first, which cost a second pass over
    // them and as much again of the cache the proxy's threads share.
    let mut out = std::io::stderr();
    // Swapped with each thread's bytes in turn, so the buffers keep their capacity.
    let mut spare = Vec::new();
    let mut reported = 0u64;
    let mut last_report: Option<Instant> = None;
    loop {
        std::thread::sleep(TICK);
        // Asked before the buffers are taken: every line emitted before the ask is written.
        let waiting: Vec<SyncSender<()>> = asked.try_iter().collect();
        take_buffers(&mut out, &mut spare);
        for done in waiting {
            let _ = done.try_send(());
        }
        let dropped = DROPPED.get();
        if dropped > reported && super::once_a_minute(&mut last_report) {
            let mut l = Line::start(
                "WARN",
                "vallum::telemetry::lines",
                "log lines dropped: the log destination fell behind",
                json,
            );
            l.num(key!("dropped"), dropped - reported);
            let _ = out.write_all(l.finish().as_bytes());
            reported = dropped;
        }
    }
}

/// Writes out every thread's waiting lines, and forgets the buffers of threads that have ended
/// once they are empty.
fn take_buffers(out: &mut impl std::io::Write, spare: &mut Vec<u8>) {
    let buffers = BUFFERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for b in &buffers {
        {
            let mut p = b.0.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut p.bytes, spare);
            p.lines = 0;
        }
        let _ = out.write_all(spare);
        spare.clear();
    }
    drop(buffers);
    // Only the list holds the buffer of a thread that has ended: nothing can add to it now.
    BUFFERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|b| {
            Arc::strong_count(b) > 1
                || !b
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .bytes
                    .is_empty()
        });
}
thread_local! {
    /// The date and time to the second, formatted once per second per thread.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// One line in `tracing-subscriber`'s shape: JSON (`{"timestamp":…,"level":…,"message":…,
/// fields…,"target":…}`) or text (`timestamp  LEVEL target: message field=value…`).
pub struct Line {
    buf: String,
    json: bool,
    target: &'static str,
}

impl Line {
    /// An `INFO` line of `target` saying `message`: both Vallum's own names, plain by
    /// construction, so neither is tested for characters to escape.
    pub fn info(target: &'static str, message: &'static str) -> Line {
        Line::start("INFO", target, message, json())
    }

    fn start(level: &str, target: &'static str, message: &'static str, json: bool) -> Line {
        debug_assert!(plain(message.as_bytes(), true) && plain(target.as_bytes(), true));
        // This thread's last line's string, with its capacity: no allocation per line.
        let mut buf = SCRATCH.try_with(Cell::take).unwrap_or_default();
        buf.clear();
        buf.reserve(512);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if json {
            buf.push_str("{\"timestamp\":\"");
            timestamp(&mut buf, now);
            buf.push_str("\",\"level\":\"");
            buf.push_str(level);
            buf.push_str("\",\"message\":\"");
            buf.push_str(message);
            buf.push('"');
        } else {
            timestamp(&mut buf, now);
            let _ = write!(buf, " {level:>5} {target}: {message}");
        }
        Line { buf, json, target }
    }

    pub fn str(&mut self, key: Key, value: &str) {
        self.key(key);
        if self.json {
            json_str(&mut self.buf, value);
        } else {
            debug_str(&mut self.buf, value);
        }
    }

    /// A request's method: an HTTP token (`http::Method` admits nothing else), which needs no
    /// escaping in either form.
    pub fn method(&mut self, key: Key, method: &http::Method) {
        self.key(key);
        self.buf.push('"');
        self.buf.push_str(method.as_str());
        self.buf.push('"');
    }

    /// The client's address, `""` when unknown; an address needs no escaping in either form.
    pub fn ip(&mut self, key: Key, ip: Option<std::net::IpAddr>) {
        self.key(key);
        self.buf.push('"');
        if let Some(ip) = ip {
            crate::text::push_ip(&mut self.buf, ip);
        }
        self.buf.push('"');
    }

    /// Strings joined by commas as one string field, without building the joined string where
    /// none needs escaping (a decision's reasons).
    pub fn joined<'s>(&mut self, key: Key, items: impl Iterator<Item = &'s str> + Clone) {
        if !items.clone().all(|s| plain(s.as_bytes(), true)) {
            let all: Vec<&str> = items.collect();
            return self.str(key, &all.join(","));
        }
        self.key(key);
        self.buf.push('"');
        for (i, s) in items.enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            self.buf.push_str(s);
        }
        self.buf.push('"');
    }

    pub fn num(&mut self, key: Key, value: impl itoa::Integer) {
        self.key(key);
        crate::text::push_int(&mut self.buf, value);
    }

    /// A duration in milliseconds, the exact decimal of its nanoseconds (`1.0`, `0.514047`): the
    /// number a float of `nanos / 1e6` reads back as, which `{:?}` wrote through about 650
    /// instructions of float formatting (`load/profile.sh`).
    pub fn millis(&mut self, key: Key, d: Duration) {
        self.key(key);
        let nanos = d.as_nanos();
        crate::text::push_int(&mut self.buf, nanos / 1_000_000);
        self.buf.push('.');
        let frac = (nanos % 1_000_000) as u32;
        if frac == 0 {
            self.buf.push('0');
            return;
        }
        // A leading 1 keeps the fraction's leading zeros; the trailing ones go.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(1_000_000 + frac);
        self.buf.push_str(digits[1..].trim_end_matches('0'));
    }

    pub fn bool(&mut self, key: Key, value: bool) {
        self.key(key);
        self.buf.push_str(if value { "true" } else { "false" });
    }

    fn key(&mut self, key: Key) {
        debug_assert!(plain(key.text.as_bytes(), true), "{}", key.text);
        self.buf
            .push_str(if self.json { key.json } else { key.text });
    }

    /// The line, ended, for the writer.
    pub fn finish(mut self) -> String {
        if self.json {
            self.buf.push_str(",\"target\":\"");
            self.buf.push_str(self.target);
            self.buf.push_str("\"}");
        }
        self.buf.push('\n');
        self.buf
    }

    /// Ends the line and hands it to the writer.
    pub fn emit(self) {
        let line = self.finish();
        emit(&line);
        let _ = SCRATCH.try_with(|s| s.set(line));
    }
}

/// RFC 3339 in UTC with microseconds, as `tracing-subscriber` writes it.
fn timestamp(buf: &mut String, now: Duration) {
    let secs = now.as_secs();
    SECOND.with(|cell| {
        let mut c = cell.borrow_mut();
        if c.0 != secs {
            c.1.clear();
            if let Some(t) = chrono::DateTime::from_timestamp(secs as i64, 0) {
                let _ = write!(c.1, "{}", t.format("%Y-%m-%dT%H:%M:%S"));
            }
            c.0 = secs;
        }
        buf.push_str(&c.1);
    });
    // `.{:06}Z` without the formatting machinery (this runs twice a logged request): a leading 1
    // keeps the leading zeros, and the string is pushed whole, not char by char.
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(1_000_000 + now.subsec_micros());
    buf.push('.');
    buf.push_str(&digits[1..]);
    buf.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_takes_every_threads_lines_in_order_and_forgets_ended_threads() {
        let before = DROPPED.get();
        let lines = std::thread::spawn(|| {
            MINE.with(|b| {
                for i in 0..LIMIT.load(Ordering::Relaxed) + 2 {
                    append(b, &format!("line {i}\n"));
                }
                Arc::downgrade(b)
            })
        });
        let ended = lines.join().unwrap();
        // Past the cap, the two lines too many are dropped and counted.
        assert!(DROPPED.get() >= before + 2);
        let (mut out, mut spare) = (Vec::new(), Vec::new());
        take_buffers(&mut out, &mut spare);
        let text = String::from_utf8(out).unwrap();
        let want: String = (0..QUEUE).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, want);
        // Its thread has ended and its buffer is empty: the list lets it go.
        assert!(
            ended.upgrade().is_none(),
            "an ended thread's buffer is forgotten once written out"
        );
    }

    #[test]
    fn timestamps_carry_six_digits_of_microseconds() {
        for (nanos, want) in [
            (5_123_000, ".005123Z"),
            (0, ".000000Z"),
            (999_999_999, ".999999Z"),
        ] {
            let mut b = String::new();
            timestamp(&mut b, Duration::new(1_700_000_000, nanos));
            assert_eq!(b, format!("2023-11-14T22:13:20{want}"));
        }
    }

    #[test]
    fn milliseconds_read_back_as_the_float_of_the_nanoseconds() {
        let mut n: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut cases = vec![
            0,
            1,
            999,
            1_000_000,
            2_000_000,
            514_047,
            1_500_000,
            999_999_999,
        ];
        for _ in 0..10_000 {
            n ^= n << 13;
            n ^= n >> 7;
            n ^= n << 17;
            cases.push(n % 100_000_000_000);
        }
        for nanos in cases {
            let mut l = Line::start("INFO", "t", "m", false);
            let start = l.buf.len();
            l.millis(key!("d"), Duration::from_nanos(nanos));
            let text = &l.buf[start + " d=".len()..];
            let read: f64 = text.parse().unwrap();
            assert_eq!(read, nanos as f64 / 1e6, "{nanos} ns wrote {text}");
            assert!(text.contains('.') && !text.ends_with("00"), "{text}");
        }
    }

    #[test]
    fn json_lines_are_json_with_the_formatter_field_order() {
        let mut l = Line::start("INFO", "vallum::access", "http-request", true);
        l.str(key!("path"), "/a\"b\\c\n\u{1}é");
        let purge = http::Method::from_bytes(b"PURGE").unwrap();
        l.method(key!("method"), &purge);
        l.num(key!("response-code"), 200u16);
        l.millis(key!("duration"), Duration::from_micros(1500));
        l.bool(key!("allow"), true);
        l.joined(key!("reasons"), ["a", "b"].into_iter());
        l.joined(key!("odd"), ["x\"y", "z"].into_iter());
        let line = l.finish();
        assert!(line.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["message"], "http-request");
        assert_eq!(v["path"], "/a\"b\\c\n\u{1}é");
        assert_eq!(v["method"], "PURGE");
        assert_eq!(v["response-code"], 200);
        assert_eq!(v["duration"], 1.5);
        assert_eq!(v["allow"], true);
        assert_eq!(v["reasons"], "a,b");
        assert_eq!(v["odd"], "x\"y,z");
        assert_eq!(v["target"], "vallum::access");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        let keys: Vec<&str> = line
            .split("\":")
            .map(|k| k.rsplit('"').next().unwrap())
            .collect();
        assert_eq!(&keys[..3], ["timestamp", "level", "message"]);
    }

    #[test]
    fn text_lines_read_as_the_formatter_writes_them() {
        let mut l = Line::start("INFO", "vallum::access", "http-request", false);
        l.method(key!("method"), &http::Method::GET);
        l.str(key!("path"), "/quote\"d");
        l.num(key!("response-code"), 302u16);
        l.millis(key!("duration"), Duration::from_micros(500));
        let line = l.finish();
        let (ts, rest) = line.split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert_eq!(
            rest,
            " INFO vallum::access: http-request method=\"GET\" path=\"/quote\\\"d\" response-code=302 duration=0.5\n"
        );
    }
}
