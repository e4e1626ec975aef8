//! Question: what does a policy decision cost per request, as policies grow?
//! Baseline: a 1-criterion policy. Also: the identity-header assertion, cold (signing) and warm
//! (cache hit), which is what a signed-in request on a `pass_identity_headers` route pays.

use chrono::TimeZone;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use vallum::crypto::signing_key::SigningKey;
use vallum::crypto::Key;
use vallum::headers::jwt::Signer;
use vallum::policy::{parse_policy, Input, Subject};

/// `n` criteria: a realistic mix, with the matching one last so every criterion is evaluated.
fn policy_yaml(n: usize) -> String {
    let mut s = String::from("allow:\n  or:\n");
    for i in 0..n.saturating_sub(1) {
        s.push_str(&match i % 5 {
            0 => format!("    - email: {{is: user{i}@example.com}}\n"),
            1 => format!("    - groups: {{has: group{i}}}\n"),
            2 => format!("    - domain: {{is: corp{i}.example}}\n"),
            3 => format!("    - claim/department: dept{i}\n"),
            _ => "    - source_ip: [192.0.2.0/24, 198.51.100.0/24]\n".to_string(),
        });
    }
    s.push_str(
        "    - and:\n        - groups: {has: admins}\n        - http_method: {in: [GET, HEAD]}\n",
    );
    s
}

fn bench(c: &mut Criterion) {
    let claims = serde_json::json!({"department": "R&D"})
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into();
    let groups = vec!["engineering".to_string(), "admins".to_string()];
    let input = Input {
        subject: Some(Subject {
            user_id: "alice-id",
            email: Some("alice@example.com"),
            groups: &groups,
            name: Some("Alice"),
            claims: &claims,
        }),
        method: "GET",
        path: "/api/v1/items",
        client_ip: "10.1.2.3".parse().ok(),
        now: chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 14, 30, 0)
            .single()
            .unwrap_or_default(),
        cors_preflight: false,
        mcp: None,
        client_cert: vallum::policy::CertInput::Absent,
        devices: &[],
    };
    let mut g = c.benchmark_group("policy_eval");
    for n in [1usize, 10, 100] {
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&policy_yaml(n)).unwrap_or_default();
        let p = parse_policy(&v, "bench").unwrap_or_default();
        g.bench_with_input(BenchmarkId::new("criteria", n), &n, |b, _| {
            b.iter(|| black_box(p.evaluate(black_box(&input))))
        });
    }
    g.finish();

    let signer = Signer::new(SigningKey::derived(&Key::random()).unwrap_or_else(|e| panic!("{e}")));
    let claims = || {
        let mut m = serde_json::Map::new();
        m.insert("sub".into(), serde_json::json!("alice-id"));
        m.insert("email".into(), serde_json::json!("alice@example.com"));
        m.insert(
            "groups".into(),
            serde_json::json!(["engineering", "admins"]),
        );
        m
    };
    let mut g = c.benchmark_group("identity_header");
    let mut i = 0u64;
    g.bench_function("cold_sign", |b| {
        b.iter(|| {
            i += 1;
            black_box(signer.assertion(&format!("sid{i}"), "app.example.com", 0, 1_000, claims))
        })
    });
    let _ = signer.assertion("warm", "app.example.com", 0, 1_000, claims);
    g.bench_function("warm_cache", |b| {
        b.iter(|| black_box(signer.assertion("warm", "app.example.com", 0, 1_010, claims)))
    });
    // A user in 1,000 groups, signed for a route that passes all of them and for one whose
    // groups filter keeps the three its policy names (`jwt_groups_filter_infer_from_ppl`).
    let member = many_groups(1_000);
    let filter =
        vallum::headers::GroupsFilter::new(["group-7", "group-300", "group-999"].map(String::from));
    for (name, f) in [
        ("1000_groups_unfiltered", None),
        ("1000_groups_filtered_to_3", Some(&filter)),
    ] {
        let header = signer.assertion(
            "size",
            "app.example.com",
            f.map_or(0, |f| f.id),
            1_000,
            || {
                vallum::headers::assertion_claims(
                    &member,
                    "app.example.com",
                    "app.example.com",
                    &[],
                    f,
                )
            },
        );
        eprintln!(
            "identity_header/{name}: X-Pomerium-Jwt-Assertion is {} bytes",
            header.len()
        );
        g.bench_function(format!("cold_sign_{name}"), |b| {
            b.iter(|| {
                i += 1;
                black_box(
                    signer.assertion(&format!("sid{i}"), "app.example.com", 0, 1_000, || {
                        vallum::headers::assertion_claims(
                            &member,
                            "app.example.com",
                            "app.example.com",
                            &[],
                            f,
                        )
                    }),
                )
            })
        });
    }
    g.finish();
}

fn many_groups(n: usize) -> vallum::session::UserSession {
    vallum::session::UserSession {
        id: "sid".into(),
        user_id: "alice-id".into(),
        email: Some("alice@example.com".into()),
        name: Some("Alice".into()),
        groups: (0..n).map(|i| format!("group-{i}")).collect(),
        claims: Default::default(),
        id_token: String::new(),
        access_token: String::new(),
        refresh_token: None,
        access_expires_at: None,
        issued_at: 0,
        expires_at: u64::MAX,
        claims_refreshed_at: 0,
        idp: String::new(),
        devices: Vec::new(),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
