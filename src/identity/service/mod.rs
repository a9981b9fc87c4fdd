//! AuthService: thin handlers that validate the request into domain values,
//! check what the caller may grant, run the change and its audit event in
//! one tenant transaction, and map the result back.
//!
//! # Layout
//!
//! - this file: [`AuthApi`], shared helpers, the trait impl delegating to:
//! - [`sessions`]: Login, RefreshToken, Logout, WhoAmI, IntrospectToken, GetJwks.
//! - [`users`]: CreateUser … ChangePassword, and the owner of a new tenant.
//! - [`keys`]: CreateApiKey, ListApiKeys, RevokeApiKey.
//! - [`roles`]: roles, role bindings, and ListAuditEvents.
//! - [`convert`]: domain values → protobuf messages.

mod convert;
mod keys;
mod roles;
mod sessions;
mod users;

use std::{collections::BTreeSet, net::IpAddr, sync::Arc, time::Duration};

use sqlx::PgPool;
use tonic::{Request, Response, Status};

pub use self::users::{create_owner, hash_owner_password};
use super::{
    Authenticator, IdentityConfig, IdentityError, audit::Actor, passwords::PasswordHasherPool, throttle::AddressLimiter,
};
use crate::{
    auth::Principal,
    context::{self, RequestContext},
    error::ApiError,
    pagination::PageTokens,
    proto::tenantry::v1::{self as pb, auth_service_server::AuthService},
    tenancy::{TenantDirectory, TenantRef, TenantTx},
};

type Reply<T> = Result<Response<T>, Status>;

/// The AuthService implementation.
#[derive(Clone)]
pub struct AuthApi {
    pool: PgPool,
    auth: Authenticator,
    hasher: PasswordHasherPool,
    tenants: TenantDirectory,
    addresses: AddressLimiter,
    refresh_ttl: Duration,
    trust_forwarded_for: bool,
    /// Every permission any method declares (what a platform admin holds).
    all_permissions: Arc<BTreeSet<String>>,
    /// Signs and reads the page tokens of the identity lists.
    page_tokens: PageTokens,
}

impl AuthApi {
    /// Handlers over these handles.
    pub fn new(
        pool: PgPool,
        auth: Authenticator,
        hasher: PasswordHasherPool,
        tenants: TenantDirectory,
        config: &IdentityConfig,
        policies: &crate::policy::PolicyTable,
        page_tokens: PageTokens,
    ) -> Self {
        let all_permissions = policies
            .iter()
            .filter_map(|p| match &p.access {
                crate::policy::Access::Permission(permission) => Some(permission.clone()),
                _ => None,
            })
            .collect();
        AuthApi {
            pool,
            auth,
            hasher,
            tenants,
            addresses: AddressLimiter::new(config.login_address_burst, config.login_address_per_minute),
            refresh_ttl: config.refresh_token_ttl,
            trust_forwarded_for: config.trust_forwarded_for,
            all_permissions: Arc::new(all_permissions),
            page_tokens,
        }
    }

    /// The client's address: the TCP peer, or the last `x-forwarded-for`
    /// entry (the one the trusted proxy appended) when configured to trust it.
    fn client_address<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        if self.trust_forwarded_for
            && let Some(forwarded) = request.metadata().get("x-forwarded-for").and_then(|v| v.to_str().ok())
            && let Some(last) = forwarded.rsplit(',').next()
            && let Ok(address) = last.trim().parse()
        {
            return Some(address);
        }
        request.remote_addr().map(|a| a.ip())
    }

    /// The audit actor of a call.
    fn actor<T>(&self, request: &Request<T>) -> Result<Actor, Status> {
        let mut actor = super::audit::actor_of(context::of(request)?);
        actor.client_address = self.client_address(request).map(|a| a.to_string()).unwrap_or_default();
        Ok(actor)
    }

    /// A transaction in the call's tenant.
    async fn begin(&self, ctx: &RequestContext) -> Result<(TenantRef, TenantTx), ApiError> {
        let tenant = ctx.tenant()?.clone();
        let tx = TenantTx::begin(&self.pool, &tenant.id, ctx.deadline).await.map_err(ApiError::from)?;
        Ok((tenant, tx))
    }

    /// The caller's permissions in the call's tenant.
    fn caller_permissions(&self, ctx: &RequestContext) -> Arc<BTreeSet<String>> {
        match ctx.principal() {
            Some(Principal::User(p)) | Some(Principal::ApiKey(p)) => p.permissions.clone(),
            Some(Principal::PlatformAdmin { .. }) => self.all_permissions.clone(),
            None => Arc::default(),
        }
    }

    /// Refuses when the caller lacks any of `wanted` (no escalation).
    fn caller_holds(&self, ctx: &RequestContext, wanted: &BTreeSet<String>) -> Result<(), IdentityError> {
        let held = self.caller_permissions(ctx);
        let missing: Vec<&str> = wanted.iter().filter(|p| !held.contains(*p)).map(String::as_str).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(IdentityError::Denied(format!("you cannot grant permissions you lack: {}", missing.join(", "))))
        }
    }
}

