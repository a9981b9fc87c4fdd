//! Throughput of a cheap RPC (UsageService/GetQuota, answered from memory)
//! over loopback gRPC through three servers, measured in one run and
//! reported as ratios:
//!
//! - `full-local`: the real server (`App::build`), in-process limiter;
//! - `full-redis`: the same with the Redis limiter;
//! - `bare`: the usage service behind only the observe layer and a fixed
//!   tenant — every other layer off.
//!
//! Needs PostgreSQL (`DATABASE_URL`, or a private cluster from the machine's
//! binaries) and `redis-server` (`REDIS_URL`, or a private one).
//! Run: `cargo bench --bench limits`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput};
use http::Request;
use sqlx::{PgPool, postgres::PgConnectOptions};
use tenantry::{
    auth::api_key::AdminKeys,
    config::{AppConfig, DatabaseConfig, RateLimitEngine, Role, ServeConfig},
    context::RequestContext,
    db::embedded::EmbeddedPostgres,
    metrics::Metrics,
    policy::PolicyTable,
    proto::tenantry::v1::{
        GetQuotaRequest, usage_service_client::UsageServiceClient, usage_service_server::UsageServiceServer,
    },
    ratelimit::{PlanBook, QuotaBook, RateLimiter},
    stack::observe::ObserveLayer,
    startup::App,
    tenancy::{TenantDirectory, TenantId},
    usage::service::UsageApi,
};
use tokio::{net::TcpListener, runtime::Runtime};
use tokio_util::sync::CancellationToken;
use tonic::{body::Body, transport::Channel};
use tower::ServiceBuilder;

/// Calls per measured batch, and how many are in flight at once.
const BATCH: usize = 256;
const CONCURRENCY: usize = 16;
/// The ratio table: rounds, and batches per variant in each round.
const RATIO_ROUNDS: usize = 10;
const RATIO_BATCHES: usize = 16;

struct Fixture {
    options: PgConnectOptions,
    redis_url: String,
    pool: PgPool,
    admin_key: String,
    tenant: TenantId,
    /// The private Redis this run started, if any.
    redis_pid_file: Option<PathBuf>,
    shutdown: CancellationToken,
    _cluster: Option<(EmbeddedPostgres, PathBuf)>,
}

async fn fixture() -> Fixture {
    let (options, cluster) = match std::env::var("DATABASE_URL") {
        Ok(url) => (PgConnectOptions::from_str(&url).expect("DATABASE_URL"), None),
        Err(_) => {
            let dir = std::env::temp_dir().join(format!("tenantry-bench-{}", std::process::id()));
            let cluster = EmbeddedPostgres::start(&dir).await.expect("a private PostgreSQL");
            cluster.ensure_database("bench").await.expect("bench database");
            (cluster.connect_options("bench"), Some((cluster, dir)))
        }
    };
    // Room for every variant's LISTEN sessions (each holds a connection) and the calls.
    let pool =
        sqlx::postgres::PgPoolOptions::new().max_connections(32).connect_with(options.clone()).await.expect("connect");
    tenantry::db::migrate(&pool).await.expect("migrate");
    let (_, admin_key) = AdminKeys::new(pool.clone()).create("bench").await.expect("admin key");
    sqlx::query(
        "INSERT INTO platform.plans (id, display_name, requests_per_second, burst, monthly_request_quota,
             max_concurrent_jobs, min_replicas, max_replicas)
         VALUES ('bench', 'Bench', 1000000, 1000000, 1000000000000, 1, 1, 1) ON CONFLICT (id) DO NOTHING",
    )
    .execute(&pool)
    .await
    .expect("plan");
    let tenant = TenantId::generate();
    sqlx::query("INSERT INTO platform.tenants (id, slug, display_name, plan_id) VALUES ($1, $2, 'Bench', 'bench')")
        .bind(tenant.as_str())
        .bind(format!("bench-{}", &tenant.as_str()[4..14]))
        .execute(&pool)
        .await
        .expect("tenant");
    let (redis_url, redis_pid_file) = match std::env::var("REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let (url, pid_file) = start_redis();
            (url, Some(pid_file))
        }
    };
    let config = fred::prelude::Config::from_url(&redis_url).expect("REDIS_URL");
    let redis = fred::prelude::Builder::from_config(config).build().expect("redis client");
    fred::prelude::ClientLike::init(&redis).await.expect("connect to Redis");
    drop(redis);
    Fixture {
        options,
        redis_url,
        pool,
        admin_key,
        tenant,
        redis_pid_file,
        shutdown: CancellationToken::new(),
        _cluster: cluster,
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Stop the private Redis this run started (by its pid), and PostgreSQL.
        if let Some(pid) = self.redis_pid_file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
            std::process::Command::new("kill").arg(pid.trim()).status().ok();
        }
        if let Some((cluster, dir)) = self._cluster.take() {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(cluster.stop()).ok();
            std::fs::remove_dir_all(dir).ok();
        }
    }
}

fn start_redis() -> (String, PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pid_file = std::env::temp_dir().join(format!("tenantry-bench-redis-{port}.pid"));
    std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "yes", "--pidfile"])
        .arg(&pid_file)
        .status()
        .expect("redis-server");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (format!("redis://127.0.0.1:{port}"), pid_file)
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    FullLocal,
    FullRedis,
    Bare,
}

