//! Authorize: enforces the method's declared policy (from the proto) against
//! the principal: platform-admin-only methods, and the permission a method
//! requires.

use http::Request;
use tonic::body::Body;

use super::guard::{Guard, context};
use crate::{error::ApiError, policy::Access};

/// See the module docs.
#[derive(Clone, Copy, Default)]
pub struct Authorize;

impl Guard for Authorize {
    type Pass = ();

    async fn check(&self, request: &mut Request<Body>) -> Result<(), ApiError> {
        let context = context(request)?;
        let method = &context.method;
        if method.access != Access::Public {
            let principal =
                context.principal().ok_or_else(|| ApiError::internal("authorize reached without a principal"))?;
            if method.platform_admin_only && !principal.is_platform_admin() {
                return Err(ApiError::PermissionDenied {
                    reason: crate::error::Reason::PlatformAdminRequired,
                    message: format!("{} is for platform admins", method.method),
                });
            }
            if let Access::Permission(permission) = &method.access
                && !principal.has_permission(permission)
            {
                return Err(ApiError::PermissionDenied {
                    reason: crate::error::Reason::PermissionMissing,
                    message: format!("{} needs the `{permission}` permission", method.method),
                });
            }
        }
        Ok(())
    }
}
