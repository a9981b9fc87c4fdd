//! Authenticate: turns the call's credential into a [`Principal`] in the
//! request context. Public methods skip it; everything else needs a valid
//! credential or is refused with UNAUTHENTICATED.

use http::Request;
use tonic::body::Body;

use super::guard::{Guard, context, context_mut};
use crate::{
    auth::{AuthError, Credential, api_key::AdminKeys, credential_from_headers},
    error::ApiError,
    policy::Access,
};

/// See the module docs.
#[derive(Clone)]
pub struct Authenticate {
    admin_keys: AdminKeys,
}

impl Authenticate {
    /// Verifies platform-admin keys against `admin_keys`.
    pub fn new(admin_keys: AdminKeys) -> Self {
        Authenticate { admin_keys }
    }
}

impl Guard for Authenticate {
    async fn check(&self, request: &mut Request<Body>) -> Result<(), ApiError> {
        if context(request)?.method.access == Access::Public {
            return Ok(());
        }
        let principal = match credential_from_headers(request.headers())? {
            Credential::ApiKey(key) => self.admin_keys.authenticate(key).await?,
            // Nothing issues access tokens until identity lands; refusing
            // every one is the only safe answer.
            Credential::AccessToken(_) => return Err(AuthError::InvalidAccessToken.into()),
        };
        tracing::Span::current().record("principal", principal.id());
        context_mut(request)?.principal = Some(principal);
        Ok(())
    }
}
