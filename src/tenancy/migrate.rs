//! `tenantry migrate` and `tenantry migrate down --tenant` over tenant
//! schemas: moves every tenant schema up (or down to a version) with bounded
//! concurrency, reports progress (a bar on a terminal, log events through
//! `tracing` otherwise, so JSON logs stay JSON) and per-schema failures without stopping the rest. Each schema moves in
//! its own transaction, so a run is resumable and idempotent. `--status`
//! reads the ledger (`platform.tenant_schema_versions`), not every schema.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio::{sync::Semaphore, task::JoinSet};

use super::{
    TenancyError, TenantId,
    schema::{self, Direction},
};

/// The outcome of a run over every tenant schema.
#[derive(Debug, Default)]
pub struct MigrationReport {
    /// Tenant schemas in all.
    pub schemas: usize,
    /// Schemas visited (the others were already there, by the ledger).
    pub visited: usize,
    /// Schemas that had migrations to apply (or revert) and did.
    pub upgraded: usize,
    /// Migrations applied (or reverted) in total.
    pub applied: usize,
    /// Schemas that failed, with the reason (the rest carried on).
    pub failed: Vec<(TenantId, String)>,
    /// How long the run took.
    pub elapsed: Duration,
}

/// Tenants whose schema exists (live, suspended, or deleted but not purged).
pub async fn tenants_with_schema(pool: &PgPool) -> Result<Vec<TenantId>, TenancyError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT t.id FROM platform.tenants t
         JOIN pg_namespace n ON n.nspname = 't_' || t.id
         ORDER BY t.created_at, t.id",
    )
    .fetch_all(pool)
    .await?;
    ids.iter().map(|id| TenantId::parse(id).ok_or_else(|| TenancyError::CorruptState(id.clone()))).collect()
}

/// The tenants whose schema the ledger shows not yet where `direction`
/// leads (or does not know), and how many schemas there are in all.
async fn tenants_to_visit(pool: &PgPool, direction: Direction) -> Result<(Vec<TenantId>, usize), TenancyError> {
    let rows: Vec<(String, Option<i64>, Option<i32>)> = sqlx::query_as(
        "SELECT t.id, l.version, l.migrations FROM platform.tenants t
         JOIN pg_namespace n ON n.nspname = 't_' || t.id
         LEFT JOIN platform.tenant_schema_versions l ON l.tenant_id = t.id
         ORDER BY t.created_at, t.id",
    )
    .fetch_all(pool)
    .await?;
    let total = rows.len();
    let (latest, count) = (schema::latest_version(), schema::migration_count());
    let mut visit = Vec::new();
    for (id, version, migrations) in rows {
        let done = match (direction, version, migrations) {
            (Direction::Up, Some(version), Some(migrations)) => version == latest && i64::from(migrations) == count,
            (Direction::DownTo(target), Some(version), Some(_)) => version <= target,
            _ => false,
        };
        if !done {
            visit.push(TenantId::parse(&id).ok_or(TenancyError::CorruptState(id))?);
        }
    }
    Ok((visit, total))
}

/// Upgrades every tenant schema the ledger shows behind, at most
/// `concurrency` at once.
pub async fn migrate_all(pool: &PgPool, concurrency: usize) -> Result<MigrationReport, TenancyError> {
    run_all(pool, concurrency, Direction::Up, false).await
}

/// Moves tenant schemas in `direction`, at most `concurrency` at once: the
/// ones the ledger shows not there yet, or with `every_schema` all of them
/// (which also rechecks the checksums of what each one applied).
pub async fn run_all(
    pool: &PgPool,
    concurrency: usize,
    direction: Direction,
    every_schema: bool,
) -> Result<MigrationReport, TenancyError> {
    let started = Instant::now();
    let (tenants, total) = if every_schema {
        let all = tenants_with_schema(pool).await?;
        let total = all.len();
        (all, total)
    } else {
        tenants_to_visit(pool, direction).await?
    };
    let mut report = MigrationReport { schemas: total, visited: tenants.len(), ..MigrationReport::default() };
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for tenant in tenants {
        let (pool, permits) = (pool.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = schema::migrate_tenant(&pool, &tenant, direction).await;
            (tenant, result)
        });
    }
    let mut progress = Progress::new(report.visited);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(0))) => {}
            Ok((_, Ok(changed))) => {
                report.upgraded += 1;
                report.applied += changed;
            }
            Ok((tenant, Err(error))) => {
                let reason = with_causes(&error);
                progress.failure(&tenant, &reason);
                report.failed.push((tenant, reason));
            }
            Err(join_error) => {
                return Err(TenancyError::CorruptState(format!("migration task failed: {join_error}")));
            }
        }
        progress.step(report.failed.len());
    }
    progress.finish();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// An error with its sources, so an operator sees the SQL error behind
