//! `tenantry migrate` over tenant schemas, as operators run it: upgrades
//! every schema, reports a broken one without stopping the rest, shows
//! status from the ledger, and is resumable and idempotent; `migrate down`
//! takes the platform schema and every tenant schema back, and up again to
//! a schema identical to the first (compared with `pg_dump --schema-only`).
//! Each test runs straight to PostgreSQL and with `DATABASE_URL` through
//! PgBouncer in transaction pooling mode (`TENANTRY_DATABASE_LISTEN_URL`
//! direct), as a deploy pipeline behind a pooler runs it.

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
    tenant_schemas_go_down_and_up_again_to_an_identical_schema,
    the_platform_schema_goes_down_and_up_again_to_an_identical_schema,
);

async fn tenantry(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    tenantry_with(app.cli_env(), args).await
}

async fn tenantry_with(env: &[(&'static str, String)], args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(args)
            .envs(env.iter().cloned())
            .env("TENANTRY_LOG_FORMAT", "json")
            .output(),
    )
    .await
    .expect("migrate finishes")
    .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// Makes a tenant schema look as if the latest migration (usage events) had
/// never run: its table, its record in the schema, and the ledger's version.
/// With `keep_objects` the table stays, so applying it again fails.
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
    sqlx::query(&format!(
        "UPDATE platform.tenant_schema_versions SET version = (SELECT max(version) FROM \"{schema}\".schema_migrations)
         WHERE tenant_id = $1"
    ))
    .bind(tenant_id)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// The database's schema as `pg_dump --schema-only` prints it, without the
/// lines that differ between two dumps of the same schema; `None` (after one
/// printed line) when pg_dump is not installed.
async fn schema_dump(url: &str) -> Option<String> {
    let output = match Command::new("pg_dump").args(["--schema-only", "--no-owner", "--dbname", url]).output().await {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            println!("SKIPPED the schema comparison: pg_dump is not installed");
            return None;
        }
        Err(error) => panic!("pg_dump: {error}"),
    };
    assert!(output.status.success(), "pg_dump: {}", String::from_utf8_lossy(&output.stderr));
    let dump = String::from_utf8(output.stdout).unwrap();
    // pg_dump >= 15.14 wraps the dump in \restrict/\unrestrict with a random key.
    Some(
        dump.lines()
            .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// A direct URL to the app's database (pg_dump cannot go through PgBouncer).
fn direct_url(env: &[(&'static str, String)]) -> String {
    let find = |name: &str| env.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone());
    find("TENANTRY_DATABASE_LISTEN_URL").or_else(|| find("DATABASE_URL")).expect("a database URL")
}

async fn tables_in(app: &TestApp, tenant_id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 AND tablename <> 'schema_migrations' ORDER BY 1",
    )
    .bind(format!("t_{tenant_id}"))
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn ledger_version(app: &TestApp, tenant_id: &str) -> i64 {
    sqlx::query_scalar("SELECT version FROM platform.tenant_schema_versions WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
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

    // A schema the ledger lacks (made before it, or by an older build) is
    // still reported, read from the schema itself.
    sqlx::query("DELETE FROM platform.tenant_schema_versions WHERE tenant_id = $1")
        .bind(&ids[0])
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, status, log) = tenantry(&app, &["migrate", "--status"]).await;
    assert!(status.contains("lagging tenants: 6"), "{status}{log}");
    assert!(
        status.contains("not yet in the ledger (read from the schema; `tenantry migrate` records them): 1"),
        "{status}"
    );

    let (ok, stdout, stderr) = tenantry(&app, &["migrate", "--concurrency", "3"]).await;
    assert!(!ok, "a failed schema makes the run fail");
    assert!(stdout.contains("6 checked, 5 upgraded"), "{stdout}");
    assert!(stderr.contains(&ids[5]), "the broken tenant is named: {stderr}");

    let (_, status, stderr) = tenantry(&app, &["migrate", "--status"]).await;
    assert!(status.contains("lagging tenants: 1") && status.contains(&ids[5]), "{status}{stderr}");
    assert!(!status.contains("not yet in the ledger"), "the run recorded every schema it visited: {status}");
    assert_eq!(ledger_version(&app, &ids[0]).await, schema::latest_version());

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

async fn tenant_schemas_go_down_and_up_again_to_an_identical_schema(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let ids = [
        app.create_tenant("down-a").await.id,
        app.create_tenant("down-b").await.id,
        app.create_tenant("down-c").await.id,
    ];
    let before = schema_dump(&direct_url(app.cli_env())).await;
    let all_tables = tables_in(&app, &ids[0]).await;
    assert!(all_tables.contains(&"usage_events".to_owned()) && all_tables.contains(&"users".to_owned()));
    let versions: Vec<i64> = schema::TENANT_MIGRATOR.iter().map(|m| m.version).collect();
    let middle = *versions.iter().filter(|v| **v < schema::latest_version()).max().unwrap();

    // One step down: the latest migration is reverted in every schema.
    let (ok, stdout, stderr) = tenantry(&app, &["migrate", "down", "--tenant", "--to", &middle.to_string()]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("3 checked, 3 reverted (3 migrations), 0 failed"), "{stdout}");
    // With JSON logs, progress is log events and stderr carries nothing else.
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|line| serde_json::from_str(line).expect("every stderr line is JSON")).collect();
    assert!(
        lines
            .iter()
            .any(|line| line["message"] == "tenant schemas migrating" && line["done"] == 3 && line["total"] == 3),
        "progress is reported: {stderr}"
    );
    for id in &ids {
        assert!(!tables_in(&app, id).await.contains(&"usage_events".to_owned()));
        assert!(tables_in(&app, id).await.contains(&"users".to_owned()));
        assert_eq!(ledger_version(&app, id).await, middle);
    }
    let (_, status, _) = tenantry(&app, &["migrate", "--status"]).await;
    assert!(status.contains("lagging tenants: 3"), "{status}");

    // All the way down, then again: nothing left to revert (resumable).
    let (ok, stdout, stderr) = tenantry(&app, &["migrate", "down", "--tenant", "--to", "0"]).await;
    assert!(ok, "{stderr}");
    let rest = versions.len() / 2 - 1;
    assert!(stdout.contains(&format!("3 checked, 3 reverted ({} migrations)", 3 * rest)), "{stdout}");
    let (ok, stdout, _) = tenantry(&app, &["migrate", "down", "--tenant", "--to", "0"]).await;
    assert!(ok && stdout.contains("3 checked, 0 reverted"), "{stdout}");
    for id in &ids {
        assert_eq!(tables_in(&app, id).await, Vec::<String>::new(), "tenant {id} is empty");
        assert_eq!(ledger_version(&app, id).await, 0);
    }
    // An unknown version is refused before anything changes.
    let (ok, _, stderr) = tenantry(&app, &["migrate", "down", "--tenant", "--to", "12345"]).await;
    assert!(!ok && stderr.contains("no tenant migration has version 12345"), "{stderr}");

    // And up again: the same schema as before, to the byte.
    let (ok, stdout, stderr) = tenantry(&app, &["migrate"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("3 checked, 3 upgraded ({} migrations)", 3 * versions.len() / 2)), "{stdout}");
    for id in &ids {
        assert_eq!(ledger_version(&app, id).await, schema::latest_version());
    }
    if let Some(before) = before {
        let after = schema_dump(&direct_url(app.cli_env())).await.unwrap();
        assert!(before == after, "up, down, up changed the schema:\n{}", first_difference(&before, &after));
    }
}

async fn the_platform_schema_goes_down_and_up_again_to_an_identical_schema(backend: Backend) {
    // The platform schema cannot go down under a running server, so this
    // test runs the command line on a database of its own, as an operator
    // would during a maintenance window.
    let database = TestDatabase::create().await;
    let env = backend.cli_env(&database).await;
    let (ok, _, stderr) = tenantry_with(&env, &["migrate"]).await;
    assert!(ok, "{stderr}");
    let direct = PgPool::connect_with(database.options.clone()).await.unwrap();
    let before = schema_dump(&database.url).await;
    let platform_tables = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_tables WHERE schemaname = 'platform'")
            .fetch_one(&direct)
            .await
            .unwrap()
    };
    assert!(platform_tables().await > 5);

    let versions: Vec<i64> =
        tenantry::db::MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()).map(|m| m.version).collect();
    let (ok, stdout, stderr) = tenantry_with(&env, &["migrate", "down", "--to", &versions[1].to_string()]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("{} migration(s) reverted, now at {}", versions.len() - 2, versions[1])),
        "{stdout}"
    );
    // Progress is one JSON event per reverted migration, newest first.
    let first: serde_json::Value = serde_json::from_str(stderr.lines().next().unwrap_or("")).expect("a JSON line");
    assert_eq!(first["message"], "platform migration reverted", "{stderr}");
    assert_eq!((first["version"].as_i64(), first["done"].as_u64()), (Some(versions[versions.len() - 1]), Some(1)));
    assert_eq!(first["total"].as_u64(), Some(versions.len() as u64 - 2), "{stderr}");
    let (ok, stdout, stderr) = tenantry_with(&env, &["migrate", "down", "--to", "0"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 migration(s) reverted, now at nothing"), "{stdout}");
    let (ok, stdout, _) = tenantry_with(&env, &["migrate", "down", "--to", "0"]).await;
    assert!(ok && stdout.contains("nothing to revert"), "{stdout}");
    let schemas: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'platform'")
        .fetch_one(&direct)
        .await
        .unwrap();
    assert_eq!(schemas, 0, "the platform schema is gone");

    let (ok, _, stderr) = tenantry_with(&env, &["migrate"]).await;
    assert!(ok, "{stderr}");
    if let Some(before) = before {
        let after = schema_dump(&database.url).await.unwrap();
        assert!(before == after, "up, down, up changed the schema:\n{}", first_difference(&before, &after));
    }
    direct.close().await;
}

/// The first differing line of two dumps, with its neighbours.
fn first_difference(before: &str, after: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    format!(
        "before:\n{}\nafter:\n{}",
        a[at.saturating_sub(3)..(at + 3).min(a.len())].join("\n"),
        b[at.saturating_sub(3)..(at + 3).min(b.len())].join("\n")
    )
}
