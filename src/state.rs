//! [`AppState`]: the shared handles of one process, all cheap to clone,
//! built once by [`AppState::build`] from the configuration. The services,
//! the stack, the HTTP routes and the background tasks are all made from
//! it, so nothing reads configuration or opens a connection anywhere else.

use std::{sync::Arc, time::Duration};

use fred::prelude::{Builder, ClientLike, ReconnectPolicy};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{AppConfig, RateLimitEngine, Secret, ServeConfig},
    db::{self, notify::ChangeFeed},
    health::Readiness,
    identity::{
        Authenticator, access::IdentityCache, api_keys::LastUsed, keys::KeyRing, passwords::PasswordHasherPool,
        tokens::TokenService,
    },
    jobs::events::JobEvents,
    metrics::Metrics,
    policy::PolicyTable,
    ratelimit::{PlanBook, QuotaBook, RateLimiter, fleet::NodeIdentity},
    stack::admission::{Admission, LimitBounds},
    startup::StartupError,
    tenancy::TenantDirectory,
    usage::meter::Meter,
};

/// The shared handles of one process.
#[derive(Clone)]
pub struct AppState {
    /// The server's settings (listeners, limits, identity, REST).
    pub config: Arc<ServeConfig>,
    /// The pool every query uses (possibly through a transaction-mode pooler).
    pub pool: PgPool,
    /// Direct session connections: LISTEN, the migration lock.
    pub listen_pool: PgPool,
    /// Calls in flight in this process, gRPC and REST together (the stack's
    /// ceiling; see [`crate::stack::wrap`]).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Admission control of database-bound calls, shared by both doors.
    pub admission: Arc<crate::stack::admission::Admission>,
    /// Every method's policy, from the embedded descriptor.
    pub policies: Arc<PolicyTable>,
    /// The process's metrics.
    pub metrics: Metrics,
    /// Tenant lookups (cached, invalidated by NOTIFY).
    pub tenants: TenantDirectory,
    /// Credential → principal (caches invalidated by NOTIFY).
    pub authenticator: Authenticator,
    /// argon2id off the executor, bounded.
    pub passwords: PasswordHasherPool,
    /// Tenant → plan limits (cached, invalidated by NOTIFY).
    pub plans: PlanBook,
    /// Monthly request counts, in memory.
    pub quotas: QuotaBook,
    /// Per-tenant usage of every call, flushed in batches.
    pub meter: Meter,
    /// Per-tenant rate limits (in process or in Redis).
    pub limiter: RateLimiter,
    /// This process as other nodes see it (`ratelimit::fleet`).
    pub node: NodeIdentity,
    /// The Redis client, when `REDIS_URL` is set.
    pub redis: Option<fred::prelude::Client>,
    /// Job wake-ups and change signals.
    pub jobs: JobEvents,
    /// Whether this node should get traffic (`/readyz`, gRPC health).
    pub readiness: Arc<Readiness>,
    /// The gRPC health service's reporter.
    pub health: tonic_health::server::HealthReporter,
    /// Signs and reads List page tokens with the key every node shares.
    pub page_tokens: crate::pagination::PageTokens,
    /// Every subscriber of the process's one LISTEN session; run by the supervisor.
    pub feed: ChangeFeed,
    /// Cancelled when the process begins to shut down: long-lived calls
    /// (WatchJob streams) end at once with a status clients can act on.
    pub stopping: CancellationToken,
}

impl AppState {
    /// Connects, checks (or applies) platform migrations, loads the policy
    /// table and the signing keys, and makes every handle.
    pub async fn build(config: &AppConfig) -> Result<AppState, StartupError> {
        config.validate()?;
        // Before touching the network: a contract without policies never serves.
        let policies = Arc::new(PolicyTable::embedded()?);
        let pool = db::connect(&config.database).await?;
        // The session connections name the node, so peers can see it
        // (`ratelimit::fleet`).
        let node = NodeIdentity::new(config.role, config.serve.effective_rate_limit_engine());
        let mut database = config.database.clone();
        database.listen_options = Some(database.listen_options()?.application_name(&node.application_name()));
        let listen_pool = db::listen_pool(&database)?;
        if config.serve.migrate {
            // On a direct session: the migration lock is session-level.
            db::migrate(&listen_pool).await?;
        } else {
            db::check_migrations(&pool).await?;
        }
        let page_tokens = crate::pagination::PageTokens::load(&pool).await.map_err(crate::db::DbError::Query)?;
        let serve = &config.serve;
        let metrics = Metrics::new();
        metrics.watch_pool(pool.clone());
        let redis = serve.redis_url.as_ref().map(redis_client).transpose()?;

        let mut feed = ChangeFeed::default();
        let tenants = TenantDirectory::with_capacity(pool.clone(), serve.cache_entries);
        tenants.subscribe(&mut feed);
        let plans = PlanBook::with_capacity(pool.clone(), serve.cache_entries);
        plans.subscribe(&mut feed);
        let identity = IdentityCache::with_capacity(pool.clone(), serve.cache_entries);
        identity.subscribe(&mut feed);
        let jobs = JobEvents::new();
        jobs.subscribe(&mut feed);
        // Without a signing key no token can be issued (the worker issues none).
        let tokens = TokenService::new(
            KeyRing::from_config(&serve.identity)?,
            &serve.identity.jwt_issuer,
            &serve.identity.jwt_audience,
            serve.identity.access_token_ttl,
        )
        .caching(serve.cache_entries);
        let authenticator = Authenticator::new(pool.clone(), tokens, identity, tenants.clone(), LastUsed::default());

        let quotas = QuotaBook::with_capacity(pool.clone(), serve.cache_entries);
        let meter = Meter::with_metrics(serve.usage_buffer_entries, quotas.clone(), metrics.clone());
        let engine = serve.effective_rate_limit_engine();
        metrics.set_rate_limit_engine(engine);
        let limiter = match (engine, &redis) {
            (RateLimitEngine::Redis, Some(client)) => {
                RateLimiter::redis(client.clone(), serve.rate_limit_expected_nodes, serve.rate_limit_fail_mode)
            }
            _ => RateLimiter::local(),
        }
        .remembering(serve.cache_entries)
        .with_metrics(metrics.clone());
        let readiness = Arc::new(Readiness::new(redis.is_some()));
        let admission = Arc::new(Admission::new(
            &policies,
            // Gated calls wait on the database: as many as the pool has
            // connections never queue for one, and beyond a few per
            // connection they only queue, so the learned limit stays between
            // one and four per connection (and within the process ceiling).
            // The floor also keeps a mix of fast and slow methods, whose
            // latencies differ by more than the gradient's tolerance, from
            // driving the limit below what the pool serves at once.
            LimitBounds {
                min: (config.database.max_connections as usize).clamp(4, serve.max_in_flight),
                initial: (2 * config.database.max_connections as usize).min(serve.max_in_flight),
                max: (4 * config.database.max_connections as usize).clamp(4, serve.max_in_flight),
            },
            readiness.clone(),
            metrics.clone(),
        ));
        let health = tonic_health::server::HealthReporter::new();

        Ok(AppState {
            config: Arc::new(serve.clone()),
            passwords: PasswordHasherPool::new(serve.identity.password_hash_concurrency),
            in_flight: Arc::new(tokio::sync::Semaphore::new(serve.max_in_flight)),
            admission,
            pool,
            listen_pool,
            policies,
            metrics,
            tenants,
            authenticator,
            plans,
            quotas,
            meter,
            limiter,
            node,
            redis,
            page_tokens,
            jobs,
            readiness,
            health,
            feed,
            stopping: CancellationToken::new(),
        })
    }
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
