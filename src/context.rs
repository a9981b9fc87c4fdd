//! What the tower stack learns about a call, carried in request extensions
//! so handlers read one typed value instead of raw metadata.

use std::{fmt, time::Instant};

use std::sync::Arc;

use crate::{
    auth::Principal,
    error::ApiError,
    policy::{MethodPolicy, TenantScope},
    tenancy::TenantRef,
};

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
        let mut id = String::with_capacity(24);
        id.push_str("req_");
        crate::ids::push_random_token(&mut id, 20);
        RequestId(id)
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
    /// The tenant the call acts in, when it acts in one; read through
    /// [`Self::tenant`] or [`Self::tenant_if_any`].
    tenant: Option<TenantRef>,
    /// A tenant credential's own tenant, found live by authentication, so
    /// the tenant context layer does not look it up a second time.
    pub credential_tenant: Option<TenantRef>,
}

impl RequestContext {
    /// A context for a call to `method`, before any layer learned more.
    pub fn new(request_id: RequestId, method: Arc<MethodPolicy>, deadline: Instant) -> Self {
        RequestContext { request_id, method, deadline, principal: None, tenant: None, credential_tenant: None }
    }

    /// The tenant of a tenant-scoped call. The tenant-context layer refuses
    /// such a call without one, so an error here is a bug (INTERNAL), as is
    /// asking for it on a method that is not tenant-scoped.
    pub fn tenant(&self) -> Result<&TenantRef, ApiError> {
        if self.method.tenant_scope != TenantScope::Required {
            return Err(ApiError::internal(format!("{} is not tenant-scoped", self.method.path)));
        }
        self.tenant
            .as_ref()
            .ok_or_else(|| ApiError::internal("a tenant-scoped call reached its handler without a tenant"))
    }

    /// The tenant of a call that may or may not act in one (a platform
    /// admin's ListJobs, WhoAmI).
    pub fn tenant_if_any(&self) -> Option<&TenantRef> {
        self.tenant.as_ref()
    }

    /// Records the tenant the call acts in (the tenant-context layer; benches).
    pub fn set_tenant(&mut self, tenant: TenantRef) {
        self.tenant = Some(tenant);
    }

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
