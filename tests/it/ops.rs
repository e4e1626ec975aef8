//! What operators see: exact metric counts after a known sequence of requests, bounded labels,
//! access and authorize log lines without secrets, request ids, limits, and readiness that
//! follows Redis and IdP outages.

use crate::signin::Env;
use crate::support::idp::Mode;
use crate::support::redis::RedisServer;
use crate::support::{client, free_port, raw_request, scrape, Gateway, Upstream};
use std::time::Duration;

/// The value of the sample whose name and labels (in Prometheus' sorted order) are `series`.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn metrics_count_exactly_what_happened_and_labels_stay_bounded() {
    let up = Upstream::echo("app").await;
    let (port, mport, dead) = (free_port(), free_port(), free_port());
    let config = |extra: &str| {
        format!(
            "address: 127.0.0.1:{port}\ninsecure_server: true\nmetrics_address: 127.0.0.1:{mport}\n\
             metrics_basic_auth: c2NyYXBlcjpzM2NyZXQ=\nhealth_check_addr: ''\n{extra}\
             routes:\n  - from: http://pub.localhost\n    to: {u}\n    name: pub\n    allow_public_unauthenticated_access: true\n\
             \x20 - from: http://posts.localhost\n    to: {u}\n    name: posts-only\n    policy:\n      allow:\n        and:\n          - http_method: POST\n\
             \x20 - from: http://checked.localhost\n    to: [{u}, http://127.0.0.1:{dead}]\n    name: checked\n    allow_public_unauthenticated_access: true\n\
             \x20   health_checks:\n      - interval: 100ms\n        timeout: 1s\n        unhealthy_threshold: 1\n        healthy_threshold: 1\n        http_health_check:\n          path: /health\n",
            u = up.url()
        )
    };
    let gw = Gateway::start_with(port, &config(""), &[]).await;
    let (status, _) = scrape(mport, None).await;
    assert_eq!(status, 401, "basic auth required");
    let (status, _) = scrape(mport, Some("Basic c2NyYXBlcjp3cm9uZw==")).await;
    assert_eq!(status, 401, "wrong password refused");

    for _ in 0..3 {
        assert_eq!(
            gw.get("pub.localhost", "/users/alice@example.com/x")
                .await
                .status,
            200
        );
    }
    let r = gw
        .request(reqwest::Method::POST, "pub.localhost", "/form", &[])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.get("pub.localhost", "/?status=503").await.status, 503);
    for _ in 0..2 {
        assert_eq!(
            gw.get("nowhere.localhost", "/secret-path").await.status,
            404
        );
    }
    assert_eq!(gw.get("posts.localhost", "/").await.status, 403);
    let r = gw
        .request(reqwest::Method::POST, "posts.localhost", "/", &[])
        .await;
    assert_eq!(r.status, 200);

    let auth = Some("Basic c2NyYXBlcjpzM2NyZXQ=");
    // Metrics are recorded in the logging phase, just after the response reaches the client:
    // scrape until the last request's have landed (the in-flight gauge is back to 0).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (status, text) = loop {
        let (status, text) = scrape(mport, auth).await;
        let settled = sample(&text, "vallum_downstream_open_requests") == Some(0.0)
            && sample(
                &text,
                r#"vallum_http_request_duration_seconds_count{route="pub"}"#,
            ) == Some(5.0);
        if settled || std::time::Instant::now() > deadline {
            break (status, text);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 200);
    for (series, want) in [
        (
            r#"vallum_http_requests_total{method="read",route="pub",status="2xx"}"#,
            3.0,
        ),
        (
            r#"vallum_http_requests_total{method="write",route="pub",status="2xx"}"#,
            1.0,
        ),
        (
            r#"vallum_http_requests_total{method="read",route="pub",status="5xx"}"#,
            1.0,
        ),
        (
            r#"vallum_http_requests_total{method="read",route="-",status="4xx"}"#,
            2.0,
        ),
        (
            r#"vallum_http_requests_total{method="read",route="posts-only",status="4xx"}"#,
            1.0,
        ),
        (
            r#"vallum_http_requests_total{method="write",route="posts-only",status="2xx"}"#,
            1.0,
        ),
        (
            r#"vallum_http_request_duration_seconds_count{route="pub"}"#,
            5.0,
        ),
        (
            r#"vallum_upstream_duration_seconds_count{route="pub"}"#,
            5.0,
        ),
        (
            r#"vallum_upstream_duration_seconds_count{route="posts-only"}"#,
            1.0,
        ),
        (
            r#"vallum_authorize_decisions_total{decision="allow",reason="allowed",route="posts-only"}"#,
            1.0,
        ),
        (r#"vallum_downstream_open_requests"#, 0.0),
        (r#"vallum_config_reloads_total{result="success"}"#, f64::NAN),
    ] {
        let got = sample(&text, series);
        if want.is_nan() {
            assert_eq!(got, None, "{series} not yet present\n{text}");
        } else {
            assert_eq!(got, Some(want), "{series}\n{text}");
        }
    }
    let denied: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("vallum_authorize_decisions_total{decision=\"deny\"")
                && l.contains("route=\"posts-only\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(denied, 1.0, "{text}");
    assert!(text.contains("vallum_build_info{version=\""));
    let live = up.url().trim_start_matches("http://").to_string();
    let health = |text: &str, backend: &str| {
        sample(
            text,
            &format!("vallum_upstream_healthy{{backend=\"{backend}\",route=\"checked\"}}"),
        )
    };
    let mut text = text;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while health(&text, &live) != Some(1.0)
        || health(&text, &format!("127.0.0.1:{dead}")) != Some(0.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "upstream health not exported:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        text = scrape(mport, auth).await.1;
    }

    // A refused reload, then a good one.
    gw.rewrite_config(&config("timeout_read: nonsense\n"));
    gw.eventually("reload refused", || async {
        gw.log().contains("config reload refused")
    })
    .await;
    gw.rewrite_config(&config("timeout_read: 20s\n"));
    gw.eventually("reloaded", || async {
        gw.log().contains("config reloaded")
    })
    .await;
    let (_, text) = scrape(mport, auth).await;
    assert_eq!(
        sample(&text, r#"vallum_config_reloads_total{result="failure"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"vallum_config_reloads_total{result="success"}"#),
        Some(1.0)
    );
    assert!(sample(&text, "vallum_config_last_reload_success_timestamp_seconds").unwrap() > 1.7e9);

    // Labels name routes, classes and reasons; never a path, a host or a user.
    for line in text
        .lines()
        .filter(|l| l.starts_with("vallum_") && !l.starts_with("vallum_upstream_healthy"))
    {
        let Some(labels) = line
            .split_once('{')
            .map(|(_, r)| r.rsplit_once('}').unwrap().0)
        else {
            continue;
        };
        for bad in ["/", "@", "alice", "secret-path", "localhost"] {
            assert!(!labels.contains(bad), "label carries {bad:?}: {line}");
        }
    }
}

#[tokio::test]
async fn logs_carry_the_fields_and_never_a_secret() {
    let mport = free_port();
    let env = Env::with_routes(
        &format!("metrics_address: 127.0.0.1:{mport}\n"),
        "  - from: http://deny.localhost\n    to: {u}\n    policy:\n      allow:\n        and:\n          - email:\n              is: nobody@example.com\n",
    )
    .await;
    let b = env.browser();
    let (resp, _) = b
        .browse(&env.url("app", "/allowed?token=query-secret-123"))
        .await;
    assert_eq!(resp.status, 200);
    let cookie = b.cookie_for(&env.url("app", "/")).unwrap();
    let session_value = cookie.split('=').nth(1).unwrap().to_string();
    let allowed = b
        .client
        .get(env.url("app", "/again"))
        .header("authorization", "Bearer bearer-secret-456")
        .header("user-agent", "log-test/1.0")
        .header("referer", "https://ref.example/?code=referer-secret-789")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let allowed_id = allowed.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (denied, hops) = b.browse(&env.url("deny", "/no")).await;
    assert_eq!(denied.status, 403, "{hops:#?}");
    let denied_id = denied.header("x-request-id").unwrap().to_string();
    assert!(
        denied.body.contains(&denied_id),
        "the 403 page shows the request id"
    );

    let forged = b
        .client
        .get(env.url("authenticate", "/oauth2/callback?state=forged&code=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    let (_, metrics) = scrape(mport, None).await;
    for (series, want) in [
        (r#"vallum_sign_ins_total{reason="",stage="started"}"#, 1.0),
        (r#"vallum_sign_ins_total{reason="",stage="completed"}"#, 1.0),
        (
            r#"vallum_sign_ins_total{reason="csrf",stage="failed"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&metrics, series), Some(want), "{series}\n{metrics}");
    }
    let log = env.gw.log();
    let access = log
        .lines()
        .find(|l| l.contains("http-request") && l.contains(&allowed_id))
        .unwrap_or_else(|| panic!("no access line for {allowed_id}\n{log}"));
    for want in [
        "method=\"GET\"",
        "path=\"/again\"",
        "response-code=200",
        "user-agent=\"log-test/1.0\"",
        "referer=\"https://ref.example/\"",
        "upstream-cluster=\"route-0\"",
        "response-code-details=\"via_upstream\"",
    ] {
        assert!(access.contains(want), "{want} missing in {access}");
    }
    let authz = log
        .lines()
        .find(|l| l.contains(" authorize") && l.contains(&denied_id))
        .unwrap_or_else(|| panic!("no authorize line for {denied_id}\n{log}"));
    for want in [
        "allow=false",
        "deny=true",
        "user=\"alice-id\"",
        "email=\"alice@example.com\"",
        "reasons=",
    ] {
        assert!(authz.contains(want), "{want} missing in {authz}");
    }
    assert!(log
        .lines()
        .any(|l| l.contains(" authorize") && l.contains(&allowed_id) && l.contains("allow=true")));
    for secret in [
        session_value.as_str(),
        "bearer-secret-456",
        "query-secret-123",
        "referer-secret-789",
        env.idp.client_secret.as_str(),
    ] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}

#[tokio::test]
async fn logs_are_json_and_secret_free_even_at_trace_level() {
    let up = Upstream::echo("app").await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\nhealth_check_addr: ''\n\
         cookie_secret: 8GIP1sU0aqXJZ8T8XkL1zB0cR2P0kTmYxw0a3DkBwsw=\n\
         access_log_fields: [method, path, response-code]\n\
         routes:\n  - from: http://pub.localhost\n    to: {}\n    allow_public_unauthenticated_access: true\n",
        up.url()
    );
    let gw = Gateway::start_with(
        port,
        &text,
        &[("VALLUM_LOG_FORMAT", "json"), ("VALLUM_LOG", "trace")],
    )
    .await;
    let r = gw
        .request(
            reqwest::Method::GET,
            "pub.localhost",
            "/x",
            &[
                ("authorization", "Bearer trace-bearer-secret"),
                ("cookie", "_pomerium=trace-cookie-secret; other=1"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    gw.eventually("access line", || async { gw.log().contains("\"/x\"") })
        .await;
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"http-request\"") && l.contains("\"/x\""))
        .unwrap_or_else(|| panic!("no access line for /x:\n{log}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/x");
    assert_eq!(v["response-code"], 200);
    assert!(
        v.get("user-agent").is_none(),
        "unselected fields are left out: {line}"
    );
    for secret in [
        "trace-bearer-secret",
        "trace-cookie-secret",
        "8GIP1sU0aqXJZ8T8",
    ] {
        assert!(
            !log.contains(secret),
            "{secret} leaked at trace level:\n{}",
            log.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test]
async fn request_ids_are_ours_unless_a_trusted_proxy_sent_one() {
    let up = Upstream::echo("app").await;
    let body = |trusted: &str| {
        format!(
            "health_check_addr: ''\ntrusted_proxies: [{trusted}]\nroutes:\n  - from: http://pub.localhost\n    to: {}\n    allow_public_unauthenticated_access: true\n",
            up.url()
        )
    };
    let untrusted = Gateway::insecure(&body("10.0.0.0/8")).await;
    let r = untrusted
        .request(
            reqwest::Method::GET,
            "pub.localhost",
            "/",
            &[("x-request-id", "chosen-by-client")],
        )
        .await;
    let id = r.header("x-request-id").unwrap().to_string();
    assert_ne!(id, "chosen-by-client");
    assert_eq!(
        r.echo().header("x-request-id"),
        Some(id.as_str()),
        "sent upstream"
    );
    let trusted = Gateway::insecure(&body("127.0.0.1")).await;
    let r = trusted
        .request(
            reqwest::Method::GET,
            "pub.localhost",
            "/",
            &[("x-request-id", "from-the-lb-42")],
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("from-the-lb-42"));
    assert_eq!(r.echo().header("x-request-id"), Some("from-the-lb-42"));
    let r = trusted
        .request(
            reqwest::Method::GET,
            "pub.localhost",
            "/",
            &[("x-request-id", "bad id with spaces")],
        )
        .await;
    assert_ne!(r.header("x-request-id"), Some("bad id with spaces"));
    let r = trusted.get("nowhere.localhost", "/").await;
    let id = r.header("x-request-id").unwrap();
    assert!(r.body.contains(id), "error pages carry the id: {}", r.body);
}

#[tokio::test]
async fn request_limits_answer_431_and_413() {
    let up = Upstream::echo("app").await;
    let gw = Gateway::insecure(&format!(
        "health_check_addr: ''\nmax_request_headers: 20\nmax_request_header_bytes: 2000\n\
         routes:\n  - from: http://small.localhost\n    to: {u}\n    max_request_bytes: 100\n    allow_public_unauthenticated_access: true\n\
         \x20 - from: http://big.localhost\n    to: {u}\n    allow_public_unauthenticated_access: true\n",
        u = up.url()
    ))
    .await;
    let many: String = (0..25).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw_request(
        gw.addr(),
        &format!("GET / HTTP/1.1\r\nHost: big.localhost\r\n{many}Connection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 431, "too many headers");
    let long = "a".repeat(3000);
    let r = raw_request(
        gw.addr(),
        &format!(
            "GET / HTTP/1.1\r\nHost: big.localhost\r\nX-Long: {long}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 431, "headers too large");
    let body = "b".repeat(200);
    let r = raw_request(
        gw.addr(),
        &format!("POST / HTTP/1.1\r\nHost: small.localhost\r\nContent-Length: 200\r\nConnection: close\r\n\r\n{body}"),
    )
    .await;
    assert_eq!(r.status, 413, "declared body too large");
    let chunk = format!("{:x}\r\n{}\r\n", 80, "c".repeat(80));
    let r = raw_request(
        gw.addr(),
        &format!("POST / HTTP/1.1\r\nHost: small.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}{chunk}0\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 413, "chunked body cut off");
    let r = raw_request(
        gw.addr(),
        &format!("POST / HTTP/1.1\r\nHost: big.localhost\r\nContent-Length: 200\r\nConnection: close\r\n\r\n{body}"),
    )
    .await;
    assert_eq!(r.status, 200, "other routes unaffected");
    let r = raw_request(
        gw.addr(),
        "POST / HTTP/1.1\r\nHost: small.localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(r.status, 200, "within the limit");
    assert!(gw.log_has("request refused: body too large"));
}

#[tokio::test]
async fn readiness_follows_redis_and_idp_outages() {
    let mut redis = RedisServer::start_durable().await;
    let hport = free_port();
    let env = Env::start(&format!(
        "health_check_addr: 127.0.0.1:{hport}\ndatabroker_storage_type: redis\n\
         databroker_storage_connection_string: {}\n",
        redis.url()
    ))
    .await;
    let probe = |path: &'static str| async move {
        let r = client()
            .get(format!("http://127.0.0.1:{hport}{path}"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(probe("/healthz").await.0, 200);
    env.gw
        .eventually("ready", || async { probe("/readyz").await.0 == 200 })
        .await;
    let (status, body) = probe("/status").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["components"]["session_store"]["status"], "ready");
    assert_eq!(v["components"]["identity_provider"]["status"], "ready");

    redis.kill();
    env.gw
        .eventually("not ready without Redis", || async {
            probe("/readyz").await.0 == 503
        })
        .await;
    let (_, body) = probe("/status").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["components"]["session_store"]["status"], "not ready");
    assert_eq!(probe("/healthz").await.0, 200, "still live");
    redis.restart().await;
    env.gw
        .eventually("ready again", || async { probe("/readyz").await.0 == 200 })
        .await;

    env.idp.set_mode(Mode::Down);
    env.gw
        .eventually("not ready without the IdP", || async {
            probe("/readyz").await.0 == 503
        })
        .await;
    let (_, body) = probe("/status").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["components"]["identity_provider"]["status"], "not ready",
        "{v}"
    );
    assert_eq!(v["components"]["session_store"]["status"], "ready");
    env.idp.set_mode(Mode::Honest);
    env.gw
        .eventually("ready after the IdP returns", || async {
            probe("/readyz").await.0 == 200
        })
        .await;
}

#[tokio::test]
async fn a_stalled_request_body_gets_408() {
    let env = Env::start("timeout_read: 1s\n").await;
    // Half a sign-out form, then silence: the read timeout answers for the client.
    let started = std::time::Instant::now();
    let r = crate::security::raw(
        env.gw.addr(),
        format!(
            "POST /.pomerium/sign_out HTTP/1.1\r\nHost: app.localhost:{}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ncsrf=only-part",
            env.gw.port
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 408, "{}", r.text);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert!(env.gw.log_has("did not arrive within timeout_read"));
}

/// Process threads, from /proc.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn threads_sizes_the_proxy_workers() {
    let up = crate::support::Upstream::echo("up").await;
    let body = |n: usize| {
        format!(
            "threads: {n}\nhealth_check_addr: ''\nroutes:\n  - from: http://a.localhost\n    to: {}\n    allow_public_unauthenticated_access: true\n",
            up.url()
        )
    };
    let one = Gateway::insecure(&body(1)).await;
    let five = Gateway::insecure(&body(5)).await;
    assert!(one.log_has("threads=1"), "{}", one.log());
    assert!(five.log_has("threads=5"), "{}", five.log());
    // Both serve; the second has four more worker threads than the first.
    assert_eq!(one.get("a.localhost", "/").await.status, 200);
    assert_eq!(five.get("a.localhost", "/").await.status, 200);
    let (t1, t5) = (thread_count(one.pid()), thread_count(five.pid()));
    assert_eq!(t5 - t1, 4, "threads: 1 → {t1} threads, threads: 5 → {t5}");
}
