//! The fault suite (issue 13): real servers, real PostgreSQL and Redis
//! processes, and the faults a bad day brings. Every case asserts the exact
//! answer a client gets, and that no call ever fails as INTERNAL or UNKNOWN.
//!
//! # Layout
//!
//! - [`database`]: PostgreSQL stopped (fast and immediate) and restarted
//!   under writes: no acknowledged write lost, UNAVAILABLE while it is gone,
//!   the first success within a second of its return.
//! - [`redis`]: Redis killed under the Redis rate-limit engine: no errors.
//! - [`malformed`]: the hostile-input corpus, gRPC and REST (NUL in every
//!   text field of every method, generated from the descriptor; framing,
//!   protobuf, sizes, headers, bad JSON, disconnects).
//! - [`overload`]: goodput under a flood relative to the capacity measured
//!   just before it, and a second tenant served through another's flood.
//! - [`shutdown`]: a server with only a WatchJob stream open stops at once.
//! - [`leases`]: `serve --no-workers` still rescues expired external leases.
//! - [`wire`]: raw gRPC requests and reading their answers.

mod database;
mod leases;
mod malformed;
mod overload;
mod redis;
mod shutdown;
mod wire;

use std::collections::BTreeMap;

use tonic::Code;

use crate::harness::TestApp;

/// Answers counted by code.
#[derive(Debug, Default, Clone)]
pub struct Tally(BTreeMap<String, u64>);

impl Tally {
    /// Counts one answer.
    pub fn add(&mut self, code: Code) {
        *self.0.entry(format!("{code:?}")).or_default() += 1;
    }

    /// Answers with `code`.
    pub fn count(&self, code: Code) -> u64 {
        self.0.get(&format!("{code:?}")).copied().unwrap_or(0)
    }

    /// Every answer.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Adds another tally's counts.
    pub fn merge(&mut self, other: &Tally) {
        for (code, n) in &other.0 {
            *self.0.entry(code.clone()).or_default() += n;
        }
    }
}

/// Calls the server answered INTERNAL or UNKNOWN, by its own metrics
/// (`tenantry_rpc_calls_total`), so calls the test did not watch count too.
pub async fn server_errors(app: &TestApp) -> Vec<String> {
    let (status, metrics) = app.http_get("/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    metrics
        .lines()
        .filter(|line| line.starts_with("tenantry_rpc_calls_total{"))
        .filter(|line| line.contains("code=\"INTERNAL\"") || line.contains("code=\"UNKNOWN\""))
        .filter(|line| !line.ends_with(" 0"))
        .map(str::to_owned)
        .collect()
}

/// Calls counted by the server's metrics with `code` (any method).
pub async fn server_count(app: &TestApp, code: &str) -> f64 {
    let (_, metrics) = app.http_get("/metrics").await;
    let label = format!("code=\"{code}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("tenantry_rpc_calls_total{") && line.contains(&label))
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, n)| n.parse::<f64>().ok()))
        .sum()
}
