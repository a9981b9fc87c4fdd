//! Heap allocations per call on the hot path, counted by a counting global
//! allocator: the full server (`App::build`, every layer, JSON access log
//! to a discarding writer) answering WhoAmI with a user's access token,
//! against the bare tonic service of `benches/support/bare_echo.rs`, both in
//! this process, called by the same tonic client with the same headers. The
//! difference is what Tenantry's layers allocate per call.
//!
//! Run: `cargo bench --bench allocations` (DATABASE_URL, or a private
//! PostgreSQL started here). Background tasks of the full server (metering
//! flush, health checks) allocate too; over 20,000 calls they add well under
//! one allocation per call.

#[path = "support/bare_echo.rs"]
mod bare_echo;
mod support;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use support::Scratch;
use tenantry::{
    auth::api_key::AdminKeys,
    config::{AppConfig, DatabaseConfig, Role, ServeConfig},
    proto::tenantry::v1::{
        CreateTenantRequest, CreateUserRequest, LoginRequest, WhoAmIRequest, auth_service_client::AuthServiceClient,
        tenant_service_client::TenantServiceClient,
    },
    startup::App,
    telemetry::log::JsonLog,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing_subscriber::{EnvFilter, Layer as _, prelude::*};

/// Counts every allocation (and reallocation) and its bytes.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every operation to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CALLS: u64 = 20_000;

/// Allocations and bytes per call over `CALLS` sequential WhoAmI calls.
async fn per_call(addr: SocketAddr, token: &str) -> (f64, f64) {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = AuthServiceClient::new(channel);
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut call = async || {
        let mut request = tonic::Request::new(WhoAmIRequest::default());
        request.metadata_mut().insert("authorization", bearer.clone());
        client.who_am_i(request).await.expect("WhoAmI succeeds");
    };
    for _ in 0..1_000 {
        call().await;
    }
    let (allocations, bytes) = (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
    for _ in 0..CALLS {
        call().await;
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    let bytes = BYTES.load(Ordering::Relaxed) - bytes;
    (allocations as f64 / CALLS as f64, bytes as f64 / CALLS as f64)
}

/// A tenant with one admin user; returns the user's access token.
async fn user_token(addr: SocketAddr, admin_key: &str) -> String {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    fn admin<T>(admin_key: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {admin_key}").parse().unwrap());
        request.metadata_mut().insert("x-tenant-id", "alloc-bench".parse().unwrap());
        request
    }
    let mut tenants = TenantServiceClient::new(channel.clone());
    let mut create = admin(
        admin_key,
        CreateTenantRequest {
            slug: "alloc-bench".into(),
            display_name: "Allocations".into(),
            plan_id: "bench".into(),
            ..Default::default()
        },
    );
    create.metadata_mut().remove("x-tenant-id");
    tenants.create_tenant(create).await.expect("tenant");
    let mut auth = AuthServiceClient::new(channel);
    let password = "correct horse battery staple";
    auth.create_user(admin(
        admin_key,
        CreateUserRequest {
            email: "alloc@bench.test".into(),
            display_name: "Load Tester".into(),
            password: password.into(),
            roles: vec!["admin".into()],
        },
    ))
    .await
    .expect("user");
    let login =
        LoginRequest { tenant: "alloc-bench".into(), email: "alloc@bench.test".into(), password: password.into() };
    auth.login(login).await.expect("login").into_inner().access_token
}

fn main() {
    // The production log format, every line formatted and discarded.
    let filter = EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn,hyper=warn");
    tracing_subscriber::registry().with(JsonLog::writing_to(Box::new(std::io::sink())).with_filter(filter)).init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let scratch = Scratch::create().await;
        let (_, admin_key) = AdminKeys::new(scratch.pool.clone()).create("bench").await.expect("admin key");
        // Limits the calls never reach: every call is rate-limited and metered, none refused.
        sqlx::query(
            "INSERT INTO platform.plans (id, display_name, requests_per_second, burst, monthly_request_quota,
                 max_concurrent_jobs, min_replicas, max_replicas)
             VALUES ('bench', 'Bench', 200000, 4000, 0, 1, 1, 1)",
        )
        .execute(&scratch.pool)
        .await
        .expect("plan");
        let shutdown = CancellationToken::new();

        let mut serve = ServeConfig::ephemeral();
        serve.migrate = false;
        let database = DatabaseConfig::from_options(scratch.pool.connect_options().as_ref().clone());
        let config = AppConfig { role: Role::Api, serve, database, workers: tenantry::config::defaults() };
        let app = App::build(config).await.expect("the server builds");
        let full = app.grpc_addr().expect("gRPC listener");
        tokio::spawn(app.run_until_stopped(shutdown.clone()));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tonic::transport::Server::builder().add_service(bare_echo::Echo::default());
        tokio::spawn(server.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()));

        let token = user_token(full, &admin_key).await;
        let started = Instant::now();
        let (bare_allocations, bare_bytes) = per_call(bare, &token).await;
        let (full_allocations, full_bytes) = per_call(full, &token).await;
        println!("WhoAmI, {CALLS} sequential calls each, one tonic client in this process ({:.1?})", started.elapsed());
        println!("{:<28} {:>12} {:>12}", "", "allocs/call", "bytes/call");
        println!("{:<28} {bare_allocations:>12.1} {bare_bytes:>12.0}", "bare tonic (client + server)");
        println!("{:<28} {full_allocations:>12.1} {full_bytes:>12.0}", "full server (client + server)");
        println!(
            "{:<28} {:>12.1} {:>12.0}",
            "the layers' own",
            full_allocations - bare_allocations,
            full_bytes - bare_bytes
        );
        shutdown.cancel();
        scratch.finish().await;
    });
}
