//! `tenantry serve --dev`, the README's first command, run as a real process:
//! boots on an empty data directory inside a private (0700) directory, as in
//! root's home, again on the same one, with transparent huge pages off for
//! the server and its private PostgreSQL, stops that PostgreSQL on SIGTERM,
//! and a second one on the same data directory refuses at once.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Stdio, time::Duration};

use tenantry::proto::tenantry::v1::{ListTenantsRequest, tenant_service_client::TenantServiceClient};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::harness::with_metadata;

struct DevServer {
    child: Child,
    grpc: String,
    key: String,
}

async fn start(data_dir: &Path) -> DevServer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--dev", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("TENANTRY_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run tenantry");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut grpc, mut key) = (None, None);
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line = line.trim();
            if let Some(addr) = line.strip_prefix("gRPC: ") {
                grpc = Some(addr.to_owned());
            } else if line.starts_with("tnty_") {
                key = Some(line.to_owned());
            } else if line.starts_with("REST reference") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read).await.expect("the dev server prints its banner");
    // Keep draining stdout, as a terminal would, for as long as the server runs.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    DevServer { child, grpc: grpc.expect("gRPC address printed"), key: key.expect("admin key printed") }
}

async fn terminate(mut server: DevServer) {
    let pid = server.child.id().unwrap().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), server.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status}");
}

async fn admin_call_reaches_the_handler(server: &DevServer) {
    let mut client = TenantServiceClient::connect(format!("http://{}", server.grpc)).await.unwrap();
    let request = with_metadata(ListTenantsRequest::default(), &[("x-api-key", &server.key)]);
    let response = client.list_tenants(request).await;
    assert!(response.is_ok(), "{response:?}");
}

/// A data directory inside a 0700 directory (root's home on Debian), removed
/// with the cluster wherever it went.
struct PrivateDataDir {
    home: tempfile::TempDir,
}

impl PrivateDataDir {
    fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        PrivateDataDir { home }
    }

    fn path(&self) -> std::path::PathBuf {
        self.home.path().join("data")
    }
}

impl Drop for PrivateDataDir {
    fn drop(&mut self) {
        // As root the cluster lives where the postgres user can reach it.
        if let Ok(cluster) = std::fs::canonicalize(self.path().join("postgres")) {
            std::fs::remove_dir_all(cluster).ok();
        }
    }
}

#[tokio::test]
async fn serve_dev_boots_on_an_empty_data_dir_in_a_private_home_and_again_on_the_same_one() {
    let dir = PrivateDataDir::new();
    let data_dir = dir.path();

    let first = start(&data_dir).await;
    admin_call_reaches_the_handler(&first).await;
    // The binary turns transparent huge pages off for itself, and its
    // private PostgreSQL inherits that (docs/reliability.md, "RSS").
    let pid_file = data_dir.join("postgres/data/postmaster.pid");
    let postgres = std::fs::read_to_string(&pid_file).unwrap().lines().next().unwrap().to_owned();
    for pid in [first.child.id().unwrap().to_string(), postgres] {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.lines().any(|l| l == "THP_enabled:\t0"), "pid {pid} may use huge pages:\n{status}");
    }
    let key_file = data_dir.join("admin-api-key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the admin key file is private");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), first.key);
    let first_key = first.key.clone();
    terminate(first).await;
    assert!(!pid_file.exists(), "the private cluster stopped with the server");

    let second = start(&data_dir).await;
    assert_eq!(second.key, first_key, "the second start reuses the data and its key");
    admin_call_reaches_the_handler(&second).await;
    terminate(second).await;
    assert!(!pid_file.exists());
}

#[tokio::test]
async fn a_second_dev_server_on_the_same_data_dir_refuses_at_once() {
    let dir = PrivateDataDir::new();
    let data_dir = dir.path();
    let first = start(&data_dir).await;

    let started = std::time::Instant::now();
    let second = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--dev", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .kill_on_drop(true)
        .output();
    let second = tokio::time::timeout(Duration::from_secs(30), second).await.expect("refuses, not waits").unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    let pid = first.child.id().unwrap();
    assert!(
        stderr.contains(&format!("another `tenantry serve --dev` (pid {pid}) is using")),
        "the refusal names the running server: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "refused in {:?}", started.elapsed());

    admin_call_reaches_the_handler(&first).await;
    terminate(first).await;
}
