//! Tenant schemas: creating one, and applying `migrations/tenant/` inside
//! each schema, tracked in that schema's own `schema_migrations` table.
//!
//! Each schema is upgraded in one transaction (all pending migrations or
//! none), so a run that stops half-way is resumed by running it again, and a
//! run with nothing pending only reads.

use std::{collections::HashMap, time::Instant};

use sqlx::{Executor, PgConnection, migrate::Migrator};

use super::{TenancyError, TenantId};

/// The tenant migrations, embedded in the binary.
pub static TENANT_MIGRATOR: Migrator = sqlx::migrate!("./migrations/tenant");

/// The newest tenant migration version this build knows.
pub fn latest_version() -> i64 {
    TENANT_MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Creates the tenant's schema; call inside the provisioning transaction.
pub async fn create_schema(conn: &mut PgConnection, tenant: &TenantId) -> Result<(), TenancyError> {
    sqlx::query(&format!("CREATE SCHEMA \"{}\"", tenant.schema())).execute(conn).await?;
    Ok(())
}

/// Applies pending tenant migrations on a connection already scoped to the
/// tenant's schema (a [`super::TenantTx`]); returns how many were applied.
pub async fn apply_pending(conn: &mut PgConnection) -> Result<usize, TenancyError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version bigint PRIMARY KEY,
             description text NOT NULL,
             checksum bytea NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *conn)
    .await?;
    // Two migrators on one schema take turns; the second finds nothing to do.
    sqlx::query("LOCK TABLE schema_migrations IN EXCLUSIVE MODE").execute(&mut *conn).await?;
    let applied: HashMap<i64, Vec<u8>> =
        sqlx::query_as::<_, (i64, Vec<u8>)>("SELECT version, checksum FROM schema_migrations")
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let mut pending = Vec::new();
    for migration in TENANT_MIGRATOR.iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        match applied.get(&migration.version) {
            Some(checksum) if checksum.as_slice() == migration.checksum.as_ref() => {}
            Some(_) => return Err(TenancyError::MigrationChanged(migration.version)),
            None => pending.push(migration),
        }
    }
    let count = pending.len();
    for migration in pending {
        // Through the connection's executor: `RawSql::execute` is generic in
        // a way that keeps the caller's future from being `Send`.
        conn.execute(sqlx::raw_sql(&migration.sql)).await?;
        sqlx::query("INSERT INTO schema_migrations (version, description, checksum) VALUES ($1, $2, $3)")
            .bind(migration.version)
            .bind(&*migration.description)
            .bind(migration.checksum.as_ref())
            .execute(&mut *conn)
            .await?;
    }
    Ok(count)
}

/// Upgrades one tenant's schema in its own transaction.
pub async fn migrate_tenant(pool: &sqlx::PgPool, tenant: &TenantId) -> Result<usize, TenancyError> {
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    let mut tx = super::TenantTx::begin(pool, tenant, deadline).await?;
    let applied = apply_pending(&mut tx).await?;
    tx.commit().await?;
    Ok(applied)
}
