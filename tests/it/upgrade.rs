//! Zero-downtime binary upgrade: a second process started with `-u` takes over the listening
//! socket from the first (Pingora's fd transfer), and no connection attempt fails meanwhile.

use crate::support::{bin, free_port, Gateway, Upstream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn graceful_upgrade_hands_over_the_socket_without_failures() {
    let up = Upstream::echo("up").await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let pingora_conf = dir.path().join("pingora.yaml");
    std::fs::write(
        &pingora_conf,
        format!(
            "version: 1\npid_file: {d}/vallum.pid\nupgrade_sock: {d}/upgrade.sock\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 2\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let conf_arg = pingora_conf.display().to_string();
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\nroutes:\n  - from: http://app.test\n    to: {}\n    allow_public_unauthenticated_access: true\n",
        up.url()
    );
    let old = Gateway::start_with_args(dir, port, &text, &[], &["--conf", &conf_arg]).await;

    // A client loop on fresh connections: any refused or failed request is a dropped request.
    let stop = Arc::new(AtomicBool::new(false));
    let errors: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let retried = Arc::new(AtomicUsize::new(0));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .unwrap();
    let url = old.url("/");
    let looper = {
        let (stop, sent, failed, errors, retried) = (
            stop.clone(),
            sent.clone(),
            failed.clone(),
            errors.clone(),
            retried.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let mut r = client.get(&url).header("host", "app.test").send().await;
                // A connection the old process accepted but had read nothing from when it shut
                // down is closed without a response; like browsers, retry such a GET once.
                if matches!(&r, Err(e) if e.is_request() && !e.is_timeout()) {
                    retried.fetch_add(1, Ordering::SeqCst);
                    r = client.get(&url).header("host", "app.test").send().await;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                match r {
                    Ok(r) if r.status() == 200 => {}
                    other => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.lock().unwrap().push(format!("{other:?}"));
                    }
                }
            }
        })
    };

    let new_log = std::fs::File::create(old.dir.path().join("new.log")).unwrap();
    let mut new = Command::new(bin())
        .args(["run", "-u", "--conf", &conf_arg, "-c"])
        .arg(&old.config)
        .env("VALLUM_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(new_log)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quit = Command::new("kill")
        .args(["-QUIT", &old.pid().to_string()])
        .status()
        .unwrap();
    assert!(quit.success());

    // The old process drains and exits; the new one keeps serving.
    let deadline = Instant::now() + Duration::from_secs(15);
    while Command::new("kill")
        .args(["-0", &old.pid().to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        // A zombie still answers `kill -0`; check its state instead.
        let state =
            std::fs::read_to_string(format!("/proc/{}/stat", old.pid())).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(Instant::now() < deadline, "old process did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    looper.await.unwrap();

    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    let _ = new.kill();
    let _ = new.wait();
    assert!(
        sent > 20 && sent > after,
        "requests were sent throughout, and after the old process exited ({sent})"
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {sent} requests failed during the upgrade ({} retried): {:?}",
        retried.load(Ordering::SeqCst),
        errors.lock().unwrap()
    );
}
