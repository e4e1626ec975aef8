//! Runs the browser end-to-end suite (`tests/e2e/`, Node.js + playwright-core + Debian's
//! Chromium + oidc-provider) against the `vallum` binary this build produced. Its own test
//! binary, so cargo runs it apart from the integration tests rather than alongside them.

use std::path::Path;
use std::process::Command;

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
    let status = Command::new("node")
        .args([
            "--test",
            "--test-concurrency=1",
            "--test-reporter=spec",
            "e2e.test.mjs",
        ])
        .current_dir(&dir)
        .env("VALLUM_BIN", env!("CARGO_BIN_EXE_vallum"))
        .env("CHROMIUM", &chromium)
        .status()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); install Node.js 20.19+"));
    assert!(
        status.success(),
        "browser scenarios failed (diagnostics above; screenshots in target/e2e-artifacts/)"
    );
}
