//! Credential → principal, for the authenticate guard and IntrospectToken.
//!
//! - Access token: verified by [`TokenService`] (cached), then the user's
//!   current standing comes from [`IdentityCache`]: a disabled or deleted
//!   user's tokens stop working as soon as the change's NOTIFY arrives, and
//!   role changes apply to tokens already issued.
//! - API key: the platform index names the tenant, the tenant schema holds
//!   the key; verified keys are cached and the secret is compared in
//!   constant time on every call. Keys not in the index are platform-admin
//!   keys, cached the same way.
//! - Either way the tenant must be live: deleted tenants' credentials are
//!   UNAUTHENTICATED, suspended ones FAILED_PRECONDITION, on every node as
//!   soon as the tenant directory's NOTIFY arrives.

use std::{sync::Arc, time::Instant};

use chrono::Utc;
use sqlx::PgPool;

use super::{
    access::{IdentityCache, UserAccess, VerifiedKey},
    api_keys::{self, CachedKey, LastUsed},
    tokens::TokenService,
};
use crate::{
    auth::{
        AuthError, Credential, Principal, TenantPrincipal, api_key,
        api_key::{AdminKey, AdminKeys},
    },
    error::ApiError,
    tenancy::{TenantDirectory, TenantId, TenantRef, TenantState, TenantTx},
};

/// Verifies credentials into principals.
#[derive(Clone)]
pub struct Authenticator {
    pool: PgPool,
    tokens: TokenService,
    cache: IdentityCache,
    admin_keys: AdminKeys,
    tenants: TenantDirectory,
    last_used: LastUsed,
}

impl Authenticator {
    /// An authenticator over these handles.
    pub fn new(
        pool: PgPool,
        tokens: TokenService,
        cache: IdentityCache,
        tenants: TenantDirectory,
        last_used: LastUsed,
    ) -> Self {
        Authenticator { admin_keys: AdminKeys::new(pool.clone()), pool, tokens, cache, tenants, last_used }
    }

    /// The token service (issuing, JWKS).
    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// The identity caches.
    pub fn cache(&self) -> &IdentityCache {
        &self.cache
    }

    /// The batched writer of API keys' last use.
    pub fn last_used(&self) -> &LastUsed {
        &self.last_used
    }

    /// The principal a credential stands for.
    pub async fn authenticate(&self, credential: Credential<'_>, deadline: Instant) -> Result<Principal, ApiError> {
        Ok(self.authenticate_in(credential, deadline).await?.0)
    }

    /// The principal a credential stands for, with its tenant (found live)
    /// when it is a tenant credential: the tenant guard then need not look
    /// the same tenant up again.
    pub async fn authenticate_in(
        &self,
        credential: Credential<'_>,
        deadline: Instant,
    ) -> Result<(Principal, Option<TenantRef>), ApiError> {
        match credential {
            Credential::AccessToken(token) => self.user(token, deadline).await,
            Credential::ApiKey(key) => self.api_key(key, deadline).await,
        }
    }

    async fn user(&self, token: &str, deadline: Instant) -> Result<(Principal, Option<TenantRef>), ApiError> {
        let verified = self.tokens.verify(token).map_err(|_| AuthError::InvalidAccessToken)?;
        let tenant = self.live_tenant(&verified.tenant, AuthError::InvalidAccessToken).await?;
        let access = self.cache.user(&verified.user_key, deadline).await?;
        if !access.active {
            return Err(AuthError::InvalidAccessToken.into());
        }
        let principal =
            verified.principal(&access, || user_principal(&verified.tenant, &verified.user_id, &access, &verified));
        Ok((principal, Some(tenant)))
    }

