//! Migrations over many tenant schemas, on a real PostgreSQL (DATABASE_URL,
//! or a private cluster started here): provisioning N schemas (10,000 by
//! default), `migrate --status` from the ledger, one migration reverted and
//! re-applied over every schema (what a new tenant migration costs), a no-op
//! run, and how much private memory one PostgreSQL backend keeps after
//! touching 1,000 schemas (why the pool recycles connections).
//!
//! Run: `cargo bench --bench migrations` (TENANTRY_BENCH_SCHEMAS, default
//! 10000; TENANTRY_BENCH_CONCURRENCY, default 8, as `tenantry migrate`).

mod support;

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};
use tenantry::tenancy::{
    migrate::{self, run_all},
    schema::{self, Direction},
};

/// The fastest of three `migrate --status` reads, and the status itself.
async fn status(pool: &PgPool) -> (Duration, migrate::MigrationStatus) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..3 {
        let started = Instant::now();
        let status = migrate::status(pool).await.unwrap();
        best = best.min(started.elapsed());
        last = Some(status);
    }
    (best, last.unwrap())
}

/// Private memory of one backend (sum of its memory contexts), in MiB.
async fn backend_mib(conn: &mut PgConnection) -> f64 {
    let bytes: i64 = sqlx::query_scalar("SELECT sum(total_bytes)::bigint FROM pg_backend_memory_contexts")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let total = env("TENANTRY_BENCH_SCHEMAS", 10_000);
    let concurrency = env("TENANTRY_BENCH_CONCURRENCY", 8);
    // TENANTRY_BENCH_REUSE=<database> measures again on a database a run
    // with TENANTRY_BENCH_KEEP=1 left behind (provisioning is the slow part).
    let (scratch, pool, ids) = match std::env::var("TENANTRY_BENCH_REUSE") {
        Ok(name) => {
            let url = std::env::var("DATABASE_URL").expect("DATABASE_URL with TENANTRY_BENCH_REUSE");
            let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
            let options = options.database(&name);
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(16).connect_with(options).await.unwrap();
            tenantry::db::migrate(&pool).await.unwrap();
            let ids = migrate::tenants_with_schema(&pool).await.unwrap();
            println!("reusing {name}: {} tenant schemas", ids.len());
            (None, pool, ids)
        }
        Err(_) => {
            let scratch = support::Scratch::create().await;
            let pool = scratch.pool.clone();
            let started = Instant::now();
            let ids = support::provision_many(&pool, 0..total, "schemas", concurrency).await;
            println!("provisioned {} tenant schemas in {:.1?} ({concurrency} at a time)", ids.len(), started.elapsed());
            (Some(scratch), pool, ids)
        }
    };
    let total = ids.len();

    let (took, at_latest) = status(&pool).await;
    assert_eq!(at_latest.per_version.get(&schema::latest_version()), Some(&total));
    println!("migrate --status over {total} schemas (ledger), all at the latest version: {took:.1?}");

    // One migration over every schema: revert the latest, then apply it again.
    let previous =
        schema::TENANT_MIGRATOR.iter().map(|m| m.version).filter(|v| *v < schema::latest_version()).max().unwrap_or(0);
    let down = run_all(&pool, concurrency, Direction::DownTo(previous), false).await.unwrap();
    assert!(down.failed.is_empty() && down.upgraded == total, "{down:?}");
    println!(
        "migrate down --tenant --to {previous}: {} schemas, one migration each: {:.1?}",
        down.upgraded, down.elapsed
    );

    let (took, lagging) = status(&pool).await;
    assert_eq!(lagging.lagging.len(), total);
    println!("migrate --status with {} lagging schemas: {took:.1?}", lagging.lagging.len());

    let up = run_all(&pool, concurrency, Direction::Up, false).await.unwrap();
    assert!(up.failed.is_empty() && up.upgraded == total, "{up:?}");
    println!("migrate (one new migration over {} schemas): {:.1?}", up.upgraded, up.elapsed);

    let noop = run_all(&pool, concurrency, Direction::Up, false).await.unwrap();
    assert!(noop.failed.is_empty() && noop.upgraded == 0 && noop.visited == 0);
    println!("no-op migrate over {} schemas (ledger says all current): {:.1?}", noop.schemas, noop.elapsed);
    let every = run_all(&pool, concurrency, Direction::Up, true).await.unwrap();
    assert!(every.failed.is_empty() && every.upgraded == 0 && every.visited == total);
    println!("no-op migrate --all-schemas (visits and rechecks every schema): {:.1?}", every.elapsed);

    // One backend touching many schemas: its catalog caches grow and stay.
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await.unwrap();
    let fresh = backend_mib(&mut conn).await;
    for id in ids.iter().take(1000) {
        sqlx::raw_sql(&format!(
            "SELECT count(*) FROM \"{s}\".users; SELECT count(*) FROM \"{s}\".api_keys; SELECT count(*) FROM \"{s}\".audit_events",
            s = id.schema()
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let touched = backend_mib(&mut conn).await;
    println!(
        "one backend's memory contexts: {fresh:.1} MiB fresh, {touched:.1} MiB after reading 3 tables in each of 1,000 schemas"
    );
    conn.close().await.unwrap();
    match scratch {
        Some(scratch) if std::env::var("TENANTRY_BENCH_KEEP").is_ok() => {
            println!("kept the database {}", scratch.name());
        }
        Some(scratch) => scratch.finish().await,
        None => {}
    }
}
