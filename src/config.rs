//! The one typed configuration: flags with environment fallbacks (clap),
//! validated at start with messages that name the flag, secrets wrapped so
//! they never print.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, ValueEnum};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// A configuration value that must never appear in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret's value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// A configuration error, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting}: {problem}")]
    Invalid { setting: &'static str, problem: String },
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { setting, problem: problem.into() }
}

/// Parses a duration in humantime's form: one or more `<number><unit>`
/// parts (`250ms`, `1.5s`, `1h30m`, `7d`), units `ns`, `us`, `ms`, `s`, `m`,
/// `h`, `d`, `w`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("`{text}` is not a duration like 500ms, 1.5s, 1h30m or 7d");
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return text.parse::<f64>().ok().and_then(|s| Duration::try_from_secs_f64(s).ok()).ok_or_else(bad);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let unit_end = rest[number_end..].find(|c: char| c.is_ascii_digit()).map_or(rest.len(), |i| number_end + i);
        let (number, unit) = (&rest[..number_end], &rest[number_end..unit_end]);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let seconds = match unit.trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 7.0 * 86_400.0,
            _ => return Err(format!("`{text}` has an unknown unit `{unit}`; use ns, us, ms, s, m, h, d or w")),
        };
        total += Duration::try_from_secs_f64(value * seconds).map_err(|_| bad())?;
        rest = &rest[unit_end..];
    }
    if text.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// A settings struct with every field at its clap default, ignoring the
/// environment: the one source of defaults, for code that builds a
/// configuration without a command line (tests, `tenantry worker`'s API
/// settings, benches).
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults").no_binary_name(true)).mut_args(|arg| arg.env(None));
    let matches = command.try_get_matches_from(std::iter::empty::<String>()).unwrap_or_else(|e| {
        unreachable!("every setting has a default or is optional: {e}");
    });
    T::from_arg_matches(&matches).unwrap_or_else(|e| unreachable!("the defaults parse: {e}"))
}

/// Where PostgreSQL is and how the pool behaves.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseConfig {
    /// PostgreSQL URL, e.g. postgres://user:pass@host:5432/tenantry.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub url: Option<Secret>,
    /// Largest number of pooled connections per process.
    #[arg(
        id = "db_max_connections",
        long = "db-max-connections",
        env = "TENANTRY_DB_MAX_CONNECTIONS",
        default_value_t = 20
    )]
    pub max_connections: u32,
    /// How long taking a pooled connection may take, opening a new one
    /// included, before UNAVAILABLE. A tenant transaction waits less: at
    /// most 500 ms of a full pool, or its call's deadline (see tenancy::tx).
    #[arg(long = "db-acquire-timeout", env = "TENANTRY_DB_ACQUIRE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub acquire_timeout: Duration,
    /// A pooled connection is closed and replaced once this old. Each
    /// PostgreSQL backend caches the catalog entries of every tenant schema it
    /// touched and never gives them back, so the age bounds its memory
    /// (docs/tenancy.md, "Pool sizing with many schemas").
    #[arg(id = "db_max_lifetime", long = "db-max-lifetime", env = "TENANTRY_DB_MAX_LIFETIME", default_value = "5m", value_parser = parse_duration)]
    pub max_lifetime: Duration,
    /// A pooled connection idle this long is closed.
    #[arg(id = "db_idle_timeout", long = "db-idle-timeout", env = "TENANTRY_DB_IDLE_TIMEOUT", default_value = "1m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Prepared statements cached per connection (at least 1). Behind a
    /// transaction-mode pooler it must carry prepared statements: PgBouncer
    /// >= 1.21 with max_prepared_statements, or RDS Proxy.
    #[arg(long = "db-statement-cache", env = "TENANTRY_DB_STATEMENT_CACHE", default_value_t = 100)]
    pub statement_cache_capacity: usize,
    /// A direct PostgreSQL URL for what needs a session (LISTEN/NOTIFY, the
    /// migrations' advisory lock) when DATABASE_URL goes through a
    /// transaction-mode pooler; defaults to DATABASE_URL.
    #[arg(long = "database-listen-url", env = "TENANTRY_DATABASE_LISTEN_URL", hide_env_values = true)]
    pub listen_url: Option<Secret>,
    /// Connection options built by code (the embedded cluster); wins over `url`.
    #[arg(skip)]
    pub connect_options: Option<PgConnectOptions>,
    /// Listener connection options built by code; wins over `listen_url`.
    #[arg(skip)]
    pub listen_options: Option<PgConnectOptions>,
}

