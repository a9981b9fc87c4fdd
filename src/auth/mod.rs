//! Who is calling: principals, and how a credential in the request metadata
//! becomes one.
//!
//! # Layout
//!
//! - this file: [`Principal`], credential extraction from headers, [`AuthError`].
//! - [`api_key`]: the API-key format, hashing and the platform-admin key store.
//!
//! Tenant principals (users and tenant API keys) are made by
//! [`crate::identity::Authenticator`].

pub mod api_key;

use std::{collections::BTreeSet, sync::Arc};

use chrono::{DateTime, Utc};
use http::HeaderMap;

use crate::{error::ApiError, tenancy::TenantId};

/// The API-key header, parsed once (every call looks for it).
pub(crate) const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An operator of the whole platform, holding every permission.
    PlatformAdmin {
        /// The API key's id (`key_…`).
        key_id: String,
        /// The key's label, for audit and logs.
        name: String,
    },
    /// A tenant's user, authenticated by an access token.
    User(Arc<TenantPrincipal>),
    /// A tenant's API key.
    ApiKey(Arc<TenantPrincipal>),
}

/// A principal bound to one tenant, with what it may do there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPrincipal {
    /// The only tenant it can act in.
    pub tenant: TenantId,
    /// `usr_…` or `key_…`.
    pub id: String,
    /// The user's display name (or email), or the key's name.
    pub display_name: String,
    /// Role ids bound to a user; empty for keys.
    pub roles: Vec<String>,
    /// The user's roles' permissions, or the key's scopes.
    pub permissions: Arc<BTreeSet<String>>,
    /// When the credential was issued (token `iat`, key creation).
    pub issued_at: Option<DateTime<Utc>>,
    /// When the credential expires, if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// The session (refresh family) a user's token belongs to.
    pub session_id: Option<String>,
}

impl Principal {
    /// The principal's id, for logs and audit.
    pub fn id(&self) -> &str {
        match self {
            Principal::PlatformAdmin { key_id, .. } => key_id,
            Principal::User(p) | Principal::ApiKey(p) => &p.id,
        }
    }

    /// The tenant-bound details of a user or tenant API key.
    pub fn tenant_principal(&self) -> Option<&TenantPrincipal> {
        match self {
            Principal::PlatformAdmin { .. } => None,
            Principal::User(p) | Principal::ApiKey(p) => Some(p),
        }
    }

    /// The tenant the principal belongs to; `None` for platform admins, who
    /// name a tenant per call with `x-tenant-id`.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Principal::PlatformAdmin { .. } => None,
            Principal::User(p) | Principal::ApiKey(p) => Some(&p.tenant),
        }
    }

    /// Whether the principal operates the whole platform.
    pub fn is_platform_admin(&self) -> bool {
        matches!(self, Principal::PlatformAdmin { .. })
    }

    /// Whether the principal holds `permission` in the call's tenant.
    pub fn has_permission(&self, permission: &str) -> bool {
        match self {
            Principal::PlatformAdmin { .. } => true,
            Principal::User(p) | Principal::ApiKey(p) => p.permissions.contains(permission),
        }
    }
}

/// A credential as presented, before verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// An API key (`tnty_<public id>_<secret>`).
    ApiKey(&'a str),
    /// Any other bearer token (a JWT access token).
    AccessToken(&'a str),
}

/// Why a credential was not accepted. The messages never echo the credential.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credential: send `authorization: Bearer <token>` or `x-api-key: <key>`")]
    Missing,
    #[error("malformed credential: {0}")]
    Malformed(&'static str),
    #[error("invalid, expired or revoked API key")]
    InvalidApiKey,
    #[error("invalid access token")]
    InvalidAccessToken,
    #[error("credential store unavailable")]
    Store(#[from] sqlx::Error),
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let reason = match error {
            AuthError::Missing => crate::error::Reason::CredentialMissing,
            AuthError::Malformed(_) => crate::error::Reason::CredentialMalformed,
            AuthError::InvalidApiKey => crate::error::Reason::ApiKeyInvalid,
            AuthError::InvalidAccessToken => crate::error::Reason::AccessTokenInvalid,
            AuthError::Store(error) => return error.into(),
        };
        ApiError::Unauthenticated { reason, message: error.to_string() }
    }
}

/// Finds the credential in `authorization: Bearer …` or `x-api-key`.
/// Sending both, or anything but ASCII, is refused rather than guessed at.
pub fn credential_from_headers(headers: &HeaderMap) -> Result<Credential<'_>, AuthError> {
    let bearer = match headers.get(http::header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| AuthError::Malformed("authorization is not ASCII"))?;
            let (scheme, token) =
                value.split_once(' ').ok_or(AuthError::Malformed("authorization must be `Bearer <token>`"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::Malformed("authorization scheme must be Bearer"));
            }
            Some(token.trim())
        }
    };
    let api_key = match headers.get(X_API_KEY) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| AuthError::Malformed("x-api-key is not ASCII"))?.trim()),
    };
    let token = match (bearer, api_key) {
        (Some(_), Some(_)) => return Err(AuthError::Malformed("send authorization or x-api-key, not both")),
        (Some(token), None) | (None, Some(token)) => token,
        (None, None) => return Err(AuthError::Missing),
    };
    if token.is_empty() {
        return Err(AuthError::Malformed("the credential is empty"));
    }
    if token.len() > 8 * 1024 {
        return Err(AuthError::Malformed("the credential is too long"));
    }
    Ok(if api_key::looks_like_api_key(token) { Credential::ApiKey(token) } else { Credential::AccessToken(token) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn bearer_and_x_api_key_are_both_accepted() {
        let key = "tnty_abcdefghijklmnop_secret";
        assert_eq!(
            credential_from_headers(&headers(&[("authorization", &format!("Bearer {key}"))])).unwrap(),
            Credential::ApiKey(key)
        );
        assert_eq!(credential_from_headers(&headers(&[("x-api-key", key)])).unwrap(), Credential::ApiKey(key));
        assert_eq!(
            credential_from_headers(&headers(&[("authorization", "bearer a.b.c")])).unwrap(),
            Credential::AccessToken("a.b.c")
        );
    }

    #[test]
    fn missing_ambiguous_and_odd_credentials_are_refused() {
        assert!(matches!(credential_from_headers(&HeaderMap::new()), Err(AuthError::Missing)));
        assert!(matches!(
            credential_from_headers(&headers(&[("authorization", "Basic dXNlcjpwYXNz")])),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            credential_from_headers(&headers(&[("authorization", "Bearer x"), ("x-api-key", "y")])),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            credential_from_headers(&headers(&[("authorization", "Bearer ")])),
            Err(AuthError::Malformed(_))
        ));
    }
}
