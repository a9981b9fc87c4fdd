//! Building and running the servers. [`App::build`] connects, checks or
//! applies migrations, loads the policy table and binds both listeners (port 0
//! works; tests read the bound addresses). [`App::run_until_stopped`] serves
//! until the token is cancelled, then drains in-flight calls within a bound.

use std::{collections::HashSet, net::SocketAddr, sync::Arc, time::Duration};

use fred::prelude::{Builder, ClientLike, ReconnectPolicy};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    server::NamedService,
    service::Routes,
    transport::{Server, server::TcpIncoming},
};

use crate::{
    config::{ConfigError, DatabaseConfig, RateLimitEngine, Secret, ServeConfig},
    db::{self, DbError},
    health::HealthProbe,
    identity::{
        Authenticator, access::IdentityCache, api_keys::LastUsed, keys::KeyRing, passwords::PasswordHasherPool,
        service::AuthApi, tokens::TokenService,
    },
    jobs::{self, worker::WorkerConfig},
    metrics::Metrics,
    policy::{PolicyError, PolicyTable},
    proto::FILE_DESCRIPTOR_SET,
    proto::tenantry::v1::{
        auth_service_server::AuthServiceServer, jobs_service_server::JobsServiceServer,
        scaling_service_server::ScalingServiceServer, tenant_service_server::TenantServiceServer,
        usage_service_server::UsageServiceServer,
    },
    ratelimit::{PlanBook, QuotaBook, RateLimiter},
    reflection::Reflection,
    scaling::service::ScalingApi,
    stack::{self, StackState},
    tenancy::{TenantDirectory, service::TenantApi},
    usage::{meter::Meter, service::UsageApi},
};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("the API contract is incomplete: {0}")]
    Policy(#[from] PolicyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("REDIS_URL is not a valid Redis URL")]
    RedisUrl,
    #[error("the REST routes of the contract are unusable: {0}")]
    Gateway(#[from] crate::gateway::RouteError),
    #[error("reflection service: {0}")]
    Reflection(#[from] prost_reflect::DescriptorError),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// A server that is built and bound, not yet serving.
pub struct App {
    config: ServeConfig,
    pool: PgPool,
    listen_pool: PgPool,
    policies: Arc<PolicyTable>,
    keys: KeyRing,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    metrics: Metrics,
    workers: WorkerConfig,
}

impl App {
    /// Validates the configuration, connects, checks (or applies) platform
    /// migrations and binds both listeners.
    pub async fn build(config: ServeConfig, database: DatabaseConfig) -> Result<App, StartupError> {
        config.validate()?;
        // Before touching the network: a contract without policies never serves.
        let policies = Arc::new(PolicyTable::embedded()?);
        let pool = db::connect(&database).await?;
        let listen_pool = db::listen_pool(&database)?;
        if config.migrate {
            // On a direct session: the migration lock is session-level.
            db::migrate(&listen_pool).await?;
        } else {
            db::check_migrations(&pool).await?;
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })
        };
        // Before listening: without a signing key no token can be issued.
        let keys = KeyRing::from_config(&config.identity)?;
        let grpc_listener = bind(config.grpc_addr).await?;
        let http_listener = bind(config.http_addr).await?;
        let metrics = Metrics::new();
        metrics.watch_pool(pool.clone());
        Ok(App {
            config,
            pool,
            listen_pool,
            policies,
            keys,
            grpc_listener,
            http_listener,
            metrics,
            workers: crate::config::defaults(),
        })
    }

    /// Settings of the in-process job workers (unless `--no-workers`).
    pub fn with_workers(mut self, workers: WorkerConfig) -> Result<App, StartupError> {
        workers.validate()?;
        self.workers = workers;
        Ok(self)
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener.local_addr().unwrap_or(self.config.grpc_addr)
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener.local_addr().unwrap_or(self.config.http_addr)
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The server's metrics, for modules started next to it (workers, flushers).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, drains
    /// in-flight calls for at most the drain timeout, and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let App { config, pool, listen_pool, policies, keys, grpc_listener, http_listener, metrics, workers } = self;
        // Conflicting or broken HTTP rules stop the server before it serves anything.
        let rest_routes = crate::gateway::routes::RouteTable::embedded()?;
        let jobs = jobs::Runtime::start(
            pool.clone(),
            listen_pool.clone(),
            Some(metrics.clone()),
            (!config.no_workers).then_some(workers),
            shutdown.clone(),
        );

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let reflection = Reflection::new(&[FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET])?;
        let (reflection_v1, reflection_v1alpha) = (reflection.v1(), reflection.v1alpha());

        let tenants = TenantDirectory::new(pool.clone());
        tenants.listen(listen_pool.clone(), shutdown.clone());
        let writer_stop = shutdown.child_token();
        let (authenticator, last_used_writer) =
            identity_handles(&config, &pool, &listen_pool, keys, &tenants, &shutdown, &writer_stop);
        let hasher = PasswordHasherPool::new(config.identity.password_hash_concurrency);

        let mut mounted = HashSet::new();
        let mut routes = Routes::builder();
        mount(&mut routes, &mut mounted, health_service);
        mount(&mut routes, &mut mounted, reflection_v1);
        mount(&mut routes, &mut mounted, reflection_v1alpha);
        mount(
            &mut routes,
            &mut mounted,
            TenantServiceServer::new(
                TenantApi::new(pool.clone(), tenants.clone(), config.tenant_purge_grace).with_passwords(hasher.clone()),
            )
            .max_decoding_message_size(config.max_message_bytes),
        );
        let auth_api =
            AuthApi::new(pool.clone(), authenticator.clone(), hasher, tenants.clone(), &config.identity, &policies);
        mount(
            &mut routes,
            &mut mounted,
            AuthServiceServer::new(auth_api).max_decoding_message_size(config.max_message_bytes),
        );
        let plans = PlanBook::new(pool.clone());
        plans.listen(listen_pool.clone(), shutdown.clone());
        let quotas = QuotaBook::new(pool.clone());
        let meter = Meter::with_metrics(config.usage_buffer_entries, quotas.clone(), metrics.clone());
        meter.spawn_flusher(pool.clone(), config.usage_flush_interval, shutdown.clone());
        let limiter = match (config.rate_limit_engine, &config.redis_url) {
            (RateLimitEngine::Redis, Some(url)) => {
                RateLimiter::redis(redis_client(url)?, config.rate_limit_expected_nodes, config.rate_limit_fail_mode)
            }
            _ => RateLimiter::local(),
        }
        .with_metrics(metrics.clone());
        limiter.housekeep(shutdown.clone());
        mount(
            &mut routes,
            &mut mounted,
            UsageServiceServer::new(UsageApi::new(pool.clone(), plans.clone(), quotas.clone()))
                .max_decoding_message_size(config.max_message_bytes),
        );
        mount(
            &mut routes,
            &mut mounted,
            JobsServiceServer::new(jobs.api()).max_decoding_message_size(config.max_message_bytes),
        );
        mount(
            &mut routes,
            &mut mounted,
            ScalingServiceServer::new(ScalingApi::new(pool.clone()))
                .max_decoding_message_size(config.max_message_bytes),
        );
        let routes = routes.routes();

        let redis = config.redis_url.as_ref().map(redis_client).transpose()?;
        let mut services: Vec<String> = policies
            .iter()
            .filter(|p| p.service.starts_with(crate::proto::PACKAGE))
            .map(|p| p.service.clone())
            .collect();
        services.sort();
        services.dedup();
        let readiness = HealthProbe {
            reporter,
            services,
            pool: pool.clone(),
            redis,
            interval: config.health_interval,
            metrics: metrics.clone(),
        }
        .start(shutdown.clone())
        .await;

        let layers = stack::layers(StackState {
            policies: policies.clone(),
            mounted: Arc::new(mounted),
            authenticator,
            tenants,
            max_in_flight: config.max_in_flight,
            max_deadline: config.max_deadline,
            metrics: metrics.clone(),
            limiter,
            plans,
            quotas,
            meter: meter.clone(),
        });

        let incoming =
            TcpIncoming::from(grpc_listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(60)));
        let grpc = Server::builder()
            .max_concurrent_streams(config.max_concurrent_streams)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .http2_max_header_list_size(32 * 1024)
            // gRPC-Web from browsers comes over HTTP/1.1 too; translated outside the stack, so it passes all of it.
            .accept_http1(true)
            .layer(crate::grpc_web::layers(&config.rest.cors_allowed_origins))
            .layer(layers.clone())
            .add_routes(routes.clone())
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
        // The REST gateway calls the same layered routes in process: one stack (and one
        // set of limits, caches and policies) behind both doors.
        let stack = tower::util::BoxCloneSyncService::new(layers.service(routes));
        let gateway =
            crate::gateway::Gateway::new(rest_routes, &policies, stack, &config.rest, config.max_message_bytes);
        // Connect info gives REST calls the client address gRPC calls have (login throttling, logs).
        let http_service = crate::http::router(readiness, metrics)
            .fallback_service(gateway.router())
            .into_make_service_with_connect_info::<SocketAddr>();
        let http = axum::serve(http_listener, http_service)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();

        let servers = async {
            let (grpc, http) = tokio::join!(grpc, http);
            grpc?;
            http.map_err(StartupError::Http)
        };
        let drain_deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(config.drain_timeout).await;
        };
        tokio::select! {
            result = servers => result?,
            () = drain_deadline => tracing::warn!(timeout = ?config.drain_timeout, "drain timed out; closing remaining calls"),
        }
        // After the servers: workers finish or release their jobs, then the pool closes.
        jobs.stopped().await;
        // The API keys' last use collected since the last batch.
        writer_stop.cancel();
        last_used_writer.await.ok();
        // Drained: every call's usage is in the meter; write it before closing.
        match meter.flush(&pool).await {
            Ok(rows) => tracing::info!(rows, "usage flushed"),
            Err(error) => tracing::error!(%error, "final usage flush failed; the last interval's usage is lost"),
        }
        pool.close().await;
        listen_pool.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The identity caches (listening for invalidations), the authenticator
/// over them, and the batched last-used writer (ends after `shutdown`).
fn identity_handles(
    config: &ServeConfig,
    pool: &PgPool,
    listen_pool: &PgPool,
    keys: KeyRing,
    tenants: &TenantDirectory,
    shutdown: &CancellationToken,
    writer_stop: &CancellationToken,
) -> (Authenticator, tokio::task::JoinHandle<()>) {
    let cache = IdentityCache::new(pool.clone());
    cache.listen(listen_pool.clone(), shutdown.clone());
    let last_used = LastUsed::default();
    let writer = last_used.run(pool.clone(), config.identity.last_used_flush, writer_stop.clone());
    let identity = &config.identity;
    let tokens = TokenService::new(keys, &identity.jwt_issuer, &identity.jwt_audience, identity.access_token_ttl);
    (Authenticator::new(pool.clone(), tokens, cache, tenants.clone(), last_used), writer)
}

/// Adds a service to the routes and records that it is served.
fn mount<S>(routes: &mut tonic::service::RoutesBuilder, mounted: &mut HashSet<String>, service: S)
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    mounted.insert(S::NAME.to_owned());
    routes.add_service(service);
}

/// A Redis client that connects in the background and never blocks start-up:
/// Redis is optional and its loss only degrades rate limiting.
fn redis_client(url: &Secret) -> Result<fred::prelude::Client, StartupError> {
    let config = fred::prelude::Config::from_url(url.expose()).map_err(|_| StartupError::RedisUrl)?;
    let timeout = Duration::from_millis(250);
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
        })
        .with_performance_config(|p| p.default_command_timeout = timeout)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build()
        .map_err(|_| StartupError::RedisUrl)?;
    drop(client.connect());
    Ok(client)
}
