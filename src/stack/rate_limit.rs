//! The rate-limit slot of the stack. It sits after tenant context (limits are
//! per tenant) and before authorize (so refused calls cost too). Until the
//! per-tenant limiter lands (governor in process, GCRA on Redis) it admits
//! every call; the load-shedding layer still bounds the whole process.

use http::Request;
use tonic::body::Body;

use super::guard::Guard;
use crate::error::ApiError;

/// See the module docs.
#[derive(Clone, Default)]
pub struct RateLimit;

impl Guard for RateLimit {
    async fn check(&self, _request: &mut Request<Body>) -> Result<(), ApiError> {
        Ok(())
    }
}