/// Whether the caller is a tenant owner (or a platform admin).
fn caller_is_owner(ctx: &RequestContext) -> bool {
    match ctx.principal() {
        Some(Principal::PlatformAdmin { .. }) => true,
        Some(Principal::User(p)) => p.roles.iter().any(|r| r == super::roles::OWNER),
        _ => false,
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        self.do_login(request).await
    }
    async fn refresh_token(&self, request: Request<pb::RefreshTokenRequest>) -> Reply<pb::RefreshTokenResponse> {
        self.do_refresh(request).await
    }
    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Reply<pb::LogoutResponse> {
        self.do_logout(request).await
    }
    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Reply<pb::WhoAmIResponse> {
        self.do_who_am_i(request).await
    }
    async fn introspect_token(
        &self,
        request: Request<pb::IntrospectTokenRequest>,
    ) -> Reply<pb::IntrospectTokenResponse> {
        self.do_introspect(request).await
    }
    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Reply<pb::GetJwksResponse> {
        Ok(Response::new(self.jwks()))
    }
    async fn create_user(&self, request: Request<pb::CreateUserRequest>) -> Reply<pb::CreateUserResponse> {
        self.do_create_user(request).await
    }
    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Reply<pb::GetUserResponse> {
        self.do_get_user(request).await
    }
    async fn list_users(&self, request: Request<pb::ListUsersRequest>) -> Reply<pb::ListUsersResponse> {
        self.do_list_users(request).await
    }
    async fn update_user(&self, request: Request<pb::UpdateUserRequest>) -> Reply<pb::UpdateUserResponse> {
        self.do_update_user(request).await
    }
    async fn delete_user(&self, request: Request<pb::DeleteUserRequest>) -> Reply<pb::DeleteUserResponse> {
        self.do_delete_user(request).await
    }
    async fn change_password(&self, request: Request<pb::ChangePasswordRequest>) -> Reply<pb::ChangePasswordResponse> {
        self.do_change_password(request).await
    }
    async fn create_api_key(&self, request: Request<pb::CreateApiKeyRequest>) -> Reply<pb::CreateApiKeyResponse> {
        self.do_create_api_key(request).await
    }
    async fn list_api_keys(&self, request: Request<pb::ListApiKeysRequest>) -> Reply<pb::ListApiKeysResponse> {
        self.do_list_api_keys(request).await
    }
    async fn revoke_api_key(&self, request: Request<pb::RevokeApiKeyRequest>) -> Reply<pb::RevokeApiKeyResponse> {
        self.do_revoke_api_key(request).await
    }
    async fn create_role(&self, request: Request<pb::CreateRoleRequest>) -> Reply<pb::CreateRoleResponse> {
        self.do_create_role(request).await
    }
    async fn list_roles(&self, request: Request<pb::ListRolesRequest>) -> Reply<pb::ListRolesResponse> {
        self.do_list_roles(request).await
    }
    async fn update_role(&self, request: Request<pb::UpdateRoleRequest>) -> Reply<pb::UpdateRoleResponse> {
        self.do_update_role(request).await
    }
    async fn delete_role(&self, request: Request<pb::DeleteRoleRequest>) -> Reply<pb::DeleteRoleResponse> {
        self.do_delete_role(request).await
    }
    async fn assign_role(&self, request: Request<pb::AssignRoleRequest>) -> Reply<pb::AssignRoleResponse> {
        self.do_assign_role(request).await
    }
    async fn unassign_role(&self, request: Request<pb::UnassignRoleRequest>) -> Reply<pb::UnassignRoleResponse> {
        self.do_unassign_role(request).await
    }
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Reply<pb::ListAuditEventsResponse> {
        self.do_list_audit_events(request).await
    }
}
