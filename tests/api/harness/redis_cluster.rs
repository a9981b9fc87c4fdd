//! Redis instances a test owns: a standalone server it may kill and restart
//! (to test the fallback), and a three-master Redis Cluster on loopback
//! (started once per test process) for the distributed limiter. Each server
//! is a child process on a free port, with a pid file the watchdog uses to
//! stop it should the test process die.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::sync::OnceCell;

use super::watchdog;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tenantry-{label}-{}-{}",
        std::process::id(),
        tenantry::ids::random_token(6).to_lowercase()
    ));
    std::fs::create_dir_all(&dir).expect("create redis dir");
    dir
}

fn start_server(dir: &std::path::Path, port: u16, cluster: bool) -> Child {
    let pid_file = dir.join("redis.pid");
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .arg("--pidfile")
        .arg(&pid_file)
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"));
    if cluster {
        // The bus port is the client port + 10,000 unless set, which is past
        // 65,535 for a quarter of the ports the OS hands out: choose one too.
        command
            .args(["--cluster-enabled", "yes", "--cluster-port", &free_port().to_string(), "--cluster-config-file"])
            .arg(dir.join("nodes.conf"));
    }
    let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("redis-server");
    watchdog::clean_up_after_exit(&pid_file, dir);
    child
}

async fn wait_listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server did not start listening on {port}");
}

/// A standalone Redis a test may stop and start again on the same port.
pub struct OwnedRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnedRedis {
    /// Starts one.
    pub async fn start() -> OwnedRedis {
        let port = free_port();
        let dir = temp_dir("redis-owned");
        let child = start_server(&dir, port, false);
        wait_listening(port).await;
        OwnedRedis { port, dir, child: Some(child) }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (as a crash would) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Starts it again, empty, on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Some(start_server(&self.dir, self.port, false));
        wait_listening(self.port).await;
    }
}

impl Drop for OwnedRedis {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

static CLUSTER: OnceCell<String> = OnceCell::const_new();

/// The URL (`redis-cluster://…`) of this process's three-master cluster.
pub async fn cluster_url() -> &'static str {
    CLUSTER.get_or_init(start_cluster).await
}

async fn start_cluster() -> String {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    for port in &ports {
        // Leaked on purpose: the cluster lives as long as the test process,
        // and the watchdog stops it afterwards.
        std::mem::forget(start_server(&temp_dir("redis-cluster"), *port, true));
    }
    for port in &ports {
        wait_listening(*port).await;
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let output = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli");
    assert!(
        output.status.success(),
        "redis-cli --cluster create failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for port in &ports {
        let mut ok = false;
        for _ in 0..200 {
            let output = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "cluster", "info"])
                .output()
                .expect("redis-cli cluster info");
            if String::from_utf8_lossy(&output.stdout).contains("cluster_state:ok") {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "the cluster node on {port} did not reach cluster_state:ok");
    }
    format!("redis-cluster://{}?node={}&node={}", nodes[0], nodes[1], nodes[2])
}
