//! The test harness: [`TestApp::builder`] starts the real server on port 0
//! against a fresh database (and real Redis), straight or through PgBouncer
//! ([`Backend`]), and hands back typed clients.

pub mod backend;
pub mod identity;
pub mod pgbouncer;
pub mod postgres;
pub mod redis;
pub mod redis_cluster;
pub mod tenants;
pub mod watchdog;

use std::{net::SocketAddr, time::Duration};

use tenantry::{
    auth::api_key::AdminKeys,
    config::{AppConfig, DatabaseConfig, Role, ServeConfig, defaults},
    jobs::worker::WorkerConfig,
    proto::tenantry::v1::{
        auth_service_client::AuthServiceClient, tenant_service_client::TenantServiceClient,
        usage_service_client::UsageServiceClient,
    },
    startup::App,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{
    Request,
    metadata::{AsciiMetadataValue, MetadataMap},
    transport::Channel,
};
use tonic_health::pb::health_client::HealthClient;

#[allow(unused_imports)] // used by the tests, not by benches/, which include this harness
pub(crate) use self::backend::on_every_backend;
pub use self::{backend::Backend, postgres::TestDatabase};

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    /// The HTTP address.
    pub http_addr: SocketAddr,
    /// A platform-admin API key.
    pub admin_key: String,
    /// A channel to the gRPC listener.
    pub channel: Channel,
    /// The database pool the server uses (for arranging state directly).
    pub pool: sqlx::PgPool,
    /// How the server reaches its database (a second node reuses it).
    database: DatabaseConfig,
    /// The environment a `tenantry` child process needs to reach the database.
    cli_env: Vec<(&'static str, String)>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<Result<(), tenantry::startup::StartupError>>>,
    /// Dropped last, so the database outlives the server (`None` for a
    /// second node on another test's database).
    _database: Option<TestDatabase>,
}

/// How a test wants its server: built by [`TestApp::builder`], started by
/// [`TestAppBuilder::spawn`]. Defaults: a fresh database straight to
/// PostgreSQL, real Redis, both ports chosen by the OS, a known signing key,
/// the built-in workers on.
pub struct TestAppBuilder {
    backend: Backend,
    database: Option<TestDatabase>,
    /// Another node's way to its database (a second node), instead of a fresh one.
    joining: Option<(DatabaseConfig, Vec<(&'static str, String)>)>,
    serve: ServeConfig,
    workers: WorkerConfig,
}

impl TestApp {
    /// The one way tests start a server.
    pub fn builder() -> TestAppBuilder {
        let mut serve = ServeConfig::ephemeral();
        serve.health_interval = Duration::from_millis(200);
        serve.drain_timeout = Duration::from_secs(5);
        // A known signing key, so tests can log in and also forge tokens.
        serve.identity.jwt_private_key = Some(identity::signing_key().private_pem.clone().into());
        TestAppBuilder { backend: Backend::Direct, database: None, joining: None, serve, workers: defaults() }
    }

    /// Another server ("node") on this app's database, reaching it the same way.
    pub fn second_node(&self) -> TestAppBuilder {
        TestAppBuilder { joining: Some((self.database.clone(), self.cli_env.clone())), ..TestApp::builder() }
    }
}

impl TestAppBuilder {
    /// Reaches PostgreSQL through `backend` (straight, or through PgBouncer).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Runs on `database` instead of a fresh one.
    pub fn database(mut self, database: TestDatabase) -> Self {
        self.database = Some(database);
        self
    }

    /// Adjusts the server settings.
    pub fn configure(mut self, configure: impl FnOnce(&mut ServeConfig)) -> Self {
        configure(&mut self.serve);
        self
    }

    /// Adjusts the built-in workers' settings.
    pub fn workers(mut self, configure: impl FnOnce(&mut WorkerConfig)) -> Self {
        configure(&mut self.workers);
        self
    }

    /// Builds and starts the server, creates a platform-admin key and
    /// connects a channel.
    pub async fn spawn(mut self) -> TestApp {
        if self.serve.redis_url.is_none() {
            self.serve.redis_url = Some(redis::url().await.to_owned().into());
        }
        let (database, cli_env, owned) = match self.joining.take() {
            Some((database, cli_env)) => (database, cli_env, None),
            None => {
                let owned = match self.database.take() {
                    Some(database) => database,
                    None => TestDatabase::create().await,
                };
                let config = self.backend.database_config(&owned).await;
                (config, self.backend.cli_env(&owned).await, Some(owned))
            }
        };
        let config =
            AppConfig { role: Role::Api, serve: self.serve, database: database.clone(), workers: self.workers };
        let app = App::build(config).await.expect("the server builds");
        let grpc_addr = app.grpc_addr().expect("the API role listens for gRPC");
        let (http_addr, pool) = (app.http_addr(), app.pool().clone());
        let (_, admin_key) = AdminKeys::new(pool.clone()).create("test").await.expect("create admin key");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to the server");
        TestApp {
            http_addr,
            admin_key,
            channel,
            pool,
            database,
            cli_env,
            shutdown,
            server: Some(server),
            _database: owned,
        }
    }
}

impl TestApp {
    /// A tenant-service client.
    pub fn tenants(&self) -> TenantServiceClient<Channel> {
        TenantServiceClient::new(self.channel.clone())
    }
    /// An auth-service client.
    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }
    /// A usage-service client.
    pub fn usage(&self) -> UsageServiceClient<Channel> {
        UsageServiceClient::new(self.channel.clone())
    }
    /// A health client.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// Calls `path` with an empty message and `metadata`; the stack answers
    /// before the message is decoded. An OK answer comes back as `Code::Ok`.
    pub async fn call_raw(&self, path: &str, metadata: &[(&'static str, &str)]) -> tonic::Status {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::try_from(path).unwrap();
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        match grpc.unary(with_metadata((), metadata), path, codec).await {
            Ok(_) => tonic::Status::ok(""),
            Err(status) => status,
        }
    }

    /// `message` with the platform-admin key as a bearer token.
    pub fn as_admin<T>(&self, message: T) -> Request<T> {
        with_metadata(message, &[("authorization", &format!("Bearer {}", self.admin_key))])
    }

    /// The environment a `tenantry` child process needs to reach this app's
    /// database the way the app does (`DATABASE_URL`, and through PgBouncer
    /// the direct `TENANTRY_DATABASE_LISTEN_URL`).
    pub fn cli_env(&self) -> &[(&'static str, String)] {
        assert!(!self.cli_env.is_empty(), "the app owns its database");
        &self.cli_env
    }

    /// `message` as the platform admin acting in `tenant` (id or slug).
    pub fn as_admin_in<T>(&self, tenant: &str, message: T) -> Request<T> {
        let bearer = format!("Bearer {}", self.admin_key);
        with_metadata(message, &[("authorization", &bearer), ("x-tenant-id", tenant)])
    }

    /// A GET on the HTTP listener; returns status and body.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http_addr, path).await
    }

    /// Cancels the server and waits for it to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stops cleanly");
        }
    }
}

impl TestApp {
    /// Stops the server gracefully and hands back its database, so a test
    /// can inspect what the server left behind or start another on it.
    pub async fn stop_keeping_database(mut self) -> TestDatabase {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stops cleanly");
        }
        self._database.take().expect("this node owns its database")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `message` with the given metadata.
pub fn with_metadata<T>(message: T, pairs: &[(&'static str, &str)]) -> Request<T> {
    let mut request = Request::new(message);
    set_metadata(request.metadata_mut(), pairs);
    request
}

fn set_metadata(metadata: &mut MetadataMap, pairs: &[(&'static str, &str)]) {
    for (name, value) in pairs {
        metadata.insert(*name, AsciiMetadataValue::try_from(*value).expect("ascii metadata"));
    }
}

/// A minimal HTTP/1.1 GET over a raw socket: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect http");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read response");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