/// Serves the usage service through `variant`'s stack; returns its address.
async fn serve(fixture: &Fixture, variant: Variant) -> SocketAddr {
    match variant {
        Variant::FullLocal | Variant::FullRedis => {
            let mut serve = ServeConfig::ephemeral();
            serve.migrate = false;
            if let Variant::FullRedis = variant {
                serve.redis_url = Some(fixture.redis_url.clone().into());
                serve.rate_limit_engine = Some(RateLimitEngine::Redis);
            }
            let database = DatabaseConfig::from_options(fixture.options.clone());
            let config = AppConfig { role: Role::Api, serve, database, workers: tenantry::config::defaults() };
            let app = App::build(config).await.expect("the server builds");
            let addr = app.grpc_addr().expect("gRPC listener");
            tokio::spawn(app.run_until_stopped(fixture.shutdown.clone()));
            addr
        }
        Variant::Bare => {
            let policies = Arc::new(PolicyTable::embedded().expect("policies"));
            let quotas = QuotaBook::new(fixture.pool.clone());
            let routes = tonic::service::Routes::new(UsageServiceServer::new(UsageApi::new(
                fixture.pool.clone(),
                PlanBook::new(fixture.pool.clone()),
                quotas,
                RateLimiter::local(),
            )));
            let tenants = TenantDirectory::new(fixture.pool.clone());
            let tenant = tenants.resolve(fixture.tenant.as_str()).await.unwrap().expect("bench tenant");
            let layers = ServiceBuilder::new()
                .layer(ObserveLayer::new(policies, Duration::from_secs(30), 4 << 20, Metrics::new()))
                .map_request(move |mut request: Request<Body>| {
                    if let Some(context) = request.extensions_mut().get_mut::<RequestContext>() {
                        context.set_tenant(tenant.clone());
                    }
                    request
                });
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let server = tonic::transport::Server::builder().layer(layers).add_routes(routes);
            tokio::spawn(server.serve_with_incoming_shutdown(incoming, fixture.shutdown.clone().cancelled_owned()));
            addr
        }
    }
}

/// Sends `BATCH` calls, `CONCURRENCY` at a time; every call must succeed.
async fn batch(channel: &Channel, fixture: &Fixture) {
    let bearer = format!("Bearer {}", fixture.admin_key);
    let mut tasks = Vec::with_capacity(CONCURRENCY);
    for _ in 0..CONCURRENCY {
        let mut client = UsageServiceClient::new(channel.clone());
        let (bearer, tenant) = (bearer.clone(), fixture.tenant.to_string());
        tasks.push(tokio::spawn(async move {
            for _ in 0..BATCH / CONCURRENCY {
                let mut request = tonic::Request::new(GetQuotaRequest::default());
                request.metadata_mut().insert("authorization", bearer.parse().unwrap());
                request.metadata_mut().insert("x-tenant-id", tenant.parse().unwrap());
                client.get_quota(request).await.expect("the call succeeds");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn main() {
    let runtime = Runtime::new().unwrap();
    let fixture = runtime.block_on(fixture());
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    let variants = [Variant::Bare, Variant::FullLocal, Variant::FullRedis];
    let channels: Vec<Channel> = variants
        .iter()
        .map(|&variant| {
            runtime.block_on(async {
                let addr = serve(&fixture, variant).await;
                Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
            })
        })
        .collect();
    {
        let mut group = criterion.benchmark_group("get_quota");
        group.throughput(Throughput::Elements(BATCH as u64));
        for (variant, channel) in variants.iter().zip(&channels) {
            group.bench_function(format!("{variant:?}"), |b| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let (channel, fixture) = (channel.clone(), &fixture);
                    async move {
                        let started = Instant::now();
                        for _ in 0..iters {
                            batch(&channel, fixture).await;
                        }
                        started.elapsed()
                    }
                });
            });
        }
        group.finish();
    }
    // The ratio table: the variants take turns, round after round, so a
    // change in the machine's load falls on all of them alike.
    let mut totals = vec![Duration::ZERO; variants.len()];
    runtime.block_on(async {
        for _ in 0..RATIO_ROUNDS {
            for (total, channel) in totals.iter_mut().zip(&channels) {
                let started = Instant::now();
                for _ in 0..RATIO_BATCHES {
                    batch(channel, &fixture).await;
                }
                *total += started.elapsed();
            }
        }
    });
    let calls = (RATIO_ROUNDS * RATIO_BATCHES * BATCH) as f64;
    let means: Vec<_> = variants.iter().zip(&totals).map(|(v, t)| (*v, calls / t.as_secs_f64())).collect();
    fixture.shutdown.cancel();
    let rate = |v: &str| means.iter().find(|(m, _)| format!("{m:?}") == v).map_or(f64::NAN, |(_, r)| *r);
    println!("\ncalls per second (GetQuota, {CONCURRENCY} in flight, loopback gRPC):");
    for (variant, per_second) in &means {
        println!("  {:<11} {per_second:>9.0}", format!("{variant:?}"));
    }
    println!("ratios:");
    println!("  full (local) / bare           = {:.3}  (target >= 0.80)", rate("FullLocal") / rate("Bare"));
    println!("  full (redis) / full (local)   = {:.3}  (target >= 0.50)", rate("FullRedis") / rate("FullLocal"));
    criterion.final_summary();
}
