//! Tenancy at scale, measured on a real PostgreSQL (DATABASE_URL, or a
//! private cluster started here): provisioning latency, upgrading 1,000
//! tenant schemas by one migration, a no-op upgrade, paging through 10,000
//! tenants, and per-call tenant resolution as the tenant count grows.
//!
//! Run: `cargo bench --bench tenancy` (TENANTRY_BENCH_TENANTS=10000 by default).

mod support;

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tenantry::tenancy::{TenantDirectory, TenantId, migrate::run_all, schema, store};
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Mean per-call latency of resolving random tenants, `rounds` calls.
async fn resolution(directory: &TenantDirectory, ids: &[TenantId], rounds: usize) -> Duration {
    let started = Instant::now();
    for i in 0..rounds {
        let id = &ids[(i * 7919) % ids.len()];
        assert!(directory.resolve(id.as_str()).await.unwrap().is_some());
    }
    started.elapsed() / rounds as u32
}

async fn roll_back_latest_migration(pool: &PgPool, ids: &[TenantId]) {
    // Undo what the latest tenant migration made: the tables it creates
    // (read from its SQL, so the bench follows new migrations) and its record
    // (not the ledger's: the runs below visit every schema).
    let latest = schema::TENANT_MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .max_by_key(|m| m.version)
        .unwrap();
    let tables: Vec<&str> =
        latest.sql.split("CREATE TABLE ").skip(1).filter_map(|rest| rest.split_whitespace().next()).collect();
    assert!(!tables.is_empty(), "the latest tenant migration creates no table to roll back");
    for id in ids {
        let schema = id.schema();
        let drops: String = tables.iter().map(|t| format!("DROP TABLE \"{schema}\".{t}; ")).collect();
        sqlx::raw_sql(&format!("{drops}DELETE FROM \"{schema}\".schema_migrations WHERE version = {}", latest.version))
            .execute(pool)
            .await
            .unwrap();
    }
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("TENANTRY_BENCH_TENANTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let scratch = support::Scratch::create().await;
    let pool = scratch.pool.clone();

    // 1. Provisioning latency, one at a time.
    let mut latencies = Vec::new();
    for i in 0..100 {
        let started = Instant::now();
        support::provision_many(&pool, i..i + 1, "latency", 1).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "provision one tenant (row + schema + migrations, one transaction): p50 {:.1?}  p95 {:.1?}  max {:.1?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies[latencies.len() - 1]
    );

    // 2. 1,000 schemas: one new migration, then a no-op run.
    let mut ids = support::provision_many(&pool, 0..900, "bench", 8).await;
    ids.extend(
        store::list(&pool, &Default::default(), 1000, None).await.unwrap().0.into_iter().map(|t| t.id).take(100),
    );
    let thousand: Vec<TenantId> = ids.iter().take(1000).cloned().collect();
    roll_back_latest_migration(&pool, &thousand).await;
    let report = run_all(&pool, 8, schema::Direction::Up, true).await.unwrap();
    // A figure over failed upgrades would measure nothing.
    assert!(report.failed.is_empty(), "{} schemas failed to upgrade", report.failed.len());
    println!(
        "migrate {} schemas, {} pending one migration: {:.2?} ({} failed)",
        report.schemas,
        report.upgraded,
        report.elapsed,
        report.failed.len()
    );
    let report = run_all(&pool, 8, schema::Direction::Up, true).await.unwrap();
    println!("no-op migrate over {} schemas: {:.2?}", report.schemas, report.elapsed);

    // 3. Resolution at 1,000 tenants (uncached, then cached).
    let uncached = TenantDirectory::new(pool.clone());
    // Big enough for every tenant (`--cache-entries` at least the tenants
    // called), so "cached" measures hits, not the default bound's misses.
    let cached = TenantDirectory::with_capacity(pool.clone(), total as u64);
    let shutdown = CancellationToken::new();
    let mut feed = tenantry::db::notify::ChangeFeed::default();
    cached.subscribe(&mut feed);
    tokio::spawn(feed.run(pool.clone(), shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    resolution(&cached, &thousand, 2000).await;
    let at_1k = (resolution(&uncached, &thousand, 2000).await, resolution(&cached, &thousand, 20_000).await);

    // 4. Grow to `total` tenants; page through all of them.
    let started = Instant::now();
    let grown = support::provision_many(&pool, 900..total.saturating_sub(100).max(900), "bench", 8).await;
    println!("provisioned {} more tenants in {:.2?} (8 at a time)", grown.len(), started.elapsed());
    let started = Instant::now();
    let (mut pages, mut seen, mut token) = (0, 0, None);
    loop {
        let (page, next) = store::list(&pool, &Default::default(), 1000, token).await.unwrap();
        pages += 1;
        seen += page.len();
        if next.is_none() {
            break;
        }
        token = next;
    }
    println!("ListTenants paged through {seen} tenants in {pages} pages of 1000: {:.2?}", started.elapsed());

    let all: Vec<TenantId> = ids.iter().chain(grown.iter()).cloned().collect();
    resolution(&cached, &all, all.len()).await;
    let at_all = (resolution(&uncached, &all, 2000).await, resolution(&cached, &all, 20_000).await);
    println!(
        "tenant resolution per call: at 1,000 tenants uncached {:.1?} cached {:.2?}; at {} tenants uncached {:.1?} cached {:.2?}",
        at_1k.0,
        at_1k.1,
        all.len(),
        at_all.0,
        at_all.1
    );
    shutdown.cancel();
    scratch.finish().await;
}