impl DatabaseConfig {
    /// The defaults with explicit connect options (tests, the embedded cluster).
    pub fn from_options(options: PgConnectOptions) -> Self {
        DatabaseConfig { connect_options: Some(options), ..defaults() }
    }

    /// Checks the settings, naming the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.connect_options.is_none() && self.url.is_none() {
            return Err(invalid(
                "DATABASE_URL",
                "is required (or --database-url); `tenantry serve --dev` runs a private PostgreSQL instead",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("--db-max-connections", "must be at least 1"));
        }
        if self.max_lifetime < Duration::from_secs(1) || self.idle_timeout < Duration::from_secs(1) {
            return Err(invalid("--db-max-lifetime/--db-idle-timeout", "must be at least 1s"));
        }
        // sqlx still prepares a named statement for every query when its cache
        // is off, and never closes it: one more per execution on the server
        // connection, and name clashes behind a transaction-mode pooler.
        if self.statement_cache_capacity == 0 {
            return Err(invalid(
                "--db-statement-cache",
                "must be at least 1 (with 0, sqlx prepares a new named statement for every query and never \
                 closes it); behind a transaction-mode pooler use one that carries prepared statements, \
                 e.g. PgBouncer >= 1.21 with max_prepared_statements",
            ));
        }
        Ok(())
    }

    /// The options the pool connects with.
    pub fn connect_options(&self) -> Result<PgConnectOptions, ConfigError> {
        let options = match &self.connect_options {
            Some(options) => options.clone(),
            None => parse_url("DATABASE_URL", self.url.as_ref())?,
        };
        Ok(options.statement_cache_capacity(self.statement_cache_capacity))
    }

    /// The options session connections (LISTEN/NOTIFY, migrations) use: a
    /// session, never a pooler's transaction-scoped connection.
    pub fn listen_options(&self) -> Result<PgConnectOptions, ConfigError> {
        match (&self.listen_options, &self.listen_url) {
            (Some(options), _) => Ok(options.clone()),
            (None, Some(url)) => parse_url("TENANTRY_DATABASE_LISTEN_URL", Some(url)),
            (None, None) => self.connect_options(),
        }
    }
}

fn parse_url(setting: &'static str, url: Option<&Secret>) -> Result<PgConnectOptions, ConfigError> {
    let url = url.ok_or_else(|| invalid(setting, "is not set"))?;
    if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) {
        return Err(invalid(setting, "must start with postgres:// or postgresql://"));
    }
    // The parser's message may echo the URL, password included: keep it out.
    let options =
        PgConnectOptions::from_str(url.expose()).map_err(|_| invalid(setting, "is not a valid postgres:// URL"))?;
    let ssl_mode_given = url.expose().split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| pair.starts_with("sslmode=") || pair.starts_with("ssl-mode="))
    });
    Ok(without_loopback_tls(options, ssl_mode_given || std::env::var_os("PGSSLMODE").is_some()))
}

/// With no `sslmode` given, libpq and sqlx `prefer` TLS, unverified. On a
/// loopback address no byte leaves the host, so that TLS protects nothing
/// and costs both ends on every message (measured: PostgreSQL's CPU per
/// ListTenants 150 → 122 µs, docs/operations.md): there it is off. An
/// explicit `sslmode` (URL or `PGSSLMODE`) is always kept.
fn without_loopback_tls(options: PgConnectOptions, ssl_mode_given: bool) -> PgConnectOptions {
    let host = options.get_host();
    let loopback = host == "localhost"
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if ssl_mode_given || !loopback { options } else { options.ssl_mode(PgSslMode::Disable) }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON lines for production log pipelines.
    Json,
    /// Readable, coloured lines for a terminal.
    Pretty,
    /// Pretty on a terminal, JSON otherwise.
    Auto,
}