/// "tenant store unavailable".
fn with_causes(error: &TenancyError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How many tenant schemas are at each version, and which lag behind.
#[derive(Debug, Default)]
pub struct MigrationStatus {
    /// The newest version this build knows.
    pub latest: i64,
    /// Schemas per version (0: no migrations applied yet).
    pub per_version: BTreeMap<i64, usize>,
    /// Tenants below the latest version.
    pub lagging: Vec<(TenantId, i64)>,
    /// Schemas with no ledger row yet (made before the ledger, or by an older
    /// build), whose version was read from the schema itself.
    pub unrecorded: usize,
}

/// Every tenant schema's version, from the ledger; schemas missing from it
/// are read directly.
pub async fn status(pool: &PgPool) -> Result<MigrationStatus, TenancyError> {
    let latest = schema::latest_version();
    let mut status = MigrationStatus { latest, ..MigrationStatus::default() };
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT t.id, l.version FROM platform.tenants t
         JOIN pg_namespace n ON n.nspname = 't_' || t.id
         LEFT JOIN platform.tenant_schema_versions l ON l.tenant_id = t.id
         ORDER BY t.created_at, t.id",
    )
    .fetch_all(pool)
    .await?;
    let mut unrecorded = Vec::new();
    let mut versions = Vec::with_capacity(rows.len());
    for (id, version) in rows {
        let tenant = TenantId::parse(&id).ok_or(TenancyError::CorruptState(id))?;
        match version {
            Some(version) => versions.push((tenant, version)),
            None => unrecorded.push(tenant),
        }
    }
    status.unrecorded = unrecorded.len();
    versions.extend(read_schemas(pool, unrecorded).await?);
    for (tenant, version) in versions {
        *status.per_version.entry(version).or_default() += 1;
        if version < latest {
            status.lagging.push((tenant, version));
        }
    }
    Ok(status)
}

/// Reads the versions of schemas the ledger lacks, in batches of union
/// queries (the only way before the ledger; now only for the few stragglers).
async fn read_schemas(pool: &PgPool, tenants: Vec<TenantId>) -> Result<Vec<(TenantId, i64)>, TenancyError> {
    let mut versions = Vec::with_capacity(tenants.len());
    for chunk in tenants.chunks(200) {
        // Schema names come from checked ids and are quoted.
        let union = chunk
            .iter()
            .map(|t| {
                format!(
                    "SELECT '{id}'::text AS id, COALESCE((SELECT max(version) FROM \"{schema}\".schema_migrations), 0) AS version",
                    id = t.as_str(),
                    schema = t.schema()
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        // One simple-protocol message: no prepared statement to lose between
        // round trips behind a transaction-mode pooler.
        let rows = sqlx::raw_sql(&union).fetch_all(pool).await?;
        for row in rows {
            use sqlx::Row;
            let (id, version): (String, i64) = (row.try_get("id")?, row.try_get("version")?);
            versions.push((TenantId::parse(&id).ok_or(TenancyError::CorruptState(id))?, version));
        }
    }
    Ok(versions)
}

/// Progress: a redrawn bar on stderr when it is a terminal and the logs are
/// readable text; otherwise an `info` event per 10% (with `done`, `total`
/// and `failed` fields), so a JSON log stream carries no stray text.
struct Progress {
    total: usize,
    done: usize,
    bar: bool,
    last_decile: usize,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = std::io::stderr().is_terminal() && !crate::telemetry::logs_are_json();
        Progress { total, done: 0, bar, last_decile: 0 }
    }

    fn step(&mut self, failed: usize) {
        self.done += 1;
        let (done, total) = (self.done, self.total);
        if self.bar {
            let width = 30;
            let filled = (done * width).checked_div(total).unwrap_or(width);
            let bar = format!("{}{}", "#".repeat(filled), " ".repeat(width - filled));
            drop(write!(std::io::stderr().lock(), "\r  tenant schemas [{bar}] {done}/{total} ({failed} failed)"));
        } else {
            let decile = (done * 10).checked_div(total).unwrap_or(10);
            if decile > self.last_decile {
                self.last_decile = decile;
                tracing::info!(done, total, failed, "tenant schemas migrating");
            }
        }
    }

    fn failure(&self, tenant: &TenantId, error: &str) {
        if self.bar {
            drop(writeln!(std::io::stderr()));
        }
        tracing::warn!(tenant = %tenant, error, "tenant schema migration failed");
    }

    fn finish(&self) {
        if self.bar && self.total > 0 {
            drop(writeln!(std::io::stderr()));
        }
    }
}
