//! The command line as operators use it: `migrate`, `bootstrap` (prints only
//! the key), and `serve` failing fast with a clear message.

use std::time::Duration;

use tenantry::auth::api_key::AdminKeys;
use tokio::process::Command;

use crate::harness::TestDatabase;

async fn tenantry(args: &[&str], database_url: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    command.args(args).env_remove("DATABASE_URL").env("TENANTRY_LOG_FORMAT", "json");
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output()).await.expect("command finishes").unwrap()
}

#[tokio::test]
async fn migrate_then_bootstrap_prints_only_a_working_key() {
    let database = TestDatabase::create().await;
    let migrated = tenantry(&["migrate"], Some(&database.url)).await;
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let again = tenantry(&["migrate"], Some(&database.url)).await;
    assert!(again.status.success(), "migrate is idempotent");

    let output = tenantry(&["bootstrap", "--name", "ops"], Some(&database.url)).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is exactly the key: {stdout:?}");
    let pool = sqlx::PgPool::connect_with(database.options.clone()).await.unwrap();
    let principal = AdminKeys::new(pool.clone()).authenticate(lines[0]).await.expect("the key works");
    assert!(principal.is_platform_admin());
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret_hash FROM platform.admin_api_keys").fetch_one(&pool).await.unwrap();
    assert_eq!(stored.len(), 32, "only a hash is stored");
    pool.close().await;
}

#[tokio::test]
async fn serve_refuses_a_database_whose_migrations_are_behind() {
    let database = TestDatabase::create().await;
    let output =
        tenantry(&["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"], Some(&database.url)).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tenantry migrate"), "{stderr}");
}

#[tokio::test]
async fn serve_fails_fast_when_postgres_is_unreachable() {
    let started = std::time::Instant::now();
    let output = tenantry(
        &["serve", "--db-acquire-timeout", "2s", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
        Some("postgres://nobody:hunter2@127.0.0.1:1/none"),
    )
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn serve_without_a_database_names_the_setting() {
    let output = tenantry(&["serve"], None).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DATABASE_URL") && stderr.contains("--dev"), "{stderr}");
}
