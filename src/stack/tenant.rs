//! Tenant context: decides which tenant a call acts in and puts it in the
//! request context. The tenant comes from the credential; a platform admin
//! names it with `x-tenant-id` (an id or a slug). Unknown and deleted tenants
//! are NOT_FOUND; a suspended tenant is FAILED_PRECONDITION for every
//! tenant-scoped call.

use http::Request;
use tonic::body::Body;

use super::guard::{Guard, context, context_mut};
use crate::{
    error::ApiError,
    policy::TenantScope,
    tenancy::{TenantDirectory, TenantState},
};

/// The header a platform admin names a tenant with.
pub const TENANT_HEADER: &str = "x-tenant-id";
/// [`TENANT_HEADER`] parsed once, for the lookup every call makes.
pub(crate) const TENANT_HEADER_NAME: http::HeaderName = http::HeaderName::from_static(TENANT_HEADER);

/// See the module docs.
#[derive(Clone)]
pub struct TenantContext {
    directory: TenantDirectory,
}

impl TenantContext {
    /// Resolves tenants through `directory`.
    pub fn new(directory: TenantDirectory) -> Self {
        TenantContext { directory }
    }
}

impl Guard for TenantContext {
    type Pass = ();

    async fn check(&self, request: &mut Request<Body>) -> Result<(), ApiError> {
        let named = match request.headers().get(TENANT_HEADER_NAME) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .filter(|v| !v.is_empty() && v.len() <= 64)
                    .ok_or_else(|| ApiError::invalid(TENANT_HEADER, "must be a tenant id or slug"))?
                    .to_owned(),
            ),
        };
        let context = context(request)?;
        let scope = context.method.tenant_scope;
        if scope == TenantScope::None {
            return match named {
                Some(_) => Err(ApiError::invalid(TENANT_HEADER, "this method is platform-level and takes no tenant")),
                None => Ok(()),
            };
        }
        let Some(principal) = context.principal() else {
            return Ok(());
        };
        // The credential's own tenant (a shared string: the clone copies nothing).
        let own = principal.tenant().cloned();
        // A tenant-bound credential acts in its own tenant; naming another
        // one is refused, not silently ignored.
        if let (Some(own), Some(named)) = (&own, named.as_deref())
            && named != own.as_str()
        {
            let resolved = self.directory.resolve(named).await.map_err(ApiError::from)?;
            if resolved.is_none_or(|t| &t.id != own) {
                return Err(ApiError::PermissionDenied {
                    reason: crate::error::Reason::TenantMismatch,
                    message: "the credential belongs to another tenant than x-tenant-id names".into(),
                });
            }
        }
        let key: &str = match (&own, named.as_deref()) {
            (Some(own), _) => own.as_str(),
            (None, Some(named)) => named,
            (None, None) if scope == TenantScope::Required => {
                return Err(ApiError::invalid(
                    TENANT_HEADER,
                    "platform admins must name the tenant of a tenant-scoped call",
                ));
            }
            (None, None) => return Ok(()),
        };
        // A tenant credential's tenant was found live by authentication.
        let known = context.credential_tenant.as_ref().filter(|t| t.id.as_str() == key).cloned();
        let tenant = match known {
            Some(tenant) => tenant,
            None => self
                .directory
                .resolve(key)
                .await
                .map_err(ApiError::from)?
                .filter(|t| t.state != TenantState::Deleted)
                .ok_or_else(|| ApiError::NotFound { resource: format!("tenant {key}") })?,
        };
        if tenant.state == TenantState::Suspended {
            return Err(ApiError::FailedPrecondition {
                reason: crate::error::Reason::TenantSuspended,
                message: format!("tenant {} is suspended", tenant.slug),
            });
        }
        tracing::Span::current().record("tenant", tenant.id.as_str());
        context_mut(request)?.set_tenant(tenant);
        Ok(())
    }
}
