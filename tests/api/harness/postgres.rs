//! PostgreSQL for tests: `DATABASE_URL` when set, otherwise one private
//! cluster per test process. Every test gets a fresh database, dropped when
//! its [`TestDatabase`] is dropped, so tests run in parallel and leave
//! nothing behind.

use std::{path::PathBuf, str::FromStr};

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tenantry::db::embedded::EmbeddedPostgres;
use tokio::sync::OnceCell;

use super::watchdog;

/// How to reach the shared test server as a superuser.
struct Server {
    admin: PgConnectOptions,
    /// URL form, for child processes (`{db}` is replaced by the database).
    url_template: String,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                let admin = PgConnectOptions::from_str(&url).expect("DATABASE_URL is a postgres URL");
                let base = url.split('?').next().unwrap_or(&url);
                let base = base.rsplit_once('/').map_or(base, |(head, _)| head);
                return Server { admin, url_template: format!("{base}/{{db}}") };
            }
            let (cluster, _dir) = private_cluster("shared").await;
            let socket = cluster.data_dir().parent().unwrap().join("run");
            Server {
                admin: cluster.connect_options("postgres"),
                url_template: format!(
                    "postgres://{}@localhost/{{db}}?host={}",
                    tenantry::db::embedded::SUPERUSER,
                    socket.display()
                ),
            }
        })
        .await
}

/// Superuser options for the shared test server.
pub async fn admin_options() -> PgConnectOptions {
    server().await.admin.clone()
}

/// Starts a private cluster in a fresh directory that is cleaned up after
/// this process exits; returns it and its directory.
pub async fn private_cluster(label: &str) -> (EmbeddedPostgres, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "tenantry-{label}-{}-{}",
        std::process::id(),
        tenantry::ids::random_token(6)
    ));
    let cluster = EmbeddedPostgres::start(&dir).await.expect("start a private PostgreSQL cluster");
    watchdog::clean_up_after_exit(&cluster.data_dir().join("postmaster.pid"), &dir);
    (cluster, dir)
}

/// A database owned by one test.
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// Options to connect to it.
    pub options: PgConnectOptions,
    /// A URL to it, for child processes.
    pub url: String,
    admin: PgConnectOptions,
}

impl TestDatabase {
    /// Creates a fresh, empty database on the shared test server.
    pub async fn create() -> TestDatabase {
        let server = server().await;
        let name = format!("tenantry_test_{}", tenantry::ids::random_token(12).to_lowercase());
        let mut conn = PgConnection::connect_with(&server.admin).await.expect("connect to the test server");
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.expect("create test database");
        conn.close().await.ok();
        TestDatabase {
            options: server.admin.clone().database(&name),
            url: server.url_template.replace("{db}", &name),
            admin: server.admin.clone(),
            name,
        }
    }

    /// A database on a specific cluster (tests that stop their server).
    pub async fn on_cluster(cluster: &EmbeddedPostgres) -> TestDatabase {
        let name = "tenantry".to_owned();
        cluster.ensure_database(&name).await.expect("create database");
        TestDatabase {
            options: cluster.connect_options(&name),
            url: String::new(),
            admin: cluster.connect_options("postgres"),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs outside async; a short-lived runtime on its own thread
        // drops the database even when the test panicked.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect_with(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        drop(dropped);
    }
}
