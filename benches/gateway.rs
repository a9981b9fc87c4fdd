//! REST through the gateway vs the same call over gRPC, against a real
//! server on port 0 (fresh database, as the tests use).
//!
//! The call is `ListTenants` (page of 10, three tenants) as a platform admin:
//! it passes the whole stack (request id, limits, API-key authentication,
//! tenant context, rate limit, authorization) and a real handler reading
//! PostgreSQL, so both doors do the same work apart from their own transport
//! and (for REST) JSON transcoding. Criterion measures one call
//! at a time over a kept-alive connection; a fixed-duration run with
//! concurrent clients then prints the throughput ratio (REST / gRPC).

#[allow(dead_code)]
#[path = "../tests/api/harness/mod.rs"]
mod harness;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::Criterion;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tenantry::proto::tenantry::v1::ListTenantsRequest;

const CONCURRENCY: usize = 16;
const RUN: Duration = Duration::from_secs(5);

async fn rest_client(app: &harness::TestApp) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

async fn rest_call(sender: &mut SendRequest<Full<Bytes>>, bearer: &str) {
    sender.ready().await.unwrap();
    let request = Request::get("/v1/tenants?pageSize=10")
        .header("host", "bench")
        .header("authorization", bearer)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
}

async fn grpc_call(app: &harness::TestApp) {
    let request = app.as_admin(ListTenantsRequest { page_size: 10, ..Default::default() });
    let response = app.tenants().list_tenants(request).await.unwrap();
    assert_eq!(response.get_ref().tenants.len(), 3);
}

/// Calls completed in `RUN` by `CONCURRENCY` clients.
async fn throughput(app: Arc<harness::TestApp>, rest: bool) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RUN;
    let bearer = format!("Bearer {}", app.admin_key);
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (app, done, bearer) = (app.clone(), done.clone(), bearer.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = if rest { Some(rest_client(&app).await) } else { None };
            while Instant::now() < deadline {
                match sender.as_mut() {
                    Some(sender) => rest_call(sender, &bearer).await,
                    None => grpc_call(&app).await,
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / RUN.as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = Arc::new(runtime.block_on(harness::TestApp::builder().spawn()));
    for slug in ["acme", "globex", "initech"] {
        runtime.block_on(app.create_tenant(slug));
    }
    let bearer = format!("Bearer {}", app.admin_key);
    let mut criterion = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(5));
    let mut sender = runtime.block_on(rest_client(&app));
    let mut group = criterion.benchmark_group("list_tenants_as_admin");
    group.bench_function("grpc", |b| b.iter(|| runtime.block_on(grpc_call(&app))));
    group.bench_function("rest_gateway", |b| b.iter(|| runtime.block_on(rest_call(&mut sender, &bearer))));
    group.finish();

    let grpc = runtime.block_on(throughput(app.clone(), false));
    let rest = runtime.block_on(throughput(app.clone(), true));
    println!(
        "\nthroughput with {CONCURRENCY} concurrent clients over {}s: gRPC {grpc:.0} calls/s, REST {rest:.0} calls/s, \
         ratio REST/gRPC = {:.2}",
        RUN.as_secs(),
        rest / grpc
    );
    criterion.final_summary();
}