/// Logs and traces: how the process reports what it does.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logs and traces")]
pub struct TelemetryConfig {
    /// Log format: json for production, pretty for a terminal, auto picks.
    #[arg(long, env = "TENANTRY_LOG_FORMAT", value_enum, default_value = "auto", global = true)]
    pub log_format: LogFormat,
    /// OTLP/gRPC collector to send traces to (e.g. http://127.0.0.1:4317); no traces when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` traces carry.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "tenantry", global = true)]
    pub service_name: String,
}

impl TelemetryConfig {
    /// JSON logs, no traces: what tests and embedders start from.
    pub fn json() -> Self {
        TelemetryConfig { log_format: LogFormat::Json, otlp_endpoint: None, service_name: "tenantry".into() }
    }

    /// Checks the settings, naming the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otlp_endpoint {
            // The exporter shares the server's tonic build, which has no TLS:
            // send to a collector on the node or in the pod (the usual sidecar).
            let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
                invalid(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "must be an http:// URL of an OTLP/gRPC collector (TLS is not supported; use a local collector)",
                )
            })?;
            if rest.is_empty() || rest.starts_with('/') {
                return Err(invalid("OTEL_EXPORTER_OTLP_ENDPOINT", "must name a host, e.g. http://127.0.0.1:4317"));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid("OTEL_SERVICE_NAME", "must not be empty"));
        }
        Ok(())
    }
}

