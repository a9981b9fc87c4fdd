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
//! - `overload.rs`: goodput under a flood relative to the capacity measured
//!   just before it, and a second tenant served through another's flood. It
//!   runs in a test binary of its own (`tests/overload/main.rs`), alone on
//!   the machine: beside this binary's other tests its baseline and its
//!   flood would measure the neighbours as much as the server.
//! - [`counts`]: answers counted by code, and the server's own INTERNAL or
//!   UNKNOWN count.
//! - [`shutdown`]: a server with only a WatchJob stream open stops at once.
//! - [`leases`]: `serve --no-workers` still rescues expired external leases.
//! - [`wire`]: raw gRPC requests and reading their answers.

mod counts;
mod database;
mod leases;
mod malformed;
mod redis;
mod shutdown;
mod wire;

use crate::harness::TestApp;

pub use self::counts::{Tally, server_errors};

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
