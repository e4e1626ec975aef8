//! Runs the browser end-to-end suite (`tests/e2e/`, Node.js + playwright-core + Debian's
//! Chromium + oidc-provider) against the `vallum` binary this build produced. Its own test
//! binary, so cargo runs it apart from the integration tests rather than alongside them.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Far above the suite's usual two to three minutes; each scenario has its own two-minute limit.
const DEADLINE: Duration = Duration::from_secs(15 * 60);

#[test]
fn browser_end_to_end() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    assert!(
        dir.join("node_modules/oidc-provider").exists() && dir.join("node_modules/playwright-core").exists(),
        "the e2e dependencies are not installed: run `npm ci --prefix tests/e2e` (Node.js 20.19+), \
         and `apt-get install chromium` for the browser"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: `apt-get install chromium` (or set CHROMIUM)"
    );
    // Its own process group, so a run that overstays its deadline is killed with every
    // browser and server it started, and the test fails instead of holding CI to its limit.
    let mut child = Command::new("node")
        .args([
            "--test",
            "--test-concurrency=1",
            "--test-force-exit",
            "--test-reporter=spec",
            "e2e.test.mjs",
        ])
        .current_dir(&dir)
        .env("VALLUM_BIN", env!("CARGO_BIN_EXE_vallum"))
        .env("CHROMIUM", &chromium)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); install Node.js 20.19+"));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < DEADLINE => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Ok(None) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                panic!(
                    "the browser scenarios did not finish within {} s and were killed \
                     (the scenario running last is named above)",
                    DEADLINE.as_secs()
                );
            }
            Err(e) => panic!("cannot wait for node: {e}"),
        }
    };
    assert!(
        status.success(),
        "browser scenarios failed (diagnostics above; screenshots in target/e2e-artifacts/)"
    );
}