/// Settings of `tenantry serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address of the gRPC listener (port 0 picks a free port).
    #[arg(help_heading = "Getting started", long, env = "TENANTRY_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP listener (/healthz, /readyz, the REST API, /openapi.json, /docs).
    #[arg(help_heading = "Getting started", long, env = "TENANTRY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Apply pending platform migrations at start instead of refusing to start.
    #[arg(help_heading = "Operations", long, env = "TENANTRY_MIGRATE")]
    pub migrate: bool,
    /// Redis for rate limits shared by every node: redis://host:6379,
    /// rediss://host:6380 (TLS) or redis-cluster://host1:6379,host2:6379
    /// (Redis Cluster). Setting it selects the Redis engine.
    #[arg(help_heading = "Rate limits", long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,
    /// Do not run job workers in this process.
    #[arg(help_heading = "Job workers", long, env = "TENANTRY_NO_WORKERS")]
    pub no_workers: bool,
    /// HTTP/2 streams one client connection may have open at once. Keep it
    /// at 100 or below: h2 closes a connection (GOAWAY ENHANCE_YOUR_CALM) whose streams
    /// not yet read hold more small DATA frames than its budget (25,600 bytes
    /// of framing overhead at least, 236 per gRPC unary request), which a
    /// busy server reaches with more streams per connection.
    #[arg(help_heading = "Limits", long, env = "TENANTRY_MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    pub max_concurrent_streams: u32,
    /// Calls in flight in this process before new ones are shed with UNAVAILABLE.
    #[arg(help_heading = "Limits", long, env = "TENANTRY_MAX_IN_FLIGHT", default_value_t = 2048)]
    pub max_in_flight: usize,
    /// Ceiling on any call's deadline; a shorter `grpc-timeout` wins.
    #[arg(help_heading = "Limits", long, env = "TENANTRY_MAX_DEADLINE", default_value = "30s", value_parser = parse_duration)]
    pub max_deadline: Duration,
    /// How long the listeners keep serving after readiness fails at
    /// shutdown, so load balancers stop routing first (Kubernetes: a few
    /// seconds; ECS deregisters first, so 0 is fine there).
    #[arg(help_heading = "Operations", long, env = "TENANTRY_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// How long shutdown waits for in-flight calls before closing them.
    #[arg(help_heading = "Operations", long, env = "TENANTRY_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How often dependencies are probed for health and readiness.
    #[arg(help_heading = "Operations", long, env = "TENANTRY_HEALTH_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// How long a deleted tenant's data is kept before its schema is purged.
    #[arg(help_heading = "Operations", long, env = "TENANTRY_TENANT_PURGE_GRACE", default_value = "7d", value_parser = parse_duration)]
    pub tenant_purge_grace: Duration,
    /// Largest decoded request message, in bytes.
    #[arg(help_heading = "Limits", long, env = "TENANTRY_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Connections open at once per listener; past it new ones are closed at once.
    #[arg(
        help_heading = "Connections",
        long = "max-connections",
        env = "TENANTRY_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub connection_cap: usize,
    /// How long an HTTP/1 client may take to send a request's headers.
    #[arg(help_heading = "Connections", long, env = "TENANTRY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no call in flight before it is closed (HTTP/2: GOAWAY).
    #[arg(help_heading = "Connections", long, env = "TENANTRY_IDLE_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// How often HTTP/2 connections are pinged, and how long a ping may go unanswered.
    #[arg(help_heading = "Connections", long, env = "TENANTRY_HTTP2_KEEPALIVE", default_value = "30s", value_parser = parse_duration)]
    pub http2_keepalive: Duration,
    /// Largest request metadata (headers) a call may carry; more is RESOURCE_EXHAUSTED.
    #[arg(help_heading = "Limits", long, env = "TENANTRY_MAX_METADATA_BYTES", default_value_t = 32 * 1024)]
    pub max_metadata_bytes: usize,
    /// Identity: signing keys, token lifetimes, login throttling.
    #[command(flatten)]
    pub identity: crate::identity::IdentityConfig,
    /// REST gateway settings.
    #[command(flatten)]
    pub rest: crate::gateway::RestConfig,
    /// Where per-tenant rate limits are kept [default: redis when a Redis
    /// URL is set, else local]. `local` with several nodes multiplies every
    /// limit by the node count: opt out of Redis only on purpose.
    #[arg(help_heading = "Rate limits", long, env = "TENANTRY_RATE_LIMIT_ENGINE", value_enum)]
    pub rate_limit_engine: Option<RateLimitEngine>,
    /// Nodes expected to share the limits; while Redis is unreachable each
    /// node limits locally at the plan's rate divided by this.
    #[arg(help_heading = "Rate limits", long, env = "TENANTRY_RATE_LIMIT_EXPECTED_NODES", default_value_t = 1)]
    pub rate_limit_expected_nodes: u32,
    /// What ordinary calls get while Redis is unreachable: a local limit
    /// (limit / expected nodes) or no limit. Login and API-key creation are
    /// always limited locally.
    #[arg(
        help_heading = "Rate limits",
        long,
        env = "TENANTRY_RATE_LIMIT_FAIL_MODE",
        value_enum,
        default_value = "local"
    )]
    pub rate_limit_fail_mode: RateLimitFailMode,
    /// How often metered usage is written to the database.
    #[arg(help_heading = "Usage metering", long, env = "TENANTRY_USAGE_FLUSH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub usage_flush_interval: Duration,
    /// Distinct (tenant, method, minute) entries the meter holds between
    /// flushes; beyond it, entries are dropped and counted.
    #[arg(help_heading = "Usage metering", long, env = "TENANTRY_USAGE_BUFFER_ENTRIES", default_value_t = 100_000)]
    pub usage_buffer_entries: usize,
    /// Entries each per-node cache of tenant state holds (tenants, plans,
    /// users, API keys, verified tokens, quota counts, last rate decisions);
    /// beyond it the least useful are evicted one by one. Bounds a node's
    /// memory however many tenants it serves (docs/scaling-out.md).
    #[arg(long, env = "TENANTRY_CACHE_ENTRIES", default_value_t = crate::cache::DEFAULT_ENTRIES)]
    pub cache_entries: u64,
}

/// The header block HTTP/2 accepts at all (memory protection); calls with
/// more than `--max-metadata-bytes` but less than this get a proper status.
pub const MAX_HEADER_LIST_BYTES: u32 = 256 * 1024;

impl ServeConfig {
    /// The rate-limit engine in effect: the one named, else Redis when a
    /// Redis URL is set (limits are then global across nodes), else local.
    pub fn effective_rate_limit_engine(&self) -> RateLimitEngine {
        match (self.rate_limit_engine, &self.redis_url) {
            (Some(engine), _) => engine,
            (None, Some(_)) => RateLimitEngine::Redis,
            (None, None) => RateLimitEngine::Local,
        }
    }

