//! Redis for tests: `REDIS_URL` when set, otherwise one private
//! `redis-server` per test process on a free loopback port, stopped after
//! the process exits. Tests isolate their keys with their own prefixes.

use std::{net::TcpListener, process::Command, time::Duration};

use tokio::sync::OnceCell;

use super::watchdog;

static URL: OnceCell<String> = OnceCell::const_new();

/// The URL of the test Redis.
pub async fn url() -> &'static str {
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return url;
        }
        start_private().await
    })
    .await
}

async fn start_private() -> String {
    let dir =
        std::env::temp_dir().join(format!("tenantry-redis-{}-{}", std::process::id(), tenantry::ids::random_token(6)));
    std::fs::create_dir_all(&dir).expect("create redis dir");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let pid_file = dir.join("redis.pid");
    let status = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "yes", "--pidfile"])
        .arg(&pid_file)
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .status()
        .expect("redis-server is installed (apt-get install redis-server) or REDIS_URL is set");
    assert!(status.success(), "redis-server failed to start");
    watchdog::clean_up_after_exit(&pid_file, &dir);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return format!("redis://127.0.0.1:{port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("private redis-server did not start listening on {port}");
}
