//! Question: what does the one-path-truth normalisation cost per request?
//! Baseline: an already-clean path (the common case).

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use vallum::routes::path::{normalize, PathRules};

fn bench(c: &mut Criterion) {
    let rules = PathRules::default();
    let mut g = c.benchmark_group("path_normalize");
    for (name, p) in [
        ("clean", "/api/v1/users/42?expand=true"),
        ("dot_segments", "/api/./v1/../v1//users/%34%32?expand=true"),
        (
            "long_clean",
            "/a/very/long/path/with/many/segments/that/is/still/perfectly/clean/index.html",
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(normalize(black_box(p.as_bytes()), rules)))
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
