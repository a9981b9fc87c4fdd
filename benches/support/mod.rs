//! What the database benchmarks share: a scratch database on `DATABASE_URL`'s
//! server, or on a private PostgreSQL started here, migrated, and dropped
//! (with the private server stopped) by [`Scratch::finish`].

use std::{
    ops::Range,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions, postgres::PgPoolOptions};
use tenantry::{
    db::embedded::EmbeddedPostgres,
    tenancy::{
        TenantId,
        model::{NewTenant, Slug},
        store,
    },
};
use tokio::sync::Semaphore;

/// Provisions tenants `<prefix>-<i>` for every `i` in `range` (schemas
/// included, as CreateTenant does), `concurrency` at a time.
#[allow(dead_code)] // not every benchmark that includes this module provisions
pub async fn provision_many(pool: &PgPool, range: Range<usize>, prefix: &str, concurrency: usize) -> Vec<TenantId> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let tasks: Vec<_> = range
        .map(|i| {
            let (pool, permits, slug) = (pool.clone(), permits.clone(), format!("{prefix}-{i}"));
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.unwrap();
                let new = NewTenant {
                    slug: Slug::parse(&slug).unwrap(),
                    display_name: slug.clone(),
                    plan_id: "free".into(),
                    labels: Default::default(),
                };
                let deadline = Instant::now() + Duration::from_secs(120);
                let (tenant, tx) = store::provision(pool.begin().await.unwrap(), &new, deadline).await.unwrap();
                tx.commit().await.unwrap();
                tenant.id
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(tasks.len());
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids
}

/// A migrated database of its own for one benchmark run.
pub struct Scratch {
    /// A pool of 16 on the scratch database.
    pub pool: PgPool,
    name: String,
    admin: PgConnection,
    cluster: Option<EmbeddedPostgres>,
    _dir: Option<tempfile::TempDir>,
}

impl Scratch {
    /// Creates and migrates the database.
    pub async fn create() -> Scratch {
        let (options, cluster, dir) = match std::env::var("DATABASE_URL") {
            Ok(url) => (PgConnectOptions::from_str(&url).unwrap(), None, None),
            Err(_) => {
                let dir = tempfile::Builder::new().prefix("tenantry-bench").tempdir_in("/tmp").unwrap();
                std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
                let cluster = EmbeddedPostgres::start(dir.path()).await.unwrap();
                (cluster.connect_options("postgres"), Some(cluster), Some(dir))
            }
        };
        let name = format!("tenantry_bench_{}", tenantry::ids::random_token(8).to_lowercase());
        let mut admin = PgConnection::connect_with(&options).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.unwrap();
        let pool = PgPoolOptions::new().max_connections(16).connect_with(options.database(&name)).await.unwrap();
        tenantry::db::migrate(&pool).await.unwrap();
        Scratch { pool, name, admin, cluster, _dir: dir }
    }

    /// A URL to the scratch database, for a `tenantry` child process.
    #[allow(dead_code)] // only the node memory benchmark starts a server
    pub fn url(&self) -> String {
        match (&self.cluster, std::env::var("DATABASE_URL")) {
            (Some(cluster), _) => format!(
                "postgres://{}@localhost/{}?host={}",
                tenantry::db::embedded::SUPERUSER,
                self.name,
                cluster.data_dir().parent().expect("the cluster's directory").join("run").display()
            ),
            (None, Ok(url)) => {
                let (base, query) = url.split_once('?').map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
                let server = base.rsplit_once('/').map_or(base, |(head, _)| head);
                match query {
                    Some(query) => format!("{server}/{}?{query}", self.name),
                    None => format!("{server}/{}", self.name),
                }
            }
            (None, Err(_)) => unreachable!("without DATABASE_URL the scratch database is on a private cluster"),
        }
    }

    /// The scratch database's name.
    #[allow(dead_code)] // only the migrations benchmark keeps its database
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database and stops the private server, if one was started.
    pub async fn finish(mut self) {
        self.pool.close().await;
        sqlx::query(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name)).execute(&mut self.admin).await.unwrap();
        if let Some(cluster) = self.cluster.take() {
            cluster.stop().await.unwrap();
        }
    }
}
