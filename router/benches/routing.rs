//! Routing benchmarks; the figures go to docs/performance.md.

use criterion::{criterion_group, criterion_main, Criterion};

fn placeholder(c: &mut Criterion) {
    c.bench_function("millis_plus", |b| {
        b.iter(|| omnigate_router::Millis(1).plus_ms(2))
    });
}

criterion_group!(benches, placeholder);
criterion_main!(benches);
