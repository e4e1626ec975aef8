//! OpenTelemetry tracing through the running gateway, into a real OTLP receiver (gRPC and HTTP):
//! the request's span and its children, the trace context the upstream receives, whose
//! `traceparent` is believed, the sampler, IdP and store calls, a collector that is down or
//! stuck, and the spans still queued when the gateway stops.

use crate::signin::Env;
use crate::support::otlp::{Received, Receiver};
use crate::support::redis::RedisServer;
use crate::support::upstream::Upstream;
use crate::support::{free_port, scrape, Gateway};
use std::time::Duration;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A gateway exporting to `collector` (`protocol`), with one public route to an echo upstream.
async fn gateway(collector: &str, protocol: &str, extra: &str) -> (Gateway, Upstream, u16) {
    let up = Upstream::echo("app").await;
    let metrics = free_port();
    let gw = Gateway::insecure(&format!(
        "metrics_address: 127.0.0.1:{metrics}\notel_traces_exporter: otlp\n\
         otel_exporter_otlp_endpoint: {collector}\notel_exporter_otlp_protocol: {protocol}\n\
         {delay}{extra}\
         routes:\n  - from: http://public.localhost\n    to: {}\n    allow_public_unauthenticated_access: true\n",
        up.url(),
        delay = if extra.contains("otel_bsp_schedule_delay") {
            ""
        } else {
            "otel_bsp_schedule_delay: 100\n"
        },
    ))
    .await;
    (gw, up, metrics)
}

fn named<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.span.name == name).collect()
}

fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name} span: {found:#?}");
    found[0]
}

