//! What the tower stack learns about a call, carried in request extensions
//! so handlers read one typed value instead of raw metadata.

use std::{fmt, time::Instant};

use std::sync::Arc;

use crate::{auth::Principal, policy::MethodPolicy, tenancy::TenantRef};

/// Identifies one call in logs, traces and error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// Accepts a caller's id when it is short and plain, so ids can be
    /// correlated across services without letting callers inject log noise.
    pub fn from_header(value: &str) -> Option<Self> {
        let plain = value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        (plain && (1..=64).contains(&value.len())).then(|| RequestId(value.to_owned()))
    }

    /// A new random id.
    pub fn generate() -> Self {
        RequestId(format!("req_{}", crate::ids::random_token(20)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything the stack established about a call, filled in layer by layer.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The call's id, echoed in the `x-request-id` response header.
    pub request_id: RequestId,
    /// The method's policy, from the descriptor.
    pub method: Arc<MethodPolicy>,
    /// When the call must be finished (the smaller of `grpc-timeout` and the ceiling).
    pub deadline: Instant,
    /// Who is calling; `None` only for public methods.
    pub principal: Option<Principal>,
    /// The tenant the call acts in, when it acts in one.
    pub tenant: Option<TenantRef>,
    /// A tenant credential's own tenant, found live by authentication, so
    /// the tenant context layer does not look it up a second time.
    pub credential_tenant: Option<TenantRef>,
}

impl RequestContext {
    /// The principal of an authenticated call.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }
}

/// The context the stack attached to a call; handlers start from it.
pub fn of<T>(request: &tonic::Request<T>) -> Result<&RequestContext, tonic::Status> {
    request.extensions().get::<RequestContext>().ok_or_else(|| {
        tonic::Status::from(crate::error::ApiError::internal("request context missing: the stack did not run"))
    })
}