    /// The limits of each listener's connections.
    pub fn connection_limits(&self) -> crate::server::ConnectionLimits {
        crate::server::ConnectionLimits {
            max_connections: self.connection_cap,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            keepalive_interval: self.http2_keepalive,
            keepalive_timeout: self.http2_keepalive.min(Duration::from_secs(20)),
            max_concurrent_streams: self.max_concurrent_streams,
            max_header_list_bytes: MAX_HEADER_LIST_BYTES,
        }
    }
}

/// Where rate-limit state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RateLimitEngine {
    /// In this process (exact per node).
    Local,
    /// In Redis, shared by every node (GCRA in one Lua script).
    Redis,
}

/// How ordinary calls are limited while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RateLimitFailMode {
    /// A local bucket at the plan's limit divided by the expected nodes.
    Local,
    /// No rate limit (quotas still apply).
    Open,
}

impl ServeConfig {
    /// Checks the settings, naming the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_in_flight == 0 {
            return Err(invalid("--max-in-flight", "must be at least 1"));
        }
        if self.max_concurrent_streams == 0 {
            return Err(invalid("--max-concurrent-streams", "must be at least 1"));
        }
        if self.max_deadline.is_zero() {
            return Err(invalid("--max-deadline", "must be longer than 0"));
        }
        if self.health_interval < Duration::from_millis(100) {
            return Err(invalid("--health-interval", "must be at least 100ms"));
        }
        if self.connection_cap == 0 {
            return Err(invalid("--max-connections", "must be at least 1"));
        }
        for (setting, value) in [
            ("--header-read-timeout", self.header_read_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--http2-keepalive", self.http2_keepalive),
        ] {
            if value < Duration::from_millis(100) {
                return Err(invalid(setting, "must be at least 100ms"));
            }
        }
        if !(1024..=MAX_HEADER_LIST_BYTES as usize / 2).contains(&self.max_metadata_bytes) {
            return Err(invalid("--max-metadata-bytes", "must be between 1 KiB and 128 KiB"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err(invalid("--max-message-bytes", "must be between 1 KiB and 64 MiB"));
        }
        if let Some(url) = &self.redis_url
            && !["redis://", "rediss://", "redis-cluster://"].iter().any(|scheme| url.expose().starts_with(scheme))
        {
            return Err(invalid("REDIS_URL", "must start with redis://, rediss:// or redis-cluster://"));
        }
        if self.rate_limit_engine == Some(RateLimitEngine::Redis) && self.redis_url.is_none() {
            return Err(invalid("--rate-limit-engine", "redis needs REDIS_URL (or --redis-url)"));
        }
        if self.rate_limit_expected_nodes == 0 {
            return Err(invalid("--rate-limit-expected-nodes", "must be at least 1"));
        }
        if self.usage_flush_interval < Duration::from_millis(50) {
            return Err(invalid("--usage-flush-interval", "must be at least 50ms"));
        }
        if self.cache_entries < 100 {
            return Err(invalid("--cache-entries", "must be at least 100"));
        }
        if self.usage_buffer_entries < 100 {
            return Err(invalid("--usage-buffer-entries", "must be at least 100"));
        }
        self.rest.validate()?;
        self.identity.validate()
    }

    /// The defaults for a server on loopback with both ports chosen by the
    /// OS, migrating at start and signing with a key made at start.
    pub fn ephemeral() -> Self {
        let mut config: ServeConfig = defaults();
        config.grpc_addr = ([127, 0, 0, 1], 0).into();
        config.http_addr = ([127, 0, 0, 1], 0).into();
        config.migrate = true;
        config.identity.ephemeral_signing_key = true;
        config
    }
}

/// What a process built by [`crate::startup::App::build`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `tenantry serve`: the gRPC and HTTP APIs, and job workers unless
    /// `--no-workers`.
    Api,
    /// `tenantry worker`: job workers, with only `/healthz`, `/readyz` and
    /// `/metrics` on the HTTP listener.
    Worker,
}

/// Everything one process needs: the one configuration
/// [`crate::startup::App::build`] takes.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// What the process serves.
    pub role: Role,
    /// Listeners, limits, identity, REST (the worker uses only `http_addr`
    /// and the health interval).
    pub serve: ServeConfig,
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// The built-in job workers.
    pub workers: crate::jobs::worker::WorkerConfig,
}

