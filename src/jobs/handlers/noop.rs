//! `tenantry.noop`: does nothing and completes with `{}`. With
//! `{"sleep_ms": n}` (at most 600,000) it first waits that long, stopping
//! early when cancelled. Used to check a deployment's job pipeline end to
//! end, and by the benchmarks and crash tests.

use std::time::Duration;

use super::{Handler, HandlerError, HandlerFuture, JobContext};

/// See the module docs.
pub struct Noop;

impl Handler for Noop {
    fn run(&self, job: JobContext) -> HandlerFuture {
        Box::pin(async move {
            let sleep_ms = match job.job.payload.get("sleep_ms") {
                None => 0,
                Some(value) => value
                    .as_u64()
                    .filter(|ms| *ms <= 600_000)
                    .ok_or_else(|| HandlerError::discard("sleep_ms must be an integer from 0 to 600000"))?,
            };
            if sleep_ms > 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
                    () = job.cancel.cancelled() => return Err(HandlerError::retry("stopped: cancelled")),
                }
            }
            Ok(serde_json::json!({}))
        })
    }
}
