//! `tenantry migrate` over tenant schemas, as operators run it: upgrades
//! every schema, reports a broken one without stopping the rest, shows
//! status, and is resumable and idempotent. Each test runs straight to
//! PostgreSQL and with `DATABASE_URL` through PgBouncer in transaction
//! pooling mode (`TENANTRY_DATABASE_LISTEN_URL` direct), as a deploy
//! pipeline behind a pooler runs it.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};
use tenantry::{
    proto::tenantry::v1::{EnqueueJobRequest, jobs_service_client::JobsServiceClient},
    tenancy::schema,
};
use tokio::process::Command;

use crate::harness::{Backend, TestApp, TestDatabase, eventually, on_every_backend};

on_every_backend!(
    platform_migrations_leave_no_advisory_lock_behind,
    migrate_upgrades_every_tenant_and_reports_a_broken_one_without_stopping,
    purge_command_drops_only_tenants_past_their_grace_period,
);

async fn tenantry(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(args)
            .envs(app.cli_env().iter().cloned())
            .env("TENANTRY_LOG_FORMAT", "json")
            .output(),
    )
    .await
    .expect("migrate finishes")
    .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// Drops what the latest tenant migration (identity) creates.
/// Makes a tenant schema look as if the latest migration had never run.
async fn roll_back_latest(app: &TestApp, tenant_id: &str, keep_objects: bool) {
    let schema = format!("t_{tenant_id}");
    if !keep_objects {
        sqlx::query(&format!("DROP TABLE \"{schema}\".usage_events")).execute(&app.pool).await.unwrap();
    }
    sqlx::query(&format!("DELETE FROM \"{schema}\".schema_migrations WHERE version = $1"))
        .bind(schema::latest_version())
        .execute(&app.pool)
        .await
        .unwrap();
}

/// sqlx serialises migrators with a session-level advisory lock. Through a
/// transaction-mode pooler its lock and unlock can land on different server
/// connections, leaving the lock held and every later migrator waiting.
async fn platform_migrations_leave_no_advisory_lock_behind(backend: Backend) {
    let database = TestDatabase::create().await;
    let direct = PgPool::connect_with(database.options.clone()).await.unwrap();
    // Several idle server connections behind the pooler, so consecutive
    // statements of one client do not all land on the same one.
    let options = backend.database_config(&database).await.connect_options().unwrap();
    let warm = PgPoolOptions::new().max_connections(4).connect_with(options).await.unwrap();
    let mut sleeps = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let warm = warm.clone();
        sleeps.spawn(async move { sqlx::query("SELECT pg_sleep(0.1)").execute(&warm).await.map(drop) });
    }
    for slept in sleeps.join_all().await {
        slept.unwrap();
    }
    warm.close().await;

    let app = TestApp::builder().backend(backend).database(database).spawn().await;
    // The job workers take transaction-scoped advisory locks for moments; a
    // lock left behind by the migration stays.
    let released = eventually(Duration::from_secs(3), || async {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&direct)
        .await
        .unwrap();
        held == 0
    })
    .await;
    assert!(released, "the migration lock outlived the migration");
    let (ok, _, stderr) = tenantry(&app, &["migrate"]).await;
    assert!(ok, "a later migrator runs: {stderr}");
}

async fn migrate_upgrades_every_tenant_and_reports_a_broken_one_without_stopping(backend: Backend) {
    assert_eq!(
        schema::latest_version(),
        20261127030000,
        "this test rolls back the usage-events migration; update it when tenant migrations are added"
    );
    let app = TestApp::builder().backend(backend).spawn().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(app.create_tenant(&format!("tenant-{i}")).await.id);
    }
    for id in &ids[..5] {
        roll_back_latest(&app, id, false).await;
    }
    // The sixth keeps the table the migration creates: re-applying fails there.
    roll_back_latest(&app, &ids[5], true).await;

    let (_, status, _) = tenantry(&app, &["migrate", "--status"]).await;
    assert!(status.contains("lagging tenants: 6"), "{status}");

    let (ok, stdout, stderr) = tenantry(&app, &["migrate", "--concurrency", "3"]).await;
    assert!(!ok, "a failed schema makes the run fail");
    assert!(stdout.contains("6 checked, 5 upgraded"), "{stdout}");
    assert!(stderr.contains(&ids[5]), "the broken tenant is named: {stderr}");

    let (_, status, _) = tenantry(&app, &["migrate", "--status"]).await;
    assert!(status.contains("lagging tenants: 1") && status.contains(&ids[5]), "{status}");

    // Fix the broken schema by hand, run again: only it is upgraded.
    sqlx::query(&format!("DROP TABLE \"t_{}\".usage_events", ids[5])).execute(&app.pool).await.unwrap();
    let (ok, stdout, stderr) = tenantry(&app, &["migrate"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("6 checked, 1 upgraded"), "{stdout}");

    // Idempotent: nothing left to do.
    let (ok, stdout, _) = tenantry(&app, &["migrate"]).await;
    assert!(ok && stdout.contains("6 checked, 0 upgraded"), "{stdout}");
    let (_, status, _) = tenantry(&app, &["migrate", "--status"]).await;
    assert!(status.contains("lagging tenants: 0"), "{status}");
}

async fn purge_command_drops_only_tenants_past_their_grace_period(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let keep = app.create_tenant("keep").await;
    let gone = app.create_tenant("gone").await;
    let waiting = app.create_tenant("waiting").await;
    // Each tenant has a queued job; the purged tenant's goes with its schema.
    for tenant in [&keep, &gone, &waiting] {
        let request = EnqueueJobRequest { kind: "email.send".into(), ..Default::default() };
        JobsServiceClient::new(app.channel.clone()).enqueue_job(app.as_admin_in(&tenant.id, request)).await.unwrap();
    }
    sqlx::query("UPDATE platform.tenants SET state = 'deleted', deleted_at = now(), purge_after = now() - interval '1 minute' WHERE id = $1")
        .bind(&gone.id)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE platform.tenants SET state = 'deleted', deleted_at = now(), purge_after = now() + interval '1 day' WHERE id = $1")
        .bind(&waiting.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let (ok, stdout, stderr) = tenantry(&app, &["tenant", "purge"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("purged 1 tenant"), "{stdout}");
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\\_ten\\_%' ORDER BY 1")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let mut expected = vec![format!("t_{}", keep.id), format!("t_{}", waiting.id)];
    expected.sort();
    assert_eq!(schemas, expected);
    let jobs_of = |tenant: String| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM platform.jobs WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&app.pool)
    };
    assert_eq!(jobs_of(gone.id.clone()).await.unwrap(), 0, "the purged tenant's jobs are gone");
    assert_eq!(jobs_of(keep.id.clone()).await.unwrap(), 1);
    assert_eq!(jobs_of(waiting.id.clone()).await.unwrap(), 1, "a tenant still in its grace period keeps its jobs");
}
