//! What the fault cases count: answers by code on the client's side, and
//! INTERNAL or UNKNOWN answers on the server's. Shared by the fault suite in
//! the `api` test binary and by the overload case in its own binary
//! (`tests/overload/main.rs`).

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
