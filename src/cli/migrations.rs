//! `tenantry migrate new` and `tenantry migrate down`: writing a migration
//! pair, and reverting the platform schema or every tenant schema to a
//! version. Upgrading stays in `cli.rs` (`tenantry migrate`), its status in
//! `tenancy::migrate`.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use crate::{
    config::DatabaseConfig,
    db,
    tenancy::{
        migrate,
        schema::{self, Direction},
    },
};

/// The database settings for a migration run: `--db-acquire-timeout` is
/// sized for serving calls (short, so admission control sheds load), but a
/// schema that failed only because a connection took longer than that to
/// open on a busy server would be a false failure. A run waits up to 30 s.
pub fn patient(database: DatabaseConfig) -> DatabaseConfig {
    DatabaseConfig { acquire_timeout: database.acquire_timeout.max(Duration::from_secs(30)), ..database }
}

/// Writes `<dir>/<platform|tenant>/<version>_<name>.up.sql` and `.down.sql`.
/// The version is `now` as `YYYYMMDDHHMMSS`, moved past the newest version
/// already in the directory (a clock behind, two in one second).
pub fn write_new(dir: &Path, name: &str, tenant: bool, now: DateTime<Utc>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let valid = !name.is_empty()
        && name.len() <= 60
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!("name: use 1-60 lowercase letters, digits and underscores, starting with a letter (e.g. add_invoices)");
    }
    let kind = if tenant { "tenant" } else { "platform" };
    let target = dir.join(kind);
    if !target.is_dir() {
        bail!("{} is not a directory; run from the repository root or pass --dir", target.display());
    }
    let mut version: i64 = now.format("%Y%m%d%H%M%S").to_string().parse().context("a timestamp is a number")?;
    for entry in fs::read_dir(&target)? {
        let file = entry?.file_name();
        let existing = file.to_string_lossy().split('_').next().and_then(|v| v.parse::<i64>().ok());
        if let Some(existing) = existing.filter(|existing| *existing >= version) {
            version = existing + 1;
        }
    }
    let scope = if tenant {
        "-- Applied inside every tenant schema (search_path is that schema only),\n\
         -- in one transaction per schema with the schema's other pending migrations.\n"
    } else {
        "-- Applied to the platform schema in one transaction; name tables platform.<name>.\n"
    };
    let up = target.join(format!("{version}_{name}.up.sql"));
    let down = target.join(format!("{version}_{name}.down.sql"));
    fs::write(&up, format!("-- {name}: what it changes and why.\n{scope}"))?;
    fs::write(
        &down,
        format!("-- Reverses {version}_{name}: undo exactly what the up migration made, newest first.\n{scope}"),
    )?;
    Ok((up, down))
}

/// Reverts the platform migrations newer than `to`, one at a time (each in
/// its own transaction, so a stopped run resumes where it stopped).
pub async fn platform_down(database: &DatabaseConfig, to: i64) -> anyhow::Result<()> {
    let known = |version: i64| db::MIGRATOR.iter().any(|m| m.version == version);
    if to != 0 && !known(to) {
        bail!("--to: no platform migration has version {to}");
    }
    // The migrations' lock is session-level: a direct session, as for `migrate`.
    let session = db::listen_pool(database)?;
    let applied = db::applied_platform_versions(&session).await?;
    let newer: Vec<i64> = applied.iter().rev().copied().filter(|v| *v > to).collect();
    let irreversible: Vec<i64> = newer
        .iter()
        .copied()
        .filter(|v| !db::MIGRATOR.iter().any(|m| m.version == *v && m.migration_type.is_down_migration()))
        .collect();
    if !irreversible.is_empty() {
        bail!("platform migration(s) {irreversible:?} have no down migration in this build; nothing was reverted");
    }
    if newer.is_empty() {
        println!("platform schema: nothing to revert (at or below {to})");
        return Ok(());
    }
    let tenants: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_ten\\_%'")
        .fetch_optional(&session)
        .await?;
    if tenants.unwrap_or(0) > 0 {
        tracing::info!(
            tenant_schemas = tenants.unwrap_or(0),
            "tenant schemas are not changed by a platform revert (`tenantry migrate down --tenant` reverts them)"
        );
    }
    let total = newer.len();
    for (done, version) in newer.iter().enumerate() {
        // The next lower applied version, so each call reverts exactly one.
        let below = applied.iter().copied().filter(|v| v < version).max().unwrap_or(0).max(to);
        db::migrate_down(&session, below).await.with_context(|| format!("reverting platform migration {version}"))?;
        tracing::info!(version, done = done + 1, total, "platform migration reverted");
    }
    session.close().await;
    println!(
        "platform schema: {total} migration(s) reverted, now at {}",
        if to == 0 { "nothing".into() } else { to.to_string() }
    );
    Ok(())
}

/// Reverts every tenant schema to `to`, `concurrency` schemas at once.
pub async fn tenant_down(
    database: &DatabaseConfig,
    to: i64,
    concurrency: usize,
    every_schema: bool,
) -> anyhow::Result<()> {
    if to != 0 && !schema::TENANT_MIGRATOR.iter().any(|m| m.version == to) {
        bail!("--to: no tenant migration has version {to}");
    }
    let pool = db::connect(database).await?;
    // The ledger and the tenant rows are this build's platform schema.
    db::check_migrations(&pool).await?;
    let report = migrate::run_all(&pool, concurrency, Direction::DownTo(to), every_schema).await?;
    print_report(&report, "reverted", &format!("at or below {to}"), "revert")
}

/// Prints a tenant-schema run's summary line; fails when a schema did.
pub(super) fn print_report(
    report: &migrate::MigrationReport,
    done: &str,
    rest: &str,
    verb: &str,
) -> anyhow::Result<()> {
    println!(
        "tenant schemas: {} checked, {} {done} ({} migrations), {} failed in {:.2?} ({} visited, the rest {rest} by the ledger)",
        report.schemas,
        report.upgraded,
        report.applied,
        report.failed.len(),
        report.elapsed,
        report.visited
    );
    if !report.failed.is_empty() {
        bail!("{} tenant schema(s) failed to {verb}; fix them and run again", report.failed.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_new_migration_is_a_timestamped_pair_after_the_newest_version() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tenant")).unwrap();
        fs::create_dir_all(dir.path().join("platform")).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 1, 2, 3).unwrap();
        let (up, down) = write_new(dir.path(), "add_invoices", true, now).unwrap();
        assert_eq!(up, dir.path().join("tenant/20261201010203_add_invoices.up.sql"));
        assert_eq!(down, dir.path().join("tenant/20261201010203_add_invoices.down.sql"));
        assert!(fs::read_to_string(&down).unwrap().starts_with("-- Reverses 20261201010203_add_invoices"));
        // Same second again: the next version, never a clash.
        let (up, _) = write_new(dir.path(), "add_more", true, now).unwrap();
        assert_eq!(up, dir.path().join("tenant/20261201010204_add_more.up.sql"));
        let (up, _) = write_new(dir.path(), "plans", false, now).unwrap();
        assert_eq!(up, dir.path().join("platform/20261201010203_plans.up.sql"));
        assert!(write_new(dir.path(), "Bad-Name", false, now).is_err());
        assert!(write_new(&dir.path().join("missing"), "ok", false, now).is_err());
    }
}
