//! `tenantry serve --dev`, the README's first command, run as a real process:
//! boots on an empty data directory, again on the same one, and stops its
//! private PostgreSQL on SIGTERM.

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

#[tokio::test]
async fn serve_dev_boots_on_an_empty_data_dir_and_again_on_the_same_one() {
    let dir = tempfile::tempdir().unwrap();
    // PostgreSQL may run as another user (when we are root): let it in.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("data");

    let first = start(&data_dir).await;
    admin_call_reaches_the_handler(&first).await;
    let key_file = data_dir.join("admin-api-key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the admin key file is private");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), first.key);
    let first_key = first.key.clone();
    terminate(first).await;
    let pid_file = data_dir.join("postgres/data/postmaster.pid");
    assert!(!pid_file.exists(), "the private cluster stopped with the server");

    let second = start(&data_dir).await;
    assert_eq!(second.key, first_key, "the second start reuses the data and its key");
    admin_call_reaches_the_handler(&second).await;
    terminate(second).await;
    assert!(!pid_file.exists());
}
