//! What metrics cost: recording one finished call (done by the observe layer
//! on every call) and rendering a scrape with every method of the contract
//! having recorded a few codes.

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use tenantry::{metrics::Metrics, policy::PolicyTable};
use tonic::Code;

fn record_call(c: &mut Criterion) {
    let policies = PolicyTable::embedded().expect("the embedded contract loads");
    let method = policies.get("/tenantry.v1.TenantService/GetTenant").expect("a known method").clone();
    let metrics = Metrics::new();
    c.bench_function("record_call (known method, existing series)", |b| {
        b.iter(|| {
            metrics.call_started();
            metrics.record_call(Some(black_box(&method)), Code::Ok, Duration::from_micros(850))
        })
    });
    let threads = std::thread::available_parallelism().map_or(2, usize::from).max(2);
    c.bench_function(&format!("record_call x1000 on {threads} threads"), |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        for _ in 0..1000 / threads {
                            metrics.call_started();
                            metrics.record_call(Some(&method), Code::Ok, Duration::from_micros(850));
                        }
                    });
                }
            })
        })
    });
}

fn render(c: &mut Criterion) {
    let policies = PolicyTable::embedded().expect("the embedded contract loads");
    let metrics = Metrics::new();
    for policy in policies.iter() {
        for code in [Code::Ok, Code::NotFound, Code::InvalidArgument] {
            metrics.record_call(Some(policy), code, Duration::from_millis(3));
        }
    }
    let size = metrics.render().len();
    c.bench_function(&format!("render ({} methods x 3 codes, {size} bytes)", policies.iter().count()), |b| {
        b.iter(|| black_box(metrics.render()))
    });
}

criterion_group!(benches, record_call, render);
criterion_main!(benches);
