//! MCP routes (`mcp.server`): each JSON-RPC message of a POST is decided on its own with
//! `mcp_tool` and `mcp_tool_argument`; a refused call gets a JSON-RPC error with its id and the
//! upstream sees nothing; bad bodies get JSON-RPC errors too; allowed bodies reach the upstream
//! byte for byte.

use crate::support::{client, free_port, scrape, Gateway};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// An MCP server stand-in: answers every POST with the body it received as `result.echo`.
struct Upstream {
    port: u16,
    hits: Arc<AtomicUsize>,
    last: Arc<Mutex<Vec<u8>>>,
}

async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (hits, last) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (h, l) = (hits.clone(), last.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (h, l) = (h.clone(), l.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (h, l) = (h.clone(), l.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        let sse = req.uri().query() == Some("sse=1");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        *l.lock().unwrap() = body.to_vec();
                        let text = String::from_utf8_lossy(&body).to_string();
                        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let answer = match request["method"].as_str() {
                            Some("tools/list") => {
                                let tools: Vec<Value> = [
                                    "read_file",
                                    "drop_table",
                                    "delete",
                                    "echo",
                                ]
                                .iter()
                                .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
                                .collect();
                                json!({"jsonrpc": "2.0", "id": request["id"], "result": {"tools": tools}})
                            }
                            _ => json!({"jsonrpc": "2.0", "id": 0, "result": {"echo": text}}),
                        };
                        let (ctype, out) = match sse {
                            true => (
                                "text/event-stream",
                                format!("event: message\ndata: {answer}\n\n"),
                            ),
                            false => ("application/json", answer.to_string()),
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", ctype)
                                .body(Full::new(Bytes::from(out)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream { port, hits, last }
}

fn call(id: i64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

async fn post(gw: &Gateway, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = client()
        .post(gw.url(path))
        .header("host", format!("mcp.localhost:{}", gw.port))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn tool_calls_are_decided_one_by_one() {
    let up = upstream().await;
    let (port, metrics) = (free_port(), free_port());
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\nmetrics_address: 127.0.0.1:{metrics}\n\
         routes:\n  - from: http://mcp.localhost\n    to: http://127.0.0.1:{u}\n    mcp:\n      server:\n        path: /mcp\n        max_request_bytes: 2048\n\
         \x20   policy:\n      - allow:\n          or:\n            - accept: true\n\
         \x20     - deny:\n          or:\n            - mcp_tool:\n                in: [drop_table, delete]\n\
         \x20           - and:\n                - mcp_tool: read_file\n                - not:\n                    - mcp_tool_argument:\n                        name: path\n                        starts_with: /srv/public/\n",
        u = up.port
    );
    let gw = Gateway::start_with(port, &text, &[]).await;
    let hits = || up.hits.load(Ordering::SeqCst);

    // Allowed: forwarded byte for byte (the body was read for the decision and replayed).
    let allowed = call(
        1,
        "read_file",
        json!({"path": "/srv/public/a.txt", "pad": "x".repeat(1500)}),
    );
    let sent = allowed.to_string();
    let (status, answer) = post(&gw, "/mcp", sent.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["echo"], sent);
    assert_eq!(*up.last.lock().unwrap(), sent.as_bytes());
    // The protocol's own messages pass: mcp_tool is false for them.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}});
    assert_eq!(post(&gw, "/mcp", init.to_string()).await.0, 200);
    let before = hits();

    // Refused by argument, by tool name: a JSON-RPC error with the id; the upstream sees nothing.
    for (body, id, reason) in [
        (
            call(2, "read_file", json!({"path": "/etc/shadow"})),
            2,
            "mcp-tool-argument-unauthorized",
        ),
        (
            call(3, "read_file", json!({})),
            3,
            "mcp-tool-argument-unauthorized",
        ),
        (
            call(4, "drop_table", json!({"name": "users"})),
            4,
            "mcp-tool-unauthorized",
        ),
    ] {
        let (status, answer) = post(&gw, "/mcp", body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(answer["error"]["code"], -32001, "{answer}");
        let reasons = answer["error"]["data"]["reasons"].to_string();
        assert!(reasons.contains(reason), "{answer}");
        assert!(answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is not allowed"));
    }
    assert_eq!(hits(), before, "refused calls never reach the upstream");

    // A batch with one refused call: an error for each request in it, none forwarded.
    let batch = json!([
        call(10, "read_file", json!({"path": "/srv/public/b"})),
        call(11, "delete", json!({})),
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
    ]);
    let (status, answer) = post(&gw, "/mcp", batch.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let errors = answer.as_array().expect("a batch answer");
    assert_eq!(errors.len(), 2, "{answer}");
    assert_eq!(
        (errors[0]["id"].clone(), errors[0]["error"]["code"].clone()),
        (json!(10), json!(-32002))
    );
    assert_eq!(
        (errors[1]["id"].clone(), errors[1]["error"]["code"].clone()),
        (json!(11), json!(-32001))
    );
    // An allowed batch passes whole.
    let ok_batch = json!([
        call(12, "read_file", json!({"path": "/srv/public/c"})),
        init
    ]);
    assert_eq!(post(&gw, "/mcp", ok_batch.to_string()).await.0, 200);
    assert_eq!(hits(), before + 1);

    // Bad bodies: JSON-RPC errors, nothing forwarded.
    for (body, status, code) in [
        ("{not json".to_string(), 400, -32700),
        (
            json!({"jsonrpc": "1.0", "id": 1, "method": "x"}).to_string(),
            400,
            -32600,
        ),
        (json!([]).to_string(), 400, -32600),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}).to_string(),
            400,
            -32600,
        ),
        (
            call(
                5,
                "read_file",
                json!({"path": "/srv/public/", "pad": "y".repeat(3000)}),
            )
            .to_string(),
            413,
            -32003,
        ),
    ] {
        let (got, answer) = post(&gw, "/mcp", body).await;
        assert_eq!(
            (got, answer["error"]["code"].clone()),
            (status, json!(code)),
            "{answer}"
        );
        assert_eq!(answer["id"], Value::Null);
    }
    // Over the limit without a declared length (chunked) is refused as well.
    let chunks =
        futures_util::stream::iter((0..4).map(|_| {
            Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(vec![b' '; 1000])))
        }));
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(chunks));
    let (got, answer) = post(&gw, "/mcp", body).await;
    assert_eq!((got, answer["error"]["code"].clone()), (413, json!(-32003)));
    assert_eq!(hits(), before + 1);

    // Other paths of the route are not MCP: not read, not decided per call.
    assert_eq!(
        post(&gw, "/health", call(6, "drop_table", json!({})).to_string())
            .await
            .0,
        200
    );
    assert_eq!(hits(), before + 2);

    // tools/list answers only what the caller may call: a JSON answer and an event stream.
    let list = json!({"jsonrpc": "2.0", "id": 42, "method": "tools/list", "params": {}});
    for path in ["/mcp", "/mcp?sse=1"] {
        let r = client()
            .post(gw.url(path))
            .header("host", format!("mcp.localhost:{}", gw.port))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(list.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let json_text = text
            .trim()
            .strip_prefix("event: message\ndata: ")
            .unwrap_or(text.trim());
        let answer: Value =
            serde_json::from_str(json_text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let names: Vec<&str> = answer["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["read_file", "echo"], "{path}: {text}");
        assert_eq!(answer["id"], 42);
    }

    // The authorize log names the method and the tool, never the arguments by default.
    assert!(gw.log_has("mcp-tool=\"drop_table\""), "{}", gw.log());
    assert!(gw.log_has("mcp-method=\"initialize\""));
    assert!(
        !gw.log().contains("/etc/shadow"),
        "arguments are not logged by default"
    );
    let (_, m) = scrape(metrics, None).await;
    let line = |tool: &str, outcome: &str| {
        format!("vallum_mcp_tool_calls_total{{outcome=\"{outcome}\",route=\"route-0\",tool=\"{tool}\"}}")
    };
    assert!(
        m.contains(&format!("{} 1", line("drop_table", "denied"))),
        "{m}"
    );
    assert!(m.contains(&line("read_file", "allowed")), "{m}");
}

#[test]
fn mcp_settings_are_checked() {
    let (ok, out) = crate::support::check_config(
        "insecure_server: true\naddress: 127.0.0.1:0\n\
         routes:\n  - from: http://a.localhost\n    to: http://127.0.0.1:1\n    mcp:\n      server:\n        path: mcp\n        max_request_bytes: 1000000\n        upstream_oauth2: {client_id: x}\n    allow_public_unauthenticated_access: true\n\
         \x20 - from: http://b.localhost\n    to: http://127.0.0.1:1\n    policy:\n      allow:\n        and:\n          - mcp_tool_argument: {starts_with: /x}\n\
         \x20 - from: http://c.localhost\n    to: http://127.0.0.1:1\n    allow_any_authenticated_user: true\n    mcp:\n      server:\n        upstream_oauth2: {endpoint: {auth_url: /rel, token_url: https://t.example/token, auth_style: maybe}}\n        authorization_server_url: https://as.example\n\
         \x20 - from: http://d.localhost\n    to: http://127.0.0.1:1\n    allow_any_authenticated_user: true\n    mcp:\n      server:\n        authorization_server_url: not-a-url\n",
    );
    assert!(!ok, "{out}");
    for want in [
        "routes[0].mcp.server.path: must be an absolute path",
        "routes[0].mcp.server.max_request_bytes: must be between 1 and 65536",
        "routes[0].mcp.server.upstream_oauth2.endpoint: needs auth_url and token_url",
        "routes[2].mcp.server.upstream_oauth2.endpoint.auth_url: must be an absolute http(s) URL",
        "routes[2].mcp.server.upstream_oauth2.endpoint.auth_style: must be auto, in_header or in_params",
        "routes[2].mcp.server.upstream_oauth2.client_id: is required",
        "routes[2].mcp.server.authorization_server_url: goes with upstream_oauth2 left out",
        "routes[3].mcp.server.authorization_server_url: must be an absolute http(s) URL",
        "needs name: the argument to match",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
}

#[tokio::test]
async fn tool_calls_over_a_rate_limit_are_refused_per_caller_and_tool() {
    let up = upstream().await;
    let (port, metrics) = (free_port(), free_port());
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\nmetrics_address: 127.0.0.1:{metrics}\n\
         routes:\n  - from: http://mcp.localhost\n    to: http://127.0.0.1:{u}\n    mcp:\n      server:\n        path: /mcp\n\
         \x20       rate_limits:\n          - tools: [delete]\n            calls: 1\n            per: 1h\n\
         \x20         - calls: 2\n            per: 1h\n\
         \x20   policy:\n      - allow:\n          or:\n            - accept: true\n",
        u = up.port
    );
    let gw = Gateway::start_with(port, &text, &[]).await;
    let hits = || up.hits.load(Ordering::SeqCst);
    for id in 1..=2 {
        let (status, answer) = post(&gw, "/mcp", call(id, "echo", json!({})).to_string()).await;
        assert_eq!((status, answer["error"].is_null()), (200, true), "{answer}");
    }
    let before = hits();
    let (status, answer) = post(&gw, "/mcp", call(3, "echo", json!({})).to_string()).await;
    assert_eq!((status, answer["id"].clone()), (200, json!(3)), "{answer}");
    assert_eq!(answer["error"]["code"], -32001, "{answer}");
    assert_eq!(
        answer["error"]["data"]["reasons"],
        json!(["mcp-rate-limited"])
    );
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("rate limit"));
    assert_eq!(
        hits(),
        before,
        "a call over the limit never reaches the upstream"
    );
    // Each tool counts on its own; the first limit naming a tool is the one that applies.
    assert!(post(&gw, "/mcp", call(4, "delete", json!({})).to_string())
        .await
        .1["error"]
        .is_null());
    let (_, again) = post(&gw, "/mcp", call(5, "delete", json!({})).to_string()).await;
    assert_eq!(
        again["error"]["data"]["reasons"],
        json!(["mcp-rate-limited"])
    );
    // The protocol's own messages are never limited.
    let list = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"});
    for _ in 0..3 {
        assert_eq!(post(&gw, "/mcp", list.to_string()).await.0, 200);
    }
    let (_, body) = scrape(metrics, None).await;
    assert!(
        body.lines()
            .any(|l| l.starts_with("vallum_mcp_tool_calls_total")
                && l.contains("outcome=\"rate_limited\"")
                && l.contains("tool=\"echo\"")
                && l.ends_with(" 1")),
        "{body}"
    );
    // A bad limit names its key.
    let bad = text.replace("calls: 1\n", "calls: 0\n");
    let (ok, out) = crate::support::check_config(&bad);
    assert!(
        !ok && out.contains("routes[0].mcp.server.rate_limits[0].calls"),
        "{out}"
    );
}