#[tokio::test]
async fn a_request_becomes_a_trace_at_the_collector_over_grpc_and_http() {
    for (receiver, protocol) in [
        (Receiver::grpc().await, "grpc"),
        (Receiver::http().await, "http/protobuf"),
    ] {
        let (gw, _up, _) = gateway(
            &receiver.url(),
            protocol,
            "otel_exporter_otlp_headers: [x-collector-token=sesame]\n",
        )
        .await;
        let r = gw
            .get(&format!("public.localhost:{}", gw.port), "/hello?secret=1")
            .await;
        assert_eq!(r.status, 200);
        let seen = r.echo();
        let spans = receiver
            .until("request, authorize and upstream spans", |s| s.len() >= 3)
            .await;

        let request = one(&spans, "GET route-0");
        assert_eq!(request.span.kind, 2, "{protocol}: a server span");
        assert_eq!(
            request.parent_id(),
            "",
            "a root: the client sent no traceparent"
        );
        assert_eq!(request.service, "vallum");
        assert_eq!(request.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(
            request.attr("url.path").as_deref(),
            Some("/hello"),
            "never the query"
        );
        assert_eq!(
            request.attr("http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(request.attr("vallum.route_id").as_deref(), Some("route-0"));
        let authorize = one(&spans, "authorize");
        let upstream = one(&spans, "upstream");
        for child in [authorize, upstream] {
            assert_eq!(
                child.trace_id(),
                request.trace_id(),
                "{protocol}: one trace"
            );
            assert_eq!(
                child.parent_id(),
                request.span_id(),
                "{protocol}: children of the request"
            );
        }
        assert_eq!(authorize.attr("vallum.outcome").as_deref(), Some("allow"));
        assert_eq!(upstream.span.kind, 3, "a client span");
        assert_eq!(
            seen.header("traceparent"),
            Some(format!("00-{}-{}-01", request.trace_id(), upstream.span_id()).as_str()),
            "{protocol}: the upstream continues the trace from the upstream span"
        );
        assert!(
            request
                .headers
                .iter()
                .any(|(k, v)| k == "x-collector-token" && v == "sesame"),
            "{protocol}: otel_exporter_otlp_headers reach the collector"
        );
    }
}

/// One request with `headers` to the public route: what the upstream saw, and its request span.
async fn traced_request(
    gw: &Gateway,
    receiver: &Receiver,
    headers: &[(&str, &str)],
) -> (crate::support::upstream::Echo, Received) {
    let host = format!("public.localhost:{}", gw.port);
    let seen = gw
        .request(reqwest::Method::GET, &host, "/", headers)
        .await
        .echo();
    let spans = receiver
        .until("the request span", |s| !named(s, "GET route-0").is_empty())
        .await;
    (seen, one(&spans, "GET route-0").clone())
}

#[tokio::test]
async fn a_client_traceparent_is_believed_only_when_configured() {
    let receiver = Receiver::http().await;
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let headers = [
        ("traceparent", client_parent.as_str()),
        ("tracestate", "vendor=opaque"),
    ];

    // By default only listed proxies are believed, and none is listed: a new trace.
    let (gw, _up, _) = gateway(&receiver.url(), "http/protobuf", "").await;
    let (seen, request) = traced_request(&gw, &receiver, &headers).await;
    assert_ne!(
        request.trace_id(),
        CLIENT_TRACE,
        "the client does not choose the trace"
    );
    assert_eq!(request.parent_id(), "");
    let sent = seen.header("traceparent").unwrap();
    assert!(
        sent.contains(&request.trace_id()) && !sent.contains(CLIENT_TRACE),
        "{sent}"
    );
    assert_eq!(
        seen.header("tracestate"),
        None,
        "an unbelieved tracestate is not passed on"
    );
    drop(gw);

    // `always`: the request continues the client's trace, and so does the upstream.
    let receiver = Receiver::http().await;
    let (gw, _up, _) = gateway(
        &receiver.url(),
        "http/protobuf",
        "otel_trust_incoming_traceparent: always\n",
    )
    .await;
    let (seen, request) = traced_request(&gw, &receiver, &headers).await;
    assert_eq!(request.trace_id(), CLIENT_TRACE);
    assert_eq!(request.parent_id(), CLIENT_SPAN);
    assert!(seen.header("traceparent").unwrap().contains(CLIENT_TRACE));
    assert_eq!(seen.header("tracestate"), Some("vendor=opaque"));
}

#[tokio::test]
async fn the_sampler_ratio_decides_which_traces_are_exported() {
    let receiver = Receiver::grpc().await;
    let (gw, _up, _) = gateway(&receiver.url(), "grpc", "otel_traces_sampler_arg: 0\n").await;
    let host = format!("public.localhost:{}", gw.port);
    for _ in 0..5 {
        let seen = gw.get(&host, "/").await.echo();
        let tp = seen.header("traceparent").unwrap().to_string();
        assert!(tp.ends_with("-00"), "not sampled, still propagated: {tp}");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let spans = receiver.spans();
    assert!(
        spans.is_empty(),
        "nothing exported at ratio 0: {:?}",
        spans.iter().map(|s| &s.span.name).collect::<Vec<_>>()
    );
}

/// Sign-in through the IdP with the sessions in Redis: the IdP calls and the store calls are
/// children of the request that made them.
#[tokio::test]
async fn idp_and_session_store_calls_are_spans_of_their_request() {
    let receiver = Receiver::http().await;
    let redis = RedisServer::start().await;
    let env = Env::start(&format!(
        "otel_traces_exporter: otlp\notel_exporter_otlp_endpoint: {}\notel_bsp_schedule_delay: 100\n\
         databroker_storage_type: redis\ndatabroker_storage_connection_string: {}\n",
        receiver.url(),
        redis.url()
    ))
    .await;
    let b = env.browser();
    assert_eq!(b.browse(&env.url("app", "/")).await.0.status, 200);
    // A child ends before its request does, so it can reach the collector a batch earlier:
    // wait for the requests too.
    let spans = receiver
        .until("a token call and a store call, with their requests", |s| {
            let received = |id: String| s.iter().any(|r| r.span_id() == id);
            let token = s.iter().find(|r| {
                r.span.name == "idp" && r.attr("url.full").is_some_and(|u| u.ends_with("/token"))
            });
            let store = s.iter().find(|r| r.span.name == "session_store");
            matches!((token, store), (Some(t), Some(st)) if received(t.parent_id()) && received(st.parent_id()))
        })
        .await;
    let ids: std::collections::HashMap<String, &Received> =
        spans.iter().map(|s| (s.span_id(), s)).collect();
    let token = spans
        .iter()
        .find(|r| r.span.name == "idp" && r.attr("url.full").unwrap().ends_with("/token"))
        .unwrap();
    let parent = ids
        .get(&token.parent_id())
        .expect("the token call has a parent span");
    assert_eq!(
        parent.span.kind, 2,
        "the callback request: {:?}",
        parent.span.name
    );
    assert_eq!(
        token.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    let store = spans
        .iter()
        .find(|r| r.span.name == "session_store")
        .unwrap();
    assert_eq!(store.attr("db.system.name").as_deref(), Some("redis"));
    assert!(
        ids.contains_key(&store.parent_id()),
        "a store call belongs to a request"
    );
    for r in &spans {
        for kv in &r.span.attributes {
            let v = format!("{:?}", kv.value);
            assert!(
                !v.contains("at-") && !v.contains("rt-") && !v.contains("eyJ"),
                "no token in any span attribute: {} = {v}",
                kv.key
            );
        }
    }
}

#[tokio::test]
async fn a_collector_that_is_down_or_stuck_costs_requests_nothing() {
    // Down: nothing listens. Every request is served; the failed exports are counted.
    let (gw, _up, metrics) = gateway(
        &format!("http://127.0.0.1:{}", free_port()),
        "grpc",
        "otel_exporter_otlp_timeout: 500\n",
    )
    .await;
    let host = format!("public.localhost:{}", gw.port);
    for _ in 0..20 {
        assert_eq!(gw.get(&host, "/").await.status, 200);
    }
    gw.eventually("failed exports counted", || async {
        scrape(metrics, None).await.1.lines().any(|l| {
            l.starts_with("vallum_trace_spans_total{result=\"failed\"}") && !l.ends_with(" 0")
        })
    })
    .await;

    // Stuck: it accepts connections and never answers. The queue fills, later spans are
    // dropped, counted and reported, and requests go on being served.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (gw, _up, metrics) = gateway(
        &format!("http://{}", stuck.local_addr().unwrap()),
        "http/protobuf",
        "otel_exporter_otlp_timeout: 3000\n",
    )
    .await;
    let host = format!("public.localhost:{}", gw.port);
    for _ in 0..1200 {
        assert_eq!(gw.get(&host, "/").await.status, 200);
    }
    gw.eventually("dropped spans counted and reported", || async {
        let text = scrape(metrics, None).await.1;
        text.lines().any(|l| {
            l.starts_with("vallum_trace_spans_total{result=\"dropped\"}") && !l.ends_with(" 0")
        }) && gw
            .log()
            .contains("spans dropped: the export queue was full")
    })
    .await;
}

#[tokio::test]
async fn spans_still_queued_are_sent_when_the_gateway_stops() {
    let receiver = Receiver::grpc().await;
    // A minute between scheduled exports: only the flush at exit can send this span in time.
    let (mut gw, _up, _) =
        gateway(&receiver.url(), "grpc", "otel_bsp_schedule_delay: 60000\n").await;
    let host = format!("public.localhost:{}", gw.port);
    assert_eq!(gw.get(&host, "/").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.spans().is_empty(),
        "not exported before the schedule"
    );
    gw.signal("TERM");
    assert!(gw.exited_within(Duration::from_secs(10)).await.is_some());
    let spans = receiver.spans();
    assert!(
        !named(&spans, "GET route-0").is_empty(),
        "the queued request span was flushed at exit: {spans:#?}"
    );
}

#[tokio::test]
async fn a_reload_that_changes_tracing_says_it_needs_a_restart() {
    let receiver = Receiver::grpc().await;
    let (gw, _up, _) = gateway(&receiver.url(), "grpc", "").await;
    let text = std::fs::read_to_string(&gw.config).unwrap();
    gw.rewrite_config(&text.replace(
        "otel_bsp_schedule_delay: 100",
        "otel_bsp_schedule_delay: 200",
    ));
    gw.eventually("the change reported as needing a restart", || async {
        gw.log().contains("tracing settings (otel_*) changed")
    })
    .await;
}
