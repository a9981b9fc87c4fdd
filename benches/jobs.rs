//! Job queue throughput and latency on a real PostgreSQL (DATABASE_URL, or a
//! private cluster started here), with the built-in workers of one process:
//!
//! 0. enqueue: one job per statement (`queue::enqueue`, 1,000 per
//!    transaction) against one statement per 1,000 (`queue::enqueue_many`);
//! 1. drain: a backlog of no-op jobs, platform-level (no tenant caps), then
//!    spread over 10 tenants under their plan caps;
//! 2. pipelined: producers enqueue (100 per transaction) while workers run,
//!    first enqueue to last completion;
//! 3. idle latency: one job at a time into idle workers, enqueue commit to
//!    attempt start (`started_at - created_at`, both on the database clock).
//!
//! Run: `cargo bench --bench jobs` (TENANTRY_BENCH_JOBS=50000 by default).

mod support;

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tenantry::{
    db::notify::ChangeFeed,
    jobs::{
        BUILTIN_QUEUE,
        events::JobEvents,
        handlers::{NOOP, Registry},
        queue::{self, NewJob},
        worker::{WorkerConfig, Workers},
    },
    tenancy::TenantId,
};
use tokio_util::sync::CancellationToken;

fn noop(tenant: Option<TenantId>) -> NewJob {
    let mut job = NewJob::new(tenant, NOOP);
    job.queue = BUILTIN_QUEUE.to_owned();
    job
}

