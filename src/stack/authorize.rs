//! Authorize: enforces the method's declared policy (from the proto) against
//! the principal, then refuses methods whose service this build does not
//! serve yet with UNIMPLEMENTED naming them, so callers see the same
//! authentication and authorization answers before and after they land.

use std::{collections::HashSet, sync::Arc};

use http::Request;
use tonic::body::Body;

use super::guard::{Guard, context};
use crate::{error::ApiError, policy::Access};

/// See the module docs.
#[derive(Clone)]
pub struct Authorize {
    mounted: Arc<HashSet<String>>,
}

impl Authorize {
    /// `mounted` names the services this server serves.
    pub fn new(mounted: Arc<HashSet<String>>) -> Self {
        Authorize { mounted }
    }
}

impl Guard for Authorize {
    async fn check(&self, request: &mut Request<Body>) -> Result<(), ApiError> {
        let context = context(request)?;
        let method = &context.method;
        if method.access != Access::Public {
            let principal =
                context.principal().ok_or_else(|| ApiError::internal("authorize reached without a principal"))?;
            if method.platform_admin_only && !principal.is_platform_admin() {
                return Err(ApiError::PermissionDenied {
                    reason: "PLATFORM_ADMIN_REQUIRED",
                    message: format!("{} is for platform admins", method.method),
                });
            }
            if let Access::Permission(permission) = &method.access
                && !principal.has_permission(permission)
            {
                return Err(ApiError::PermissionDenied {
                    reason: "PERMISSION_MISSING",
                    message: format!("{} needs the `{permission}` permission", method.method),
                });
            }
        }
        if !self.mounted.contains(&method.service) {
            return Err(ApiError::Unimplemented { method: format!("{}.{}", method.service, method.method) });
        }
        Ok(())
    }
}