    async fn api_key(&self, key: &str, deadline: Instant) -> Result<(Principal, Option<TenantRef>), ApiError> {
        let parsed = api_key::parse(key)?;
        let cached = match self.cache.key(parsed.public_id) {
            Some(cached) => Some(cached),
            None => {
                let ticket = self.cache.key_ticket();
                // Keys not in the tenant index are platform-admin keys.
                let loaded = match api_keys::tenant_of(&self.pool, parsed.public_id).await? {
                    None => {
                        self.admin_keys.load(parsed.public_id).await.map_err(AuthError::Store)?.map(VerifiedKey::Admin)
                    }
                    Some(tenant) => {
                        self.live_tenant(&tenant, AuthError::InvalidApiKey).await?;
                        let mut tx = TenantTx::begin(&self.pool, &tenant, deadline).await?;
                        let loaded = api_keys::load(&mut tx, &tenant, parsed.public_id).await?;
                        tx.commit().await.map_err(ApiError::from)?;
                        loaded.map(VerifiedKey::Tenant)
                    }
                };
                loaded.map(|key| {
                    let key = Arc::new(key);
                    self.cache.remember_key(ticket, key.clone());
                    key
                })
            }
        };
        let key = match cached.as_deref() {
            Some(VerifiedKey::Admin(admin)) => return Ok((AdminKey::verify(Some(admin), parsed.secret)?, None)),
            Some(VerifiedKey::Tenant(key)) => Some(key),
            None => None,
        };
        // Compare even without a row, so timing does not tell which ids exist.
        let stored = key.map_or(&[0u8; 32][..], |k| &k.secret_hash);
        let matches = api_key::secret_matches(parsed.secret, stored);
        let key = match key {
            Some(key) if matches && key.expires_at.is_none_or(|at| at > Utc::now()) => key,
            _ => return Err(AuthError::InvalidApiKey.into()),
        };
        let tenant = self.live_tenant(&key.tenant, AuthError::InvalidApiKey).await?;
        self.last_used.touch(&key.tenant, &key.key_id);
        Ok((key_principal(key), Some(tenant)))
    }

    /// The cached part of a tenant API-key check (benchmarks): parse, cache, compare, expiry.
    pub fn check_cached_key(&self, key: &str) -> Option<Principal> {
        let parsed = api_key::parse(key).ok()?;
        let cached = self.cache.key(parsed.public_id)?;
        let VerifiedKey::Tenant(cached) = &*cached else { return None };
        let valid = api_key::secret_matches(parsed.secret, &cached.secret_hash)
            && cached.expires_at.is_none_or(|at| at > Utc::now());
        valid.then(|| key_principal(cached))
    }

    /// The credential's tenant, refusing tenants that are gone or suspended.
    async fn live_tenant(&self, tenant: &TenantId, invalid: AuthError) -> Result<TenantRef, ApiError> {
        let found = self.tenants.resolve(tenant.as_str()).await.map_err(ApiError::from)?;
        match found {
            Some(tenant) if tenant.state == TenantState::Active => Ok(tenant),
            Some(tenant) if tenant.state == TenantState::Suspended => Err(ApiError::FailedPrecondition {
                reason: crate::error::Reason::TenantSuspended,
                message: "the credential's tenant is suspended".into(),
            }),
            _ => Err(invalid.into()),
        }
    }
}

/// A user's principal from a verified token and the user's current access.
pub fn user_principal(
    tenant: &TenantId,
    user_id: &str,
    access: &UserAccess,
    token: &super::tokens::VerifiedToken,
) -> Principal {
    let display_name = if access.display_name.is_empty() { &access.email } else { &access.display_name };
    Principal::User(Arc::new(TenantPrincipal {
        tenant: tenant.clone(),
        id: user_id.to_owned(),
        display_name: display_name.clone(),
        roles: access.roles.clone(),
        permissions: access.permissions.clone(),
        issued_at: Some(token.issued_at),
        expires_at: Some(token.expires_at),
        session_id: Some(token.session_id.clone()),
    }))
}

fn key_principal(key: &CachedKey) -> Principal {
    Principal::ApiKey(Arc::new(TenantPrincipal {
        tenant: key.tenant.clone(),
        id: key.key_id.clone(),
        display_name: key.name.clone(),
        roles: Vec::new(),
        permissions: key.scopes.clone(),
        issued_at: Some(key.created_at),
        expires_at: key.expires_at,
        session_id: None,
    }))
}