/// Enqueues jobs `from..from + count` in one transaction, one statement per job.
async fn enqueue_one_by_one(pool: &PgPool, tenants: &[Option<TenantId>], from: usize, count: usize) {
    let mut tx = pool.begin().await.unwrap();
    for i in from..from + count {
        queue::enqueue(&mut tx, noop(tenants[i % tenants.len()].clone())).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// Enqueues jobs `from..from + count` in one transaction and one statement.
async fn enqueue_batch(pool: &PgPool, tenants: &[Option<TenantId>], from: usize, count: usize) {
    let mut tx = pool.begin().await.unwrap();
    let jobs = (from..from + count).map(|i| noop(tenants[i % tenants.len()].clone())).collect();
    queue::enqueue_many(&mut tx, jobs).await.unwrap();
    tx.commit().await.unwrap();
}

/// Whether any job is still to run: three probes of the partial indexes
/// (available, running, waiting), so the bench's own polling costs the
/// database next to nothing (a `count(*)` every 20 ms scanned the whole
/// table and took a good part of a core from the workers it measured).
async fn pending(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM platform.jobs WHERE queue = $1 AND state = 'available')
             OR EXISTS (SELECT 1 FROM platform.jobs WHERE state = 'running')
             OR EXISTS (SELECT 1 FROM platform.jobs WHERE state IN ('scheduled', 'retryable'))",
    )
    .bind(BUILTIN_QUEUE)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_drained(pool: &PgPool) {
    while pending(pool).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Enqueues `total` jobs in transactions of 1,000 with `enqueue`; returns jobs/s.
async fn enqueue_rate<F, Fut>(pool: &PgPool, total: usize, enqueue: F) -> f64
where
    F: Fn(usize, usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    clear(pool).await;
    let started = Instant::now();
    let mut from = 0;
    while from < total {
        let count = 1000.min(total - from);
        enqueue(from, count).await;
        from += count;
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Starts the built-in workers of one process; returns their stop token and task.
fn start_workers(pool: &PgPool, concurrency: usize) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let events = JobEvents::new();
    let mut feed = ChangeFeed::default();
    events.subscribe(&mut feed);
    tokio::spawn(feed.run(pool.clone(), stop.clone()));
    let config = WorkerConfig {
        concurrency,
        purge_interval: Duration::ZERO,
        usage_rollup_interval: Duration::ZERO,
        scaling_interval: Duration::ZERO,
        ..tenantry::config::defaults()
    };
    let workers = Workers::new(pool.clone(), Registry::builtin(), config, events);
    (stop.clone(), tokio::spawn(workers.run(stop)))
}

async fn stop_workers((stop, task): (CancellationToken, tokio::task::JoinHandle<()>)) {
    stop.cancel();
    task.await.unwrap();
}

async fn clear(pool: &PgPool) {
    sqlx::query("TRUNCATE platform.jobs").execute(pool).await.unwrap();
}

async fn drain(pool: &PgPool, label: &str, tenants: &[Option<TenantId>], total: usize) {
    clear(pool).await;
    let started = Instant::now();
    let mut from = 0;
    while from < total {
        let count = 1000.min(total - from);
        enqueue_batch(pool, tenants, from, count).await;
        from += count;
    }
    let enqueue = started.elapsed();
    let workers = start_workers(pool, 500);
    let started = Instant::now();
    wait_drained(pool).await;
    let elapsed = started.elapsed();
    stop_workers(workers).await;
    println!(
        "drain {label}: {total} no-op jobs in {elapsed:.2?} = {:.0} jobs/s (enqueued in batches of 1000: {:.0} jobs/s)",
        total as f64 / elapsed.as_secs_f64(),
        total as f64 / enqueue.as_secs_f64()
    );
}

/// Enqueues 300 jobs one at a time into idle workers; prints the
/// percentiles of enqueue -> attempt start.
async fn idle_latency(pool: &PgPool) {
    clear(pool).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..300 {
        let mut tx = pool.begin().await.unwrap();
        queue::enqueue(&mut tx, noop(None)).await.unwrap();
        tx.commit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_drained(pool).await;
    let mut latencies: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM started_at - created_at) * 1000)::float8 FROM platform.jobs ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "idle latency enqueue -> start over {} jobs: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        at(0.5),
        at(0.95),
        at(0.99),
        at(1.0)
    );
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("TENANTRY_BENCH_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000);
    let scratch = support::Scratch::create().await;
    let pool = scratch.pool.clone();
    let mut tenants = Vec::new();
    for i in 0..10 {
        let id = TenantId::generate();
        sqlx::query("INSERT INTO platform.tenants (id, slug, display_name, plan_id) VALUES ($1, $2, $2, 'enterprise')")
            .bind(id.as_str())
            .bind(format!("bench-{i}"))
            .execute(&pool)
            .await
            .unwrap();
        tenants.push(Some(id));
    }

    // 0. Enqueue alone.
    let single = enqueue_rate(&pool, total, |from, count| enqueue_one_by_one(&pool, &[None], from, count)).await;
    let batched = enqueue_rate(&pool, total, |from, count| enqueue_batch(&pool, &[None], from, count)).await;
    let tenant_batched = enqueue_rate(&pool, total, |from, count| enqueue_batch(&pool, &tenants, from, count)).await;
    println!(
        "enqueue {total} jobs, 1000 per transaction: one statement per job {single:.0} jobs/s; \
         one statement per 1000 (enqueue_many) {batched:.0} jobs/s, over 10 tenants {tenant_batched:.0} jobs/s"
    );

    // 1. Drain a backlog.
    drain(&pool, "platform-level", &[None], total).await;
    drain(&pool, "10 tenants, cap 50 each", &tenants, total).await;

    // 2. Pipelined: 4 producers enqueue while the workers run.
    clear(&pool).await;
    let workers = start_workers(&pool, 500);
    let started = Instant::now();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut from = p * (total / 4);
                let end = from + total / 4;
                while from < end {
                    enqueue_batch(&pool, &[None], from, 100).await;
                    from += 100;
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.unwrap();
    }
    wait_drained(&pool).await;
    let elapsed = started.elapsed();
    println!(
        "pipelined: {} jobs enqueued (batches of 100, 4 producers) and run in {elapsed:.2?} = {:.0} jobs/s end to end",
        total / 4 * 4,
        (total / 4 * 4) as f64 / elapsed.as_secs_f64()
    );

    // 3. Idle latency: enqueue commit -> attempt start.
    idle_latency(&pool).await;
    stop_workers(workers).await;

    scratch.finish().await;
}
