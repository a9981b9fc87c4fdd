//! Authenticate: turns the call's credential into a [`Principal`] in the
//! request context. Public methods skip it; everything else needs a valid
//! credential or is refused with UNAUTHENTICATED.
//!
//! Access tokens (RS256 JWTs) and tenant API keys are verified by
//! [`Authenticator`] (cached, bounded, invalidated across nodes by NOTIFY);
//! keys that are not tenant keys are checked as platform-admin keys.
//!
//! [`Principal`]: crate::auth::Principal

use http::Request;
use tonic::body::Body;

use super::guard::{Guard, context, context_mut};
use crate::{auth::credential_from_headers, error::ApiError, identity::Authenticator, policy::Access};

/// See the module docs.
#[derive(Clone)]
pub struct Authenticate {
    authenticator: Authenticator,
}

impl Authenticate {
    /// Verifies credentials with `authenticator`.
    pub fn new(authenticator: Authenticator) -> Self {
        Authenticate { authenticator }
    }
}

impl Guard for Authenticate {
    type Pass = ();

    async fn check(&self, request: &mut Request<Body>) -> Result<(), ApiError> {
        let context = context(request)?;
        if context.method.access == Access::Public {
            return Ok(());
        }
        let deadline = context.deadline;
        let credential = credential_from_headers(request.headers())?;
        let (principal, tenant) = self.authenticator.authenticate_in(credential, deadline).await?;
        tracing::Span::current().record("principal", principal.id());
        let context = context_mut(request)?;
        context.principal = Some(principal);
        context.credential_tenant = tenant;
        Ok(())
    }
}
