//! `tenantry serve` (or `tenantry worker`) as a child process on a test
//! database, ports chosen by the OS, JSON logs captured line by line.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::oneshot,
    task::JoinHandle,
};

use crate::harness::TestDatabase;

/// A running `tenantry serve` and everything it has written so far.
pub struct ServerProcess {
    child: Child,
    /// The bound gRPC address.
    pub grpc: String,
    /// The bound HTTP address (REST gateway, `/metrics`).
    pub http: std::net::SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

/// What the process wrote, once it has exited.
pub struct Captured {
    /// Every stderr line (the logs).
    pub stderr: Vec<String>,
    /// Every stdout line.
    pub stdout: Vec<String>,
}

impl Captured {
    /// stdout and stderr together, for secret scans.
    pub fn all(&self) -> String {
        let mut text = self.stdout.join("\n");
        text.push('\n');
        text.push_str(&self.stderr.join("\n"));
        text
    }

    /// The stderr lines that are JSON objects.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stderr.iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }
}

fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    mut on_serving: Option<oneshot::Sender<(String, String)>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // `serve` logs "serving", `worker` "serving job workers".
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && json["message"].as_str().is_some_and(|m| m.starts_with("serving"))
                && let Some(sender) = on_serving.take()
            {
                let address = |name: &str| json[name].as_str().unwrap_or_default().to_owned();
                sender.send((address("grpc"), address("http"))).ok();
            }
            into.lock().unwrap().push(line);
        }
    })
}

impl ServerProcess {
    /// Starts `tenantry serve --migrate` on `database` with JSON logs and
    /// the extra environment, and waits for its "serving" line.
    pub async fn start(database: &TestDatabase, env: &HashMap<&str, String>) -> ServerProcess {
        let args = ["serve", "--migrate", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"];
        Self::run(&args, database, env).await
    }

    /// Starts `tenantry worker` the same way (its HTTP listener only; `grpc`
    /// stays empty) and waits for its "serving job workers" line.
    pub async fn start_worker(database: &TestDatabase, env: &HashMap<&str, String>) -> ServerProcess {
        Self::run(&["worker", "--http-addr", "127.0.0.1:0"], database, env).await
    }

    async fn run(args: &[&str], database: &TestDatabase, env: &HashMap<&str, String>) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tenantry"));
        command
            .args(args)
            .env_remove("REDIS_URL")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("RUST_LOG")
            .env("DATABASE_URL", &database.url)
            .env("TENANTRY_LOG_FORMAT", "json")
            // The first connection can take longer than the 250 ms default
            // on a loaded test machine; the start is not what is tested.
            .env("TENANTRY_DB_ACQUIRE_TIMEOUT", "5s")
            // `serve` needs a signing key for access tokens.
            .env("TENANTRY_JWT_PRIVATE_KEY", &crate::harness::identity::signing_key().private_pem)
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("run tenantry");
        let (stderr, stdout) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (serving, grpc) = oneshot::channel();
        let readers = vec![
            collect(child.stderr.take().unwrap(), stderr.clone(), Some(serving)),
            collect(child.stdout.take().unwrap(), stdout.clone(), None),
        ];
        let (grpc, http) = match tokio::time::timeout(Duration::from_secs(60), grpc).await {
            Ok(Ok(addrs)) => addrs,
            _ => panic!("the server did not start: {:?}", stderr.lock().unwrap()),
        };
        let http = http.parse().expect("the serving line names the HTTP address");
        ServerProcess { child, grpc, http, stderr, stdout, readers }
    }

    /// The process id (job leases name it in their worker id).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Stops the server with SIGTERM, waits for a clean exit, and returns
    /// everything it wrote.
    pub async fn terminate(mut self) -> Captured {
        let pid = self.child.id().expect("running").to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.unwrap().unwrap();
        for reader in self.readers.drain(..) {
            reader.await.unwrap();
        }
        let captured = Captured {
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
        };
        assert!(status.success(), "exit status {status}: {}", captured.all());
        captured
    }
}
