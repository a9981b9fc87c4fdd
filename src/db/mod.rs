//! PostgreSQL: the connection pool, the embedded platform migrations, and
//! the start-up check that refuses to serve on a schema that is behind.
//!
//! # Layout
//!
//! - this file: [`connect`], [`migrate`], [`check_migrations`], [`ping`].
//! - [`acquire`]: a pool connection or transaction, with the wait bounded and
//!   recorded in the pool metrics.
//! - [`embedded`]: the private cluster `serve --dev` and the tests start.
//! - [`notify`]: the LISTEN task behind every cache invalidated across nodes.

pub mod acquire;
pub mod embedded;
pub mod notify;

use std::{collections::HashMap, time::Duration};

use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};

use crate::config::{ConfigError, DatabaseConfig};

/// The platform schema's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/platform");

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot reach PostgreSQL: {0}")]
    Unreachable(#[source] sqlx::Error),
    #[error(
        "the database schema is behind this build ({pending} pending migration(s), first {first}); run `tenantry migrate` or start with --migrate"
    )]
    Behind { pending: usize, first: i64 },
    #[error("migration {version} failed part-way earlier; fix it by hand, then run `tenantry migrate`")]
    Dirty { version: i64 },
    #[error("migration {version} was changed after it was applied; the database and this build disagree")]
    Changed { version: i64 },
    #[error("migrating failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

tokio::task_local! {
    /// Set when the current call takes a connection from the pool.
    static USED: std::cell::Cell<bool>;
}

/// Runs `call`, reporting whether it took a connection from a pool opened by
/// [`connect`] (admission control gates the methods that do). Work the call
/// spawns onto other tasks is not seen.
pub async fn tracking_use<F: Future>(call: F) -> (F::Output, bool) {
    USED.scope(std::cell::Cell::new(false), async {
        let output = call.await;
        (output, USED.with(std::cell::Cell::get))
    })
    .await
}

/// Begins a transaction on `connection` (with `statement` instead of
/// `BEGIN` when given), safe to cancel. sqlx's begin is not: dropped after
/// sending `BEGIN` but before its answer, it returns the connection to the
/// pool inside a transaction sqlx does not know about (its rollback guard
/// acts only once the transaction was counted), and the next borrower's
/// statements run in it: a tenant's `search_path` seen by the next call, a
/// platform write rolled back with someone else's transaction. So the
/// begin runs in a task of its own and always finishes; if the caller went
/// away, the finished transaction is dropped there, which rolls it back.
pub async fn begin_on(
    connection: sqlx::pool::PoolConnection<sqlx::Postgres>,
    statement: Option<String>,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let begin = sqlx::Transaction::begin(connection, statement.map(Into::into));
    tokio::spawn(tracing::Instrument::in_current_span(begin)).await.map_err(|_| sqlx::Error::WorkerCrashed)?
}

/// `pool.begin()`, safe to cancel (see [`begin_on`]).
pub async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    begin_on(pool.acquire().await?, None).await
}

fn note_use() {
    // Outside a tracked call (background tasks) there is nothing to note.
    let _ = USED.try_with(|used| used.set(true));
}

/// Opens the pool and proves the server answers, failing fast otherwise.
///
/// Connections are not pinged before each use, as sqlx does by default:
/// that is a round trip per call, and a connection that died (PostgreSQL
/// restarted) fails its one call as UNAVAILABLE, which clients retry, and is
/// then replaced. Each use is noted for [`tracking_use`].
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, DbError> {
    config.validate()?;
    let options = config.connect_options()?;
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|_, _| {
            note_use();
            Box::pin(std::future::ready(Ok(true)))
        })
        .after_connect(|_, _| {
            note_use();
            Box::pin(std::future::ready(Ok(())))
        })
        .max_lifetime(Some(config.max_lifetime))
        .idle_timeout(Some(config.idle_timeout))
        .connect_with(options)
        .await
        .map_err(DbError::Unreachable)
}

/// Applies pending platform migrations (idempotent; concurrent runs wait on
/// sqlx's advisory lock).
///
/// That lock is session-level: pass a pool of direct sessions
/// ([`listen_pool`]), never one behind a transaction-mode pooler, where the
/// lock and the unlock can land on different server connections and the lock
/// then outlives the run, blocking every later migrator.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Reverts applied platform migrations newer than `target`, newest first,
/// each with its down migration in its own transaction (0: all of them).
/// Pass a pool of direct sessions, as for [`migrate`].
pub async fn migrate_down(pool: &PgPool, target: i64) -> Result<(), DbError> {
    MIGRATOR.undo(pool, target).await?;
    Ok(())
}

/// The platform migrations applied to the database, newest last.
pub async fn applied_platform_versions(pool: &PgPool) -> Result<Vec<i64>, DbError> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations')::text").fetch_one(pool).await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version").fetch_all(pool).await?)
}

#[derive(sqlx::FromRow)]
struct Applied {
    version: i64,
    checksum: Vec<u8>,
    success: bool,
}

/// Fails unless every embedded migration is applied, cleanly and unchanged.
pub async fn check_migrations(pool: &PgPool) -> Result<(), DbError> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations')::text").fetch_one(pool).await?;
    let applied: HashMap<i64, Applied> = if exists.is_some() {
        sqlx::query_as::<_, Applied>("SELECT version, checksum, success FROM _sqlx_migrations")
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|row| (row.version, row))
            .collect()
    } else {
        HashMap::new()
    };
    let mut pending =
        MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()).filter(|m| !applied.contains_key(&m.version));
    if let Some(first) = pending.next() {
        return Err(DbError::Behind { pending: 1 + pending.count(), first: first.version });
    }
    // A reversible migration's down half shares its version: compare the up half only.
    for migration in MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()) {
        if let Some(row) = applied.get(&migration.version) {
            if !row.success {
                return Err(DbError::Dirty { version: row.version });
            }
            if row.checksum != migration.checksum.as_ref() {
                return Err(DbError::Changed { version: row.version });
            }
        }
    }
    Ok(())
}

/// A small pool of session connections for what needs a session (LISTEN/NOTIFY,
/// the platform migrations' advisory lock), connected lazily: direct to
/// PostgreSQL even when the main pool goes through a pooler.
pub fn listen_pool(config: &DatabaseConfig) -> Result<PgPool, DbError> {
    let options = config.listen_options()?;
    Ok(PgPoolOptions::new().max_connections(4).acquire_timeout(config.acquire_timeout).connect_lazy_with(options))
}

/// Whether PostgreSQL answers a trivial query within `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await, Ok(Ok(_)))
}
