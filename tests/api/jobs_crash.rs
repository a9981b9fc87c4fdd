//! Crash safety with real worker processes: `tenantry worker` children are
//! killed with SIGKILL over and over while they run 10,000 jobs; no job is
//! lost and each completion is recorded exactly once. A worker stopped with
//! SIGTERM gives its unfinished jobs back.

use std::{process::Stdio, time::Duration};

use tenantry::{
    jobs::{BUILTIN_QUEUE, queue},
    tenancy::TenantId,
};
use tokio::process::{Child, Command};

use crate::harness::{TestDatabase, eventually};

const JOBS: usize = 10_000;

fn worker(database_url: &str, lease: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .arg("worker")
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--worker-lease",
            lease,
            "--worker-rescue-interval",
            "300ms",
            "--worker-poll-interval",
            "100ms",
        ])
        .args(["--purge-interval", "0", "--usage-rollup-interval", "0", "--scaling-interval", "0"])
        .args(["--db-max-connections", "8"])
        .args(extra)
        .env_remove("DATABASE_URL")
        .env("DATABASE_URL", database_url)
        .env("TENANTRY_LOG_FORMAT", "json")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start a worker process")
}

async fn migrated_pool(database: &TestDatabase) -> sqlx::PgPool {
    let pool = sqlx::PgPool::connect_with(database.options.clone()).await.unwrap();
    tenantry::db::migrate(&pool).await.unwrap();
    pool
}

async fn insert_tenants(pool: &sqlx::PgPool, count: usize) -> Vec<TenantId> {
    let mut tenants = Vec::new();
    for i in 0..count {
        let id = TenantId::generate();
        sqlx::query("INSERT INTO platform.tenants (id, slug, display_name, plan_id) VALUES ($1, $2, $2, 'enterprise')")
            .bind(id.as_str())
            .bind(format!("crash-{i}"))
            .execute(pool)
            .await
            .unwrap();
        tenants.push(id);
    }
    tenants
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn killing_workers_repeatedly_loses_no_job_and_records_each_completion_once() {
    let database = TestDatabase::create().await;
    let pool = migrated_pool(&database).await;
    // Test instrumentation: every transition to completed, logged.
    sqlx::query("CREATE TABLE public.completions (job_id text NOT NULL, at timestamptz NOT NULL DEFAULT now())")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "CREATE FUNCTION public.log_completion() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN INSERT INTO public.completions (job_id) VALUES (NEW.id); RETURN NEW; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER log_completion AFTER UPDATE ON platform.jobs FOR EACH ROW
         WHEN (NEW.state = 'completed') EXECUTE FUNCTION public.log_completion()",
    )
    .execute(&pool)
    .await
    .unwrap();

    let tenants = insert_tenants(&pool, 4).await;
    for chunk in 0..JOBS / 1000 {
        let mut tx = pool.begin().await.unwrap();
        for i in 0..1000 {
            let n = chunk * 1000 + i;
            let mut job = queue::NewJob::new(Some(tenants[n % tenants.len()].clone()), "tenantry.noop");
            job.queue = BUILTIN_QUEUE.to_owned();
            // Some jobs take a little while, so kills land mid-job.
            job.payload = serde_json::json!({ "sleep_ms": if n % 10 == 0 { 50 } else { 0 } });
            job.max_attempts = 25;
            queue::enqueue(&mut tx, job).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    let mut workers: Vec<Child> = (0..2).map(|_| worker(&database.url, "2s", &[])).collect();
    let mut kills: usize = 0;
    while kills < 12 {
        tokio::time::sleep(Duration::from_millis(250 + 50 * (kills as u64 % 4))).await;
        let victim = kills % workers.len();
        workers[victim].start_kill().expect("SIGKILL a worker");
        workers[victim].wait().await.unwrap();
        workers[victim] = worker(&database.url, "2s", &[]);
        kills += 1;
    }
    let drained = eventually(Duration::from_secs(180), || async {
        count(&pool, "SELECT count(*) FROM platform.jobs WHERE state <> 'completed'").await == 0
    })
    .await;
    for mut child in workers {
        child.start_kill().ok();
        child.wait().await.ok();
    }
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM platform.jobs GROUP BY state ORDER BY state")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(drained, "every job completed: {states:?}");
    assert_eq!(count(&pool, "SELECT count(*) FROM platform.jobs WHERE state = 'completed'").await, JOBS as i64);
    assert_eq!(count(&pool, "SELECT count(*) FROM public.completions").await, JOBS as i64, "one completion per job");
    assert_eq!(count(&pool, "SELECT count(DISTINCT job_id) FROM public.completions").await, JOBS as i64);
    // The kills really interrupted work: some attempts were rescued and run again.
    let rescued = count(&pool, "SELECT count(*) FROM platform.jobs WHERE attempt > 1").await;
    assert!(rescued > 0, "no job was interrupted; the test did not exercise crashes");
    pool.close().await;
}

#[tokio::test]
async fn a_worker_stopped_with_sigterm_releases_its_unfinished_jobs() {
    let database = TestDatabase::create().await;
    let pool = migrated_pool(&database).await;
    let tenants = insert_tenants(&pool, 1).await;
    let mut tx = pool.begin().await.unwrap();
    for _ in 0..3 {
        let mut job = queue::NewJob::new(Some(tenants[0].clone()), "tenantry.noop");
        job.queue = BUILTIN_QUEUE.to_owned();
        job.payload = serde_json::json!({ "sleep_ms": 600_000 });
        queue::enqueue(&mut tx, job).await.unwrap();
    }
    tx.commit().await.unwrap();
    let mut child = worker(&database.url, "60s", &["--worker-shutdown-timeout", "500ms"]);
    let running = eventually(Duration::from_secs(30), || async {
        count(&pool, "SELECT count(*) FROM platform.jobs WHERE state = 'running'").await == 3
    })
    .await;
    assert!(running, "the worker picked the jobs up");
    let pid = child.id().expect("running child") as i32;
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("the worker stops").unwrap();
    assert!(exit.success(), "{exit:?}");
    // Available again at once (not after the 60 s lease), without using an attempt.
    assert_eq!(count(&pool, "SELECT count(*) FROM platform.jobs WHERE state = 'available' AND attempt = 0").await, 3);
    pool.close().await;
}
