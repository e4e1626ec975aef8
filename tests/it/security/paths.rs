//! One path truth and one host truth: what routing, policy and the upstream see is one parsed,
//! normalised target, and anything that cannot be normalised safely is refused.

use super::{public_gateway, raw};

#[tokio::test]
async fn unsafe_targets_are_refused_and_dot_segments_resolved() {
    let (gw, _up) = public_gateway(
        "",
        "  - from: http://admin.test\n    to: {u}\n    prefix: /public\n    allow_public_unauthenticated_access: true\n",
    )
    .await;
    let get = |target: &str, host: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    // (case, request, status, source)
    let cases = [
        (
            "encoded slash",
            get("/public/..%2Fadmin", "admin.test"),
            400,
            "Envoy CVE-2021-29492 class",
        ),
        (
            "encoded backslash",
            get("/public/..%5Cadmin", "admin.test"),
            400,
            "IIS/Windows backslash traversal",
        ),
        (
            "a raw backslash",
            get("/public/..\\admin", "admin.test"),
            400,
            "WHATWG URL parsers (Node, IIS) read \\ as /: /public/..\\admin is /admin there",
        ),
        (
            "encoded #",
            get("/public/x%23/../../admin", "admin.test"),
            400,
            "fragment smuggling",
        ),
        (
            "a raw #fragment",
            get("/public/x#/../admin", "admin.test"),
            400,
            "fragment in the target",
        ),
        (
            "encoded NUL",
            get("/public/x%00", "admin.test"),
            400,
            "Envoy CVE-2019-9900 class (NUL)",
        ),
        (
            "a bad escape",
            get("/public/%zz", "admin.test"),
            400,
            "malformed escapes",
        ),
        (
            "encoded dots out of the prefix",
            get("/public/%2e%2e/admin", "admin.test"),
            404,
            "Envoy CVE-2019-9901 class: resolved to /admin, which no route serves",
        ),
        (
            "dots inside the prefix",
            get("/public/a/../b", "admin.test"),
            200,
            "the control",
        ),
        (
            "an absolute-form target naming another host",
            get("http://app.test/public/x", "admin.test"),
            400,
            "router/upstream host disagreement (absolute-form vs Host)",
        ),
        (
            "an absolute-form target naming the same host",
            get("http://admin.test/public/x", "admin.test"),
            200,
            "the control",
        ),
    ];
    for (case, req, status, source) in cases {
        let r = raw(gw.addr(), req.as_bytes()).await;
        assert_eq!(r.status, status, "{case} ({source}): {}", r.text);
    }
}
