//! Tenant schemas: creating one, and applying `migrations/tenant/` inside
//! each schema, up or down, tracked in that schema's own `schema_migrations`
//! table and recorded in the platform ledger
//! (`platform.tenant_schema_versions`) in the same transaction.
//!
//! Each schema moves in one transaction (all its pending migrations or none),
//! so a run that stops half-way is resumed by running it again, and a run
//! with nothing to do only reads.

use std::{collections::HashMap, time::Instant};

use sqlx::{Executor, PgConnection, Row, migrate::Migrator};

use super::{TenancyError, TenantId, TenantTx};

/// The tenant migrations (up and down halves), embedded in the binary.
pub static TENANT_MIGRATOR: Migrator = sqlx::migrate!("./migrations/tenant");

/// The newest tenant migration version this build knows.
pub fn latest_version() -> i64 {
    TENANT_MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// How many tenant migrations (up halves) this build knows.
pub fn migration_count() -> i64 {
    TENANT_MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()).count() as i64
}

/// Creates the tenant's schema; call inside the provisioning transaction.
pub async fn create_schema(conn: &mut PgConnection, tenant: &TenantId) -> Result<(), TenancyError> {
    sqlx::query(&format!("CREATE SCHEMA \"{}\"", tenant.schema())).execute(conn).await?;
    Ok(())
}

// Round trips dominate a run over thousands of schemas, so each schema
// takes four (begin, scope, this, commit) when nothing is pending and five
// otherwise: the statements go as one simple-protocol batch, with values
// that are numbers, hex, checked ids or quoted descriptions.

/// Creates (if needed) and locks the schema's `schema_migrations`, records
/// its current version in the ledger (a no-op when unchanged), and reads the
/// versions applied with their checksums (hex).
async fn applied_versions(tx: &mut TenantTx, prelude: &str) -> Result<HashMap<i64, String>, TenancyError> {
    let setup = format!(
        "{prelude}
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version bigint PRIMARY KEY,
             description text NOT NULL,
             checksum bytea NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         -- Two migrators on one schema take turns; the second finds nothing to do.
         LOCK TABLE schema_migrations IN EXCLUSIVE MODE;
         {record}
         SELECT version, encode(checksum, 'hex') FROM schema_migrations;",
        record = record(tx.tenant())
    );
    let conn: &mut PgConnection = tx;
    let rows = conn.fetch_all(sqlx::raw_sql(&setup)).await?;
    let mut applied = HashMap::with_capacity(rows.len());
    for row in rows {
        applied.insert(row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?);
    }
    Ok(applied)
}

