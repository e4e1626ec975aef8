//! `vallum demo`, as the README runs it: sign in as a demo user through the real redirects, see
//! the protected page (with a verified assertion), get 403 where policy says no, stop cleanly.

use crate::signin::Browser;
use crate::support::bin;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A base port with the next two free too.
fn three_free_ports() -> u16 {
    for _ in 0..50 {
        let p = crate::support::free_port();
        if p < 65000 && (1..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
    panic!("no three consecutive free ports");
}

fn browser(port: u16) -> Browser {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let names: Vec<String> = ["public", "app", "admin", "eng", "authenticate"]
        .iter()
        .map(|h| format!("{h}.localhost"))
        .collect();
    Browser::resolving(&names.iter().map(|n| (n.as_str(), addr)).collect::<Vec<_>>())
}

/// Follows redirects to the demo IdP's page, picks `user`, and follows the rest.
async fn sign_in(b: &Browser, url: &str, user: &str) -> crate::support::Resp {
    let (page, hops) = b.browse(url).await;
    assert_eq!(page.status, 200, "{hops:#?}");
    assert!(
        page.body.contains("Vallum demo identity provider"),
        "{}",
        page.body
    );
    let form = page
        .body
        .split("<form")
        .find(|f| f.contains(&format!("name=\"user\" value=\"{user}\"")))
        .expect("a form for the user");
    let fields: HashMap<String, String> = form
        .split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|i| {
            let name = i.split("name=\"").nth(1)?.split('"').next()?;
            let value = i.split("value=\"").nth(1)?.split('"').next()?;
            Some((
                name.to_string(),
                value.replace("&amp;", "&").replace("&quot;", "\""),
            ))
        })
        .collect();
    let idp = hops
        .last()
        .unwrap()
        .split("/authorize")
        .next()
        .unwrap()
        .to_string();
    let r = b
        .client
        .post(format!("{idp}/authorize"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let next = r.headers()["location"].to_str().unwrap().to_string();
    b.browse(&next).await.0
}

#[tokio::test]
async fn the_readme_demo_works() {
    let port = three_free_ports();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let mut child = Command::new(bin())
        .args(["demo", "--port", &port.to_string()])
        .stdout(std::fs::File::create(dir.path().join("demo.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !read(&log).contains("identity provider discovered") {
        assert!(
            Instant::now() < deadline,
            "demo did not come up:\n{}",
            read(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let banner = read(&dir.path().join("demo.out"));
    assert!(
        banner.contains(&format!("http://app.localhost:{port}")) && banner.contains("alice"),
        "{banner}"
    );

    let url = |h: &str| format!("http://{h}.localhost:{port}/");
    let public = browser(port).browse(&url("public")).await.0;
    assert_eq!(public.status, 200);
    assert!(public
        .body
        .contains("No <code>X-Pomerium-Jwt-Assertion</code>"));

    let alice = browser(port);
    let page = sign_in(&alice, &url("app"), "alice").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("The JWT assertion verified"),
        "{}",
        page.body
    );
    assert!(page.body.contains("alice@demo.vallum.dev"));
    assert_eq!(
        alice.browse(&url("admin")).await.0.status,
        200,
        "alice is an admin"
    );
    assert_eq!(alice.browse(&url("eng")).await.0.status, 200);

    let eve = browser(port);
    assert_eq!(sign_in(&eve, &url("app"), "eve").await.status, 200);
    assert_eq!(
        eve.browse(&url("admin")).await.0.status,
        403,
        "eve is not an admin"
    );
    assert_eq!(
        eve.browse(&url("eng")).await.0.status,
        403,
        "the deny rule refuses eve"
    );

    let sigint = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sigint.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let _ = status;
            break;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `conf/demo.yaml` is exactly what `vallum demo` runs with its default ports.
#[test]
fn conf_demo_yaml_is_the_demo_config() {
    let generated = vallum::demo::config(
        8000,
        std::net::SocketAddr::from(([127, 0, 0, 1], 8001)),
        std::net::SocketAddr::from(([127, 0, 0, 1], 8002)),
    );
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/demo.yaml")).unwrap();
    assert_eq!(
        shipped, generated,
        "regenerate conf/demo.yaml from vallum::demo::config"
    );
}
