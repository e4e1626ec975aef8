//! Question: does route lookup stay flat as the route table grows?
//! Baseline: the same lookups on a 10-route table. Target: 1,000 and 100,000 routes cost the same.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use vallum::snapshot::Snapshot;

/// `n` routes over n/2 hosts (a prefix route and a catch-all each) plus a wildcard.
fn config(n: usize) -> String {
    let mut s = String::from("insecure_server: true\nroutes:\n");
    for i in 0..n / 2 {
        s.push_str(&format!(
            "  - from: http://app{i}.example.com\n    prefix: /api/\n    to: http://127.0.0.1:9001\n    allow_public_unauthenticated_access: true\n\
             \x20 - from: http://app{i}.example.com\n    to: http://127.0.0.1:9002\n    allow_public_unauthenticated_access: true\n"
        ));
    }
    s.push_str("  - from: http://*.wild.example.com\n    to: http://127.0.0.1:9003\n    allow_public_unauthenticated_access: true\n");
    s
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [10usize, 1_000, 100_000] {
        let rt = Snapshot::from_str(&config(n), &|_| None, None).unwrap_or_else(|e| panic!("{e}"));
        let mid = format!("app{}.example.com", n / 4);
        g.bench_with_input(BenchmarkId::new("exact_host_prefix", n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    rt.routes
                        .find(black_box(&mid), 80, black_box("/api/users/42")),
                )
            })
        });
        g.bench_with_input(BenchmarkId::new("exact_host_fallthrough", n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    rt.routes
                        .find(black_box(&mid), 80, black_box("/index.html")),
                )
            })
        });
        g.bench_with_input(BenchmarkId::new("wildcard_host", n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    rt.routes
                        .find(black_box("a.b.wild.example.com"), 80, black_box("/")),
                )
            })
        });
        g.bench_with_input(BenchmarkId::new("no_route", n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    rt.routes
                        .find(black_box("unknown.example.org"), 80, black_box("/")),
                )
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