/// The statement that writes the schema's version into the platform ledger,
/// in the schema's own transaction; an unchanged version writes nothing.
fn record(tenant: &TenantId) -> String {
    // The id is checked (`ten_[0-9a-z]{24}`), safe as a literal.
    format!(
        "INSERT INTO platform.tenant_schema_versions (tenant_id, version, migrations)
         SELECT '{tenant}', COALESCE(max(version), 0), count(*) FROM schema_migrations
         ON CONFLICT (tenant_id) DO UPDATE
         SET version = EXCLUDED.version, migrations = EXCLUDED.migrations, updated_at = now()
         WHERE (tenant_schema_versions.version, tenant_schema_versions.migrations)
               <> (EXCLUDED.version, EXCLUDED.migrations);",
        tenant = tenant.as_str()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `steps` (migration SQL and bookkeeping) and the ledger record as one
/// batch in the schema's transaction.
async fn run_batch(tx: &mut TenantTx, steps: Vec<String>) -> Result<(), TenancyError> {
    if steps.is_empty() {
        return Ok(());
    }
    // A migration may end in a comment: every part gets its own lines.
    let batch = format!("{}\n;\n{}", steps.join("\n;\n"), record(tx.tenant()));
    // Through the connection's executor: `RawSql::execute` is generic in a
    // way that keeps the caller's future from being `Send`.
    let conn: &mut PgConnection = tx;
    conn.execute(sqlx::raw_sql(&batch)).await?;
    Ok(())
}

/// Applies pending tenant migrations on a transaction scoped to the tenant's
/// schema and records the new version in the ledger; returns how many were
/// applied.
pub async fn apply_pending(tx: &mut TenantTx) -> Result<usize, TenancyError> {
    apply_pending_after(tx, "").await
}

/// [`apply_pending`], with `prelude` (settings) run first in the same batch.
async fn apply_pending_after(tx: &mut TenantTx, prelude: &str) -> Result<usize, TenancyError> {
    let applied = applied_versions(tx, prelude).await?;
    let mut steps = Vec::new();
    for migration in TENANT_MIGRATOR.iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        match applied.get(&migration.version) {
            Some(checksum) if *checksum == hex(&migration.checksum) => {}
            Some(_) => return Err(TenancyError::MigrationChanged(migration.version)),
            None => {
                steps.push(migration.sql.to_string());
                steps.push(format!(
                    "INSERT INTO schema_migrations (version, description, checksum) VALUES ({}, '{}', decode('{}', 'hex'))",
                    migration.version,
                    migration.description.replace('\'', "''"),
                    hex(&migration.checksum)
                ));
            }
        }
    }
    let count = steps.len() / 2;
    run_batch(tx, steps).await?;
    Ok(count)
}

/// Reverts the applied tenant migrations newer than `target`, newest first,
/// with their down halves, and records the new version in the ledger;
/// returns how many were reverted. Refuses (changing nothing) when one of
/// them was changed after it was applied or has no down half in this build.
pub async fn revert_to(tx: &mut TenantTx, target: i64) -> Result<usize, TenancyError> {
    revert_to_after(tx, target, "").await
}

/// [`revert_to`], with `prelude` (settings) run first in the same batch.
async fn revert_to_after(tx: &mut TenantTx, target: i64, prelude: &str) -> Result<usize, TenancyError> {
    let applied = applied_versions(tx, prelude).await?;
    let mut newer: Vec<(&i64, &String)> = applied.iter().filter(|(version, _)| **version > target).collect();
    newer.sort_by(|a, b| b.0.cmp(a.0));
    let mut steps = Vec::new();
    for (version, checksum) in newer {
        let up = TENANT_MIGRATOR.iter().find(|m| m.version == *version && !m.migration_type.is_down_migration());
        let down = TENANT_MIGRATOR.iter().find(|m| m.version == *version && m.migration_type.is_down_migration());
        match (up, down) {
            (Some(up), _) if hex(&up.checksum) != *checksum => return Err(TenancyError::MigrationChanged(*version)),
            (Some(_), Some(down)) => {
                steps.push(down.sql.to_string());
                steps.push(format!("DELETE FROM schema_migrations WHERE version = {version}"));
            }
            _ => return Err(TenancyError::MigrationIrreversible(*version)),
        }
    }
    let count = steps.len() / 2;
    run_batch(tx, steps).await?;
    Ok(count)
}

/// Where a tenant schema should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Apply every pending migration.
    Up,
    /// Revert every migration newer than this version (0: all).
    DownTo(i64),
}

/// Moves one tenant's schema up or down in its own transaction; returns how
/// many migrations were applied or reverted.
pub async fn migrate_tenant(
    pool: &sqlx::PgPool,
    tenant: &TenantId,
    direction: Direction,
) -> Result<usize, TenancyError> {
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    let mut tx = TenantTx::begin(pool, tenant, deadline).await?;
    // A run over many schemas need not wait for each commit's WAL flush: a
    // crash can lose only whole schema transactions (the schema's records and
    // its ledger row go together), and the next run redoes them. Provisioning
    // keeps the default: its caller is told the tenant exists.
    let prelude = "SET LOCAL synchronous_commit = off;";
    let changed = match direction {
        Direction::Up => apply_pending_after(&mut tx, prelude).await?,
        Direction::DownTo(target) => revert_to_after(&mut tx, target, prelude).await?,
    };
    tx.commit().await?;
    Ok(changed)
}
