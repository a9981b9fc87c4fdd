//! How a test server reaches PostgreSQL: straight, or through PgBouncer in
//! transaction pooling mode, and [`on_every_backend!`], which runs one test
//! function both ways.
//!
//! Through PgBouncer the server is configured as production would be behind
//! a transaction-mode pooler: its pool (`DATABASE_URL`) goes through
//! PgBouncer, and what needs a session, LISTEN and the platform migrations'
//! advisory lock, goes direct (`--database-listen-url`).

use tenantry::config::DatabaseConfig;

use super::{TestDatabase, pgbouncer};

/// The path from the server to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Straight to PostgreSQL.
    Direct,
    /// The pool through PgBouncer (transaction pooling); sessions direct.
    PgBouncer,
}

impl Backend {
    /// The server's database settings for `database`.
    pub async fn database_config(self, database: &TestDatabase) -> DatabaseConfig {
        let direct = database.options.clone();
        match self {
            Backend::Direct => DatabaseConfig::from_options(direct),
            Backend::PgBouncer => DatabaseConfig {
                listen_options: Some(direct),
                ..DatabaseConfig::from_options(pgbouncer::options(&database.name).await)
            },
        }
    }

    /// The environment a `tenantry` child process gets to reach `database`.
    pub async fn cli_env(self, database: &TestDatabase) -> Vec<(&'static str, String)> {
        match self {
            Backend::Direct => vec![("DATABASE_URL", database.url.clone())],
            Backend::PgBouncer => vec![
                ("DATABASE_URL", pgbouncer::url(&database.name).await),
                ("TENANTRY_DATABASE_LISTEN_URL", database.url.clone()),
            ],
        }
    }
}

/// Runs each named test function twice, as `<name>::direct` and
/// `<name>::via_pgbouncer`. The functions take the [`Backend`] to spawn with
/// and stay ordinary (formatted, linted) code; one left out of the list is
/// dead code, which clippy refuses.
///
/// ```text
/// on_every_backend!(a_suspended_tenant_is_refused_until_resumed);
///
/// async fn a_suspended_tenant_is_refused_until_resumed(backend: Backend) {
///     let app = TestApp::builder().backend(backend).spawn().await;
///     // …
/// }
/// ```
// benches/ include this harness without the tests that use the macro.
#[allow(unused_macros)]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {$(
        // A module beside the function of the same name (types and values
        // live in different namespaces), so the tests read `<name>::direct`.
        mod $test {
            #[tokio::test]
            async fn direct() {
                super::$test($crate::harness::Backend::Direct).await
            }

            #[tokio::test]
            async fn via_pgbouncer() {
                if !$crate::harness::pgbouncer::available() {
                    return;
                }
                super::$test($crate::harness::Backend::PgBouncer).await
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use on_every_backend;
