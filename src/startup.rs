//! Building and running a process. [`App::build`] makes everything from the
//! configuration: the shared handles ([`AppState`]), the routes behind the
//! one stack, the bound listeners (port 0 works; tests read the bound
//! addresses) and the background [`Supervisor`] with its named tasks.
//! [`App::run_until_stopped`] only runs: it serves until the shutdown token
//! is cancelled, then drains in a stated order.
//!
//! `tenantry serve` and `tenantry worker` are the same build with a
//! different [`Role`]: the worker has no gRPC listener and serves only
//! `/healthz`, `/readyz` and `/metrics` over HTTP.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    config::{AppConfig, ConfigError, Role},
    db::DbError,
    health::HealthProbe,
    jobs,
    policy::PolicyError,
    proto::PACKAGE,
    services, stack,
    supervisor::{Restart, Stage, Supervisor},
};

pub use crate::state::AppState;

/// How long one stage of background tasks may take to stop.
const STAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the process could not start or stopped with an error.
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

/// A process that is built and bound, not yet serving.
pub struct App {
    state: AppState,
    /// The gRPC listener and the routes the stack wraps (API role only).
    grpc: Option<(TcpListener, Routes)>,
    http: (TcpListener, axum::Router),
    supervisor: Supervisor,
    config: AppConfig,
}

impl App {
    /// Builds the process `config` describes; see the module docs.
    pub async fn build(config: AppConfig) -> Result<App, StartupError> {
        let state = AppState::build(&config).await?;
        let serve = &config.serve;
        let grpc = match config.role {
            Role::Api => Some((bind(serve.grpc_addr).await?, services::routes(&state, &config)?)),
            Role::Worker => None,
        };
        let mut http = crate::http::router(state.readiness.clone(), state.metrics.clone());
        if let Some((_, routes)) = &grpc {
            // The REST gateway calls the same stack around the same routes in
            // process: one set of limits, caches and policies behind both doors.
            let gateway = crate::gateway::Gateway::new(
                crate::gateway::routes::RouteTable::embedded()?,
                &state.policies,
                stack::wrap(&state, routes.clone()),
                &serve.rest,
                serve.max_message_bytes,
                state.metrics.clone(),
            );
            http = http.fallback_service(gateway);
        }
        let http = (bind(serve.http_addr).await?, http);
        let supervisor = supervise(&state, &config).await;
        Ok(App { state, grpc, http, supervisor, config })
    }

    /// The bound gRPC address (API role).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.0.local_addr().unwrap_or(self.config.serve.http_addr)
    }

    /// The shared handles.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The database pool.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.state.pool
    }

    /// Serves until `shutdown` is cancelled. Then: readiness fails at once,
    /// long-lived calls are told to end, and after `--shutdown-delay` the
    /// listeners stop accepting and in-flight calls drain (at most
    /// `--drain-timeout`); then the background tasks stop stage by stage and
    /// the pools close.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let App { state, grpc, http, supervisor, config } = self;
        let tasks = supervisor.start(STAGE_TIMEOUT);
        let closing = CancellationToken::new();
        let servers = serve(&state, grpc, http, &config, closing.clone());
        tokio::pin!(servers);
        let failed = tokio::select! {
            result = &mut servers => Some(result),
            () = shutdown.cancelled() => None,
        };
        if failed.is_none() {
            tracing::info!(delay = ?config.serve.shutdown_delay, "shutting down: not ready any more");
            state.readiness.begin_draining();
            state.stopping.cancel();
            tokio::time::sleep(config.serve.shutdown_delay).await;
            closing.cancel();
        }
        let result = match failed {
            Some(result) => result,
            None => tokio::time::timeout(config.serve.drain_timeout, &mut servers).await.unwrap_or_else(|_| {
                tracing::warn!(timeout = ?config.serve.drain_timeout, "drain timed out; closing remaining calls");
                Ok(())
            }),
        };
        tasks.shutdown().await;
        state.pool.close().await;
        state.listen_pool.close().await;
        tracing::info!("stopped");
        result
    }
}

/// Binds a listener, naming the address when it cannot.
async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })
}