impl AppConfig {
    /// Checks every part, naming the first setting at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.serve.validate()?;
        self.database.validate()?;
        self.workers.validate()
    }

    /// Whether this process runs the built-in job workers.
    pub fn runs_workers(&self) -> bool {
        self.role == Role::Worker || !self.serve.no_workers
    }
}

/// Settings of `serve --dev`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Getting started")]
pub struct DevConfig {
    /// Run the embedded default: a private PostgreSQL unless DATABASE_URL is set.
    #[arg(long)]
    pub dev: bool,
    /// Where `--dev` keeps its PostgreSQL cluster and admin key.
    #[arg(long, env = "TENANTRY_DATA_DIR", default_value = ".tenantry")]
    pub data_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_humantime_forms() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in ["5 parsecs", "", "ms", "1.2.3s", "h1", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_come_from_clap_and_ignore_the_environment() {
        let serve: ServeConfig = defaults();
        assert_eq!(serve.max_deadline, Duration::from_secs(30));
        assert_eq!(serve.identity.access_token_ttl, Duration::from_secs(15 * 60));
        assert!(serve.redis_url.is_none(), "REDIS_URL in the environment must not leak into defaults");
        let database: DatabaseConfig = defaults();
        assert_eq!(database.max_connections, 20);
        assert!(database.url.is_none());
    }

    #[test]
    fn tls_is_off_on_loopback_unless_an_ssl_mode_is_given() {
        let mode = |url: &str, given: bool| {
            let options = PgConnectOptions::from_str(url).unwrap();
            format!("{:?}", without_loopback_tls(options, given).get_ssl_mode())
        };
        for loopback in ["postgres://u@127.0.0.1/x", "postgres://u@localhost:5433/x", "postgres://u@[::1]/x"] {
            assert_eq!(mode(loopback, false), "Disable", "{loopback}");
        }
        let remote = "postgres://u@db.internal/x";
        let default = format!("{:?}", PgConnectOptions::from_str(remote).unwrap().get_ssl_mode());
        assert_eq!(mode(remote, false), default);
        assert_eq!(mode("postgres://u@127.0.0.2/x?sslmode=require", true), "Require");
        // Through the setting: an explicit mode on loopback is kept.
        let url = Some("postgres://u@127.0.0.1/x?application_name=t&sslmode=verify-full".parse().unwrap());
        let parsed = parse_url("DATABASE_URL", url.as_ref()).unwrap();
        assert_eq!(format!("{:?}", parsed.get_ssl_mode()), "VerifyFull");
    }

    #[test]
    fn secrets_never_print() {
        let secret: Secret = "postgres://u:hunter2@db/x".parse().unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn a_bad_database_url_is_reported_without_echoing_it() {
        let config = DatabaseConfig {
            url: Some("mysql://u:hunter2@db".parse().unwrap()),
            ..DatabaseConfig::from_options(PgConnectOptions::new())
        };
        let config = DatabaseConfig { connect_options: None, ..config };
        let error = config.connect_options().unwrap_err().to_string();
        assert!(error.contains("DATABASE_URL") && !error.contains("hunter2"), "{error}");
    }

    #[test]
    fn a_statement_cache_of_zero_is_refused() {
        let mut config = DatabaseConfig::from_options(PgConnectOptions::new());
        assert!(config.validate().is_ok());
        config.statement_cache_capacity = 0;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("--db-statement-cache") && error.contains("PgBouncer >= 1.21"), "{error}");
    }

    #[test]
    fn otlp_endpoints_must_be_plain_http_urls() {
        let mut config = TelemetryConfig::json();
        assert!(config.validate().is_ok());
        config.otlp_endpoint = Some("http://127.0.0.1:4317".into());
        assert!(config.validate().is_ok());
        for bad in ["https://collector:4317", "collector:4317", "http://"] {
            config.otlp_endpoint = Some(bad.into());
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{bad}: {error}");
        }
    }

    #[test]
    fn serve_settings_are_validated() {
        let mut config = ServeConfig::ephemeral();
        assert!(config.validate().is_ok());
        config.max_in_flight = 0;
        assert!(config.validate().unwrap_err().to_string().contains("--max-in-flight"));
    }
}
