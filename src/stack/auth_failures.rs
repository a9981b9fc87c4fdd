//! Counts the authenticate guard's refusals by reason
//! (`tenantry_auth_failures_total`), without the guard itself knowing about
//! metrics: [`CountAuthFailures`] wraps any [`Guard`] and records the
//! `ErrorInfo` reason of every UNAUTHENTICATED it returns.

use http::Request;
use tonic::body::Body;

use super::guard::Guard;
use crate::{error::ApiError, metrics::Metrics};

/// A guard whose UNAUTHENTICATED refusals are counted.
#[derive(Clone)]
pub struct CountAuthFailures<G> {
    guard: G,
    metrics: Metrics,
}

impl<G> CountAuthFailures<G> {
    /// Wraps `guard`, counting into `metrics`.
    pub fn new(guard: G, metrics: Metrics) -> Self {
        CountAuthFailures { guard, metrics }
    }
}

impl<G: Guard> Guard for CountAuthFailures<G> {
    type Pass = G::Pass;

    async fn check(&self, request: &mut Request<Body>) -> Result<G::Pass, ApiError> {
        let result = self.guard.check(request).await;
        if let Err(ApiError::Unauthenticated { reason, .. }) = &result {
            self.metrics.record_auth_failure(reason.as_str());
        }
        result
    }

    fn admitted(&self, pass: G::Pass, response: &mut http::Response<Body>, handled: super::guard::Handled) {
        self.guard.admitted(pass, response, handled);
    }
}
