//! `tenantry migrate` for tenant schemas: upgrades every tenant schema with
//! bounded concurrency, reports progress (a bar on a terminal, plain lines
//! otherwise) and per-schema failures without stopping the rest. Each schema
//! upgrades in its own transaction, so the run is resumable and idempotent.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio::{sync::Semaphore, task::JoinSet};

use super::{TenancyError, TenantId, schema};

/// The outcome of a run over every tenant schema.
#[derive(Debug, Default)]
pub struct MigrationReport {
    /// Schemas looked at.
    pub schemas: usize,
    /// Schemas that had pending migrations and applied them.
    pub upgraded: usize,
    /// Migrations applied in total.
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

/// Upgrades every tenant schema, at most `concurrency` at once.
pub async fn migrate_all(pool: &PgPool, concurrency: usize) -> Result<MigrationReport, TenancyError> {
    let started = Instant::now();
    let tenants = tenants_with_schema(pool).await?;
    let mut report = MigrationReport { schemas: tenants.len(), ..MigrationReport::default() };
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for tenant in tenants {
        let (pool, permits) = (pool.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = schema::migrate_tenant(&pool, &tenant).await;
            (tenant, result)
        });
    }
    let mut progress = Progress::new(report.schemas);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(0))) => {}
            Ok((_, Ok(applied))) => {
                report.upgraded += 1;
                report.applied += applied;
            }
            Ok((tenant, Err(error))) => {
                progress.failure(&tenant, &error);
                report.failed.push((tenant, error.to_string()));
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

/// How many tenant schemas are at each version, and which lag behind.
#[derive(Debug, Default)]
pub struct MigrationStatus {
    /// The newest version this build knows.
    pub latest: i64,
    /// Schemas per version (0: no migrations applied yet).
    pub per_version: BTreeMap<i64, usize>,
    /// Tenants below the latest version.
    pub lagging: Vec<(TenantId, i64)>,
}

/// Reads every tenant schema's version (in batches of union queries).
pub async fn status(pool: &PgPool) -> Result<MigrationStatus, TenancyError> {
    let tenants = tenants_with_schema(pool).await?;
    let latest = schema::latest_version();
    let mut status = MigrationStatus { latest, ..MigrationStatus::default() };
    for chunk in tenants.chunks(500) {
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
        let rows: Vec<(String, i64)> = sqlx::query_as(&union).fetch_all(pool).await?;
        for (id, version) in rows {
            *status.per_version.entry(version).or_default() += 1;
            if version < latest
                && let Some(tenant) = TenantId::parse(&id)
            {
                status.lagging.push((tenant, version));
            }
        }
    }
    Ok(status)
}

/// Progress on stderr: a redrawn bar on a terminal, a line per 10% otherwise.
struct Progress {
    total: usize,
    done: usize,
    terminal: bool,
    last_decile: usize,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress { total, done: 0, terminal: std::io::stderr().is_terminal(), last_decile: 0 }
    }

    fn step(&mut self, failed: usize) {
        self.done += 1;
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let width = 30;
            let filled = (self.done * width).checked_div(self.total).unwrap_or(width);
            let bar = format!("{}{}", "#".repeat(filled), " ".repeat(width - filled));
            drop(write!(err, "\r  tenant schemas [{bar}] {}/{} ({failed} failed)", self.done, self.total));
        } else {
            let decile = (self.done * 10).checked_div(self.total).unwrap_or(10);
            if decile > self.last_decile {
                self.last_decile = decile;
                drop(writeln!(err, "tenant schemas: {}/{} done, {failed} failed", self.done, self.total));
            }
        }
    }

    fn failure(&self, tenant: &TenantId, error: &TenancyError) {
        let prefix = if self.terminal { "\n" } else { "" };
        drop(writeln!(std::io::stderr(), "{prefix}tenant {tenant}: migration failed: {error}"));
    }

    fn finish(&self) {
        if self.terminal && self.total > 0 {
            drop(writeln!(std::io::stderr()));
        }
    }
}