/// Both servers, until `closing` is cancelled and their calls drained.
async fn serve(
    state: &AppState,
    grpc: Option<(TcpListener, Routes)>,
    (listener, router): (TcpListener, axum::Router),
    config: &AppConfig,
    closing: CancellationToken,
) -> Result<(), StartupError> {
    let limits = config.serve.connection_limits();
    let http = crate::server::serve(listener, router, limits, closing.clone());
    let grpc = async {
        let Some((listener, routes)) = grpc else { return Ok(()) };
        // gRPC-Web from browsers (HTTP/1.1 too) is translated outside the
        // stack, so it passes all of it like a native call.
        let service = tower::ServiceBuilder::new()
            .layer(crate::grpc_web::layers(&config.serve.rest.cors_allowed_origins))
            .service(stack::wrap(state, routes));
        crate::server::serve(listener, service, limits, closing).await
    };
    let (grpc, http) = tokio::join!(grpc, http);
    grpc.map_err(StartupError::Http)?;
    http.map_err(StartupError::Http)
}

/// Registers the process's background tasks (see [`crate::supervisor`]).
async fn supervise(state: &AppState, config: &AppConfig) -> Supervisor {
    let mut supervisor = Supervisor::new(state.metrics.clone());
    let feed = state.feed.clone();
    let listen_pool = state.listen_pool.clone();
    supervisor.spawn("change-feed", Stage::Observe, Restart::Always, move |stop| {
        let (feed, pool) = (feed.clone(), listen_pool.clone());
        feed.run(pool, stop)
    });
    let mut services: Vec<String> =
        state.policies.iter().filter(|p| p.service.starts_with(PACKAGE)).map(|p| p.service.clone()).collect();
    services.sort();
    services.dedup();
    let probe = Arc::new(HealthProbe {
        readiness: state.readiness.clone(),
        reporter: state.health.clone(),
        services,
        pool: state.pool.clone(),
        redis: state.redis.clone(),
        interval: config.serve.health_interval,
        metrics: state.metrics.clone(),
    });
    // Every service has a status before the first call.
    probe.probe_once().await;
    supervisor.spawn("health-probe", Stage::Observe, Restart::Always, move |stop| {
        let probe = probe.clone();
        async move { probe.run(stop).await }
    });
    let (pool, node) = (state.pool.clone(), state.node.clone());
    supervisor.spawn("fleet-watch", Stage::Observe, Restart::Always, move |stop| {
        crate::ratelimit::fleet::watch(pool.clone(), node.clone(), stop)
    });
    if config.role == Role::Api {
        let (meter, pool, every) = (state.meter.clone(), state.pool.clone(), config.serve.usage_flush_interval);
        supervisor.spawn("usage-flusher", Stage::Flush, Restart::Always, move |stop| {
            meter.clone().run_flusher(pool.clone(), every, stop)
        });
        let last_used = state.authenticator.last_used().clone();
        let (pool, every) = (state.pool.clone(), config.serve.identity.last_used_flush);
        supervisor.spawn("api-key-last-used", Stage::Flush, Restart::Always, move |stop| {
            last_used.clone().run(pool.clone(), every, stop)
        });
        let limiter = state.limiter.clone();
        supervisor.spawn("rate-limit-housekeeping", Stage::Work, Restart::Always, move |stop| {
            limiter.clone().housekeep(stop)
        });
    }
    // Every node rescues expired leases, with or without built-in workers:
    // external workers' leases must not depend on a worker process running.
    let (pool, workers, metrics) = (state.pool.clone(), config.workers.clone(), state.metrics.clone());
    supervisor.spawn("job-housekeeping", Stage::Work, Restart::Always, move |stop| {
        jobs::rescuer::run(pool.clone(), workers.clone(), metrics.clone(), stop)
    });
    if config.runs_workers() {
        let (pool, workers, events, metrics) =
            (state.pool.clone(), config.workers.clone(), state.jobs.clone(), state.metrics.clone());
        supervisor.spawn("job-workers", Stage::Work, Restart::Always, move |stop| {
            let mut registry = jobs::handlers::Registry::builtin();
            let scaling = jobs::handlers::scaling::EvaluateScaling::new(workers.scaling_decision_retention)
                .with_metrics(metrics.clone());
            registry.register(jobs::handlers::SCALING_EVALUATE, scaling);
            jobs::worker::Workers::new(pool.clone(), registry, workers.clone(), events.clone())
                .with_metrics(metrics.clone())
                .run(stop)
        });
    }
    supervisor
}
