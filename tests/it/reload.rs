//! Hot reload under load: the config is rewritten while a client keeps sending requests.

use crate::support::{Gateway, Upstream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

fn config(port: u16, routes: &[(&str, &str)]) -> String {
    let mut s = format!("address: 127.0.0.1:{port}\ninsecure_server: true\nroutes:\n");
    for (host, to) in routes {
        s.push_str(&format!("  - from: http://{host}\n    to: {to}\n    allow_public_unauthenticated_access: true\n"));
    }
    s
}

#[tokio::test]
async fn reload_while_serving_refuses_bad_configs_and_drops_nothing() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let c = Upstream::echo("c").await;
    let port = crate::support::free_port();
    let gw = Arc::new(Gateway::start_with(port, &config(port, &[("a.test", &a.url())]), &[]).await);

    // A client loop hammering the route that exists throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (gw, stop, sent, failed) = (gw.clone(), stop.clone(), sent.clone(), failed.clone());
        loops.push(tokio::spawn(async move {
            let client = crate::support::client();
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .get(gw.url("/"))
                    .header("host", "a.test")
                    .send()
                    .await;
                sent.fetch_add(1, Ordering::SeqCst);
                if !matches!(&r, Ok(resp) if resp.status() == 200) {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }

    // 1. A new route appears.
    gw.rewrite_config(&config(port, &[("a.test", &a.url()), ("b.test", &b.url())]));
    gw.eventually("b.test served", || async {
        gw.get("b.test", "/").await.status == 200
    })
    .await;

    // 2. An invalid config is refused and reported; the old routes keep working.
    gw.rewrite_config(&format!(
        "{}    prefx: /typo\n",
        config(port, &[("a.test", &a.url()), ("c.test", &c.url())])
    ));
    gw.eventually("refusal logged", || async {
        gw.log().contains("config reload refused")
    })
    .await;
    assert!(
        gw.log()
            .contains("prefx: unknown key; did you mean prefix?"),
        "{}",
        gw.log()
    );
    assert_eq!(
        gw.get("b.test", "/").await.status,
        200,
        "the previous snapshot still serves"
    );
    assert_eq!(gw.get("c.test", "/").await.status, 404);

    // 3. A valid config after the invalid one is taken; b.test goes away.
    gw.rewrite_config(&config(port, &[("a.test", &a.url()), ("c.test", &c.url())]));
    gw.eventually("c.test served", || async {
        gw.get("c.test", "/").await.status == 200
    })
    .await;
    assert_eq!(gw.get("b.test", "/").await.status, 404);

    // 4. Several quick rewrites in a row.
    for i in 0..5 {
        let host = format!("n{i}.test");
        gw.rewrite_config(&config(port, &[("a.test", &a.url()), (&host, &b.url())]));
        gw.eventually("new route", || async {
            gw.get(&host, "/").await.status == 200
        })
        .await;
    }

    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(sent > 50, "the client loop ran ({sent} requests)");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during reloads"
    );
}

#[tokio::test]
async fn sighup_forces_a_reload() {
    let a = Upstream::echo("a").await;
    let port = crate::support::free_port();
    let gw = Gateway::start_with(port, &config(port, &[("a.test", &a.url())]), &[]).await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    gw.eventually("SIGHUP handled", || async {
        gw.log().contains("SIGHUP: reloading config")
    })
    .await;
    assert_eq!(
        gw.get("a.test", "/").await.status,
        200,
        "still serving after SIGHUP"
    );
}
