//! The per-request log lines through the running gateway: every one reaches the log, also when
//! the gateway stops right after the requests; a destination that stops reading never holds a
//! request up, and what it costs is counted and reported.

use crate::support::{bin, free_port, scrape, Gateway, Upstream};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

fn public_route(up: &Upstream) -> String {
    format!(
        "routes:\n  - from: http://public.localhost\n    to: {}\n    allow_public_unauthenticated_access: true\n",
        up.url()
    )
}

#[tokio::test]
async fn every_access_line_reaches_the_log_even_when_the_gateway_stops_at_once() {
    let up = Upstream::echo("app").await;
    let mut gw = Gateway::insecure(&public_route(&up)).await;
    let host = format!("public.localhost:{}", gw.port);
    for i in 0..300 {
        assert_eq!(gw.get(&host, &format!("/n{i}")).await.status, 200);
    }
    gw.signal("TERM");
    assert!(gw.exited_within(Duration::from_secs(10)).await.is_some());
    let log = gw.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("vallum::access: http-request") && l.contains("path=\"/n"))
        .count();
    assert_eq!(lines, 300, "one access line per request, none lost at exit");
}

#[tokio::test]
async fn a_log_destination_that_stops_reading_never_holds_a_request_up() {
    let up = Upstream::echo("app").await;
    let (port, metrics) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vallum.yaml");
    std::fs::write(
        &config,
        format!(
            "address: 127.0.0.1:{port}\ninsecure_server: true\nmetrics_address: 127.0.0.1:{metrics}\n{}",
            public_route(&up)
        ),
    )
    .unwrap();
    // stderr is a pipe nobody reads: it fills, then the queue does.
    let mut child = Command::new(bin())
        .args(["run", "-c"])
        .arg(&config)
        .env("VALLUM_LOG_FORMAT", "text")
        .env("VALLUM_LOG", "info")
        .env("VALLUM_LOG_QUEUE", "64")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = crate::support::client();
    let url = format!("http://127.0.0.1:{port}/");
    let mut ready = false;
    for _ in 0..200 {
        let r = client
            .get(&url)
            .header("host", "public.localhost")
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the gateway did not start");
    // The writer widened the pipe (so a tick's lines go in one write under load).
    let size = rustix::pipe::fcntl_getpipe_size(child.stderr.as_ref().unwrap()).unwrap();
    assert!(size >= 1 << 20, "stderr's pipe holds {size} bytes");
    // About 5,000 lines fill the pipe; the queue of 64 then overflows.
    let mut dropped = 0u64;
    for i in 0..30_000 {
        let r = client
            .get(format!("{url}r{i}"))
            .header("host", "public.localhost")
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} not served while the log is blocked: {e}"));
        assert_eq!(r.status(), 200);
        if i % 500 == 499 {
            let text = scrape(metrics, None).await.1;
            dropped = text
                .lines()
                .find_map(|l| l.strip_prefix("vallum_log_lines_dropped_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if dropped > 0 {
                break;
            }
        }
    }
    assert!(dropped > 0, "the overflow is counted: {dropped}");

    // Reading again: the writer catches up and reports what it dropped.
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 65536];
        while !seen.contains("log lines dropped") {
            match err.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    // One more request wakes the writer after the reader has drained the pipe.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = client
        .get(&url)
        .header("host", "public.localhost")
        .send()
        .await;
    let seen = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.contains("log lines dropped"),
        "the drop is reported in the log"
    );
    assert!(seen.contains("dropped="), "with its count");
}
