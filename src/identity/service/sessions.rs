//! Login, RefreshToken, Logout, WhoAmI, IntrospectToken and GetJwks.

use std::time::Instant;

use serde_json::json;
use tonic::{Request, Response};

use super::{AuthApi, Reply, convert};
use crate::{
    auth::{Credential, api_key},
    context,
    error::ApiError,
    identity::{
        IdentityError, access,
        audit::{self, Event, Outcome},
        refresh::{self, Rotation},
        throttle,
        users::{self, User, UserState},
    },
    proto::{tenantry::v1 as pb, timestamp},
    tenancy::{TenantRef, TenantState, TenantTx},
};

/// The one answer for unknown users, wrong passwords and disabled users.
const BAD_CREDENTIALS: &str = "invalid email or password";
/// Longest password accepted for evaluation (bytes); longer is not a guess.
const MAX_PASSWORD_BYTES: usize = 1024;

/// Tokens of a successful login or refresh.
struct Session {
    access_token: String,
    expire_time: prost_types::Timestamp,
    expires_in: i64,
    refresh: refresh::Issued,
}

impl AuthApi {
    fn issue(&self, tenant: &TenantRef, user_id: &str, refresh: refresh::Issued) -> Result<Session, ApiError> {
        let (access_token, expires_at) =
            self.auth.tokens().issue(&tenant.id, user_id, &refresh.family_id).map_err(ApiError::internal)?;
        Ok(Session {
            access_token,
            expire_time: timestamp(expires_at),
            expires_in: self.auth.tokens().ttl().as_secs() as i64,
            refresh,
        })
    }

    /// The tenant for a login or refresh: suspended is FAILED_PRECONDITION,
    /// unknown or deleted is `None`.
    async fn session_tenant(&self, key: &str) -> Result<Option<TenantRef>, ApiError> {
        let tenant = self.tenants.resolve(key).await.map_err(ApiError::from)?;
        match tenant {
            Some(t) if t.state == TenantState::Suspended => Err(ApiError::FailedPrecondition {
                reason: crate::error::Reason::TenantSuspended,
                message: format!("tenant {} is suspended", t.slug),
            }),
            Some(t) if t.state == TenantState::Active => Ok(Some(t)),
            _ => Ok(None),
        }
    }

    pub(super) async fn do_login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        let deadline = context::of(&request)?.deadline;
        let mut actor = self.actor(&request)?;
        let address = self.client_address(&request);
        let message = request.into_inner();
        if message.tenant.is_empty() || message.tenant.len() > 64 {
            return Err(ApiError::invalid("tenant", "must be a tenant id or slug").into());
        }
        let email = users::parse_email("email", &message.email)?;
        if message.password.is_empty() || message.password.len() > MAX_PASSWORD_BYTES {
            return Err(ApiError::invalid("password", "must be 1 to 1024 bytes").into());
        }
        if let Some(address) = address {
            self.addresses.check(address)?;
        }
        let bad_credentials = || IdentityError::Unauthenticated(BAD_CREDENTIALS);
        let Some(tenant) = self.session_tenant(&message.tenant).await? else {
            // Same work as a wrong password, so timing does not reveal tenants.
            self.hasher.verify(&message.password, None).await?;
            return Err(bad_credentials().into());
        };

        // Reserve the attempt durably before evaluating it.
        let mut tx = TenantTx::begin(&self.pool, &tenant.id, deadline).await.map_err(ApiError::from)?;
        throttle::reserve(&mut tx, &email).await?;
        if rand::random::<u8>() == 0 {
            throttle::prune(&mut tx).await?;
        }
        let found = users::find_for_login(&mut tx, &email).await?;
        tx.commit().await.map_err(ApiError::from)?;

        let matches = self.hasher.verify(&message.password, found.as_ref().map(|(_, hash)| hash.as_str())).await?;
        let user = found.map(|(user, _)| user);
        let active = user.as_ref().is_some_and(|u| u.state == UserState::Active);

        let mut tx = TenantTx::begin(&self.pool, &tenant.id, deadline).await.map_err(ApiError::from)?;
        let (Some(user), true, true) = (user.clone(), matches, active) else {
            throttle::record_failure(&mut tx, &email).await?;
            let reason = match (&user, matches) {
                (None, _) => "unknown_user",
                (Some(_), false) => "wrong_password",
                (Some(_), true) => "user_disabled",
            };
            let target = user.as_ref().map(|u| u.id.as_str()).unwrap_or_default();
            let event = Event::success("auth.login.failed", "user", target)
                .outcome(Outcome::Failure)
                .with(json!({ "email": email, "reason": reason }));
            audit::record(&mut tx, &actor, event).await?;
            tx.commit().await.map_err(ApiError::from)?;
            return Err(bad_credentials().into());
        };
        throttle::record_success(&mut tx, &email).await?;
        users::touch_login(&mut tx, &user.id).await?;
        let issued = refresh::start_family(&mut tx, &tenant.id, &user.id, self.refresh_ttl).await?;
        (actor.kind, actor.id) = ("user", user.id.clone());
        let event =
            Event::success("auth.login.succeeded", "user", &user.id).with(json!({ "session_id": issued.family_id }));
        audit::record(&mut tx, &actor, event).await?;
        tx.commit().await.map_err(ApiError::from)?;
        let session = self.issue(&tenant, &user.id, issued)?;
        let user = User { last_login_at: Some(chrono::Utc::now()), ..user };
        Ok(Response::new(pb::LoginResponse {
            access_token: session.access_token,
            token_type: "Bearer".into(),
            expires_in: session.expires_in,
            expire_time: Some(session.expire_time),
            refresh_token: session.refresh.token,
            refresh_expire_time: Some(timestamp(session.refresh.expires_at)),
            user: Some(convert::user(user)),
            tenant_id: tenant.id.to_string(),
        }))
    }

    pub(super) async fn do_refresh(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Reply<pb::RefreshTokenResponse> {
        let deadline = context::of(&request)?.deadline;
        let actor = self.actor(&request)?;
        let token = request.into_inner().refresh_token;
        if token.is_empty() {
            return Err(ApiError::invalid("refresh_token", "is required").into());
        }
        let invalid = || IdentityError::Unauthenticated("invalid, expired or revoked refresh token");
        let Some(tenant_id) = refresh::tenant_of(&token) else { return Err(invalid().into()) };
        let Some(tenant) = self.session_tenant(tenant_id.as_str()).await? else { return Err(invalid().into()) };
        let mut tx = TenantTx::begin(&self.pool, &tenant.id, deadline).await.map_err(ApiError::from)?;
        match refresh::rotate(&mut tx, &tenant.id, &token).await? {
            Rotation::Rotated { user_id, issued } => {
                let user = users::get(&mut tx, &user_id).await?.filter(|u| u.state == UserState::Active);
                let Some(user) = user else {
                    refresh::revoke_family(&mut tx, &issued.family_id, "user_inactive").await?;
                    tx.commit().await.map_err(ApiError::from)?;
                    return Err(invalid().into());
                };
                tx.commit().await.map_err(ApiError::from)?;
                let session = self.issue(&tenant, &user.id, issued)?;
                Ok(Response::new(pb::RefreshTokenResponse {
                    access_token: session.access_token,
                    token_type: "Bearer".into(),
                    expires_in: session.expires_in,
                    expire_time: Some(session.expire_time),
                    refresh_token: session.refresh.token,
                    refresh_expire_time: Some(timestamp(session.refresh.expires_at)),
                    user: Some(convert::user(user)),
                    tenant_id: tenant.id.to_string(),
                }))
            }
            Rotation::Replayed { user_id, family_id } => {
                let event = Event::success("auth.refresh.reused", "user", &user_id)
                    .outcome(Outcome::Denied)
                    .with(json!({ "session_id": family_id, "action": "session revoked" }));
                audit::record(&mut tx, &actor, event).await?;
                tx.commit().await.map_err(ApiError::from)?;
                tracing::warn!(tenant = %tenant.id, user = %user_id, "refresh token replayed; session revoked");
                Err(invalid().into())
            }
            Rotation::Invalid => {
                tx.commit().await.map_err(ApiError::from)?;
                Err(invalid().into())
            }
        }
    }

    pub(super) async fn do_logout(&self, request: Request<pb::LogoutRequest>) -> Reply<pb::LogoutResponse> {
        let ctx = context::of(&request)?;
        let (deadline, own_tenant) = (ctx.deadline, ctx.principal().and_then(|p| p.tenant().cloned()));
        let actor = self.actor(&request)?;
        let token = request.into_inner().refresh_token;
        if token.is_empty() {
            return Err(ApiError::invalid("refresh_token", "is required").into());
        }
        // Unknown, foreign or malformed tokens succeed: logging out is idempotent
        // and must not tell a caller which tokens exist.
        let Some(tenant_id) = refresh::tenant_of(&token) else { return Ok(Response::new(pb::LogoutResponse {})) };
        if own_tenant.is_some_and(|own| own != tenant_id) {
            return Ok(Response::new(pb::LogoutResponse {}));
        }
        let live = self.tenants.resolve(tenant_id.as_str()).await.map_err(ApiError::from)?;
        if live.is_none_or(|t| t.state == TenantState::Deleted) {
            return Ok(Response::new(pb::LogoutResponse {}));
        }
        let mut tx = TenantTx::begin(&self.pool, &tenant_id, deadline).await.map_err(ApiError::from)?;
        if let Some((family_id, user_id)) = refresh::family_of(&mut tx, &token).await?
            && refresh::revoke_family(&mut tx, &family_id, "logout").await?
        {
            let event = Event::success("auth.logout", "user", &user_id).with(json!({ "session_id": family_id }));
            audit::record(&mut tx, &actor, event).await?;
        }
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    pub(super) async fn do_who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Reply<pb::WhoAmIResponse> {
        let ctx = context::of(&request)?;
        let principal = ctx.principal().ok_or_else(|| ApiError::internal("WhoAmI without a principal"))?;
        let (roles, expire_time) = match principal.tenant_principal() {
            Some(p) => (p.roles.clone(), p.expires_at.map(timestamp)),
            None => (Vec::new(), None),
        };
        Ok(Response::new(pb::WhoAmIResponse {
            principal: Some(convert::principal(principal)),
            tenant_id: ctx.tenant_if_any().map(|t| t.id.to_string()).unwrap_or_default(),
            tenant_slug: ctx.tenant_if_any().map(|t| t.slug.to_string()).unwrap_or_default(),
            roles,
            permissions: self.caller_permissions(ctx).iter().cloned().collect(),
            expire_time,
        }))
    }

    pub(super) async fn do_introspect(
        &self,
        request: Request<pb::IntrospectTokenRequest>,
    ) -> Reply<pb::IntrospectTokenResponse> {
        let ctx = context::of(&request)?;
        let scope = ctx.tenant_if_any().map(|t| t.id.clone());
        let token = &request.get_ref().token;
        if token.is_empty() {
            return Err(ApiError::invalid("token", "is required").into());
        }
        let inactive = || Ok(Response::new(pb::IntrospectTokenResponse::default()));
        if token.len() > 8 * 1024 {
            return inactive();
        }
        let credential =
            if api_key::looks_like_api_key(token) { Credential::ApiKey(token) } else { Credential::AccessToken(token) };
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let principal = match self.auth.authenticate(credential, deadline.min(ctx.deadline)).await {
            Ok(principal) => principal,
            Err(ApiError::Internal(error)) => return Err(ApiError::Internal(error).into()),
            Err(_) => return inactive(),
        };
        if scope.is_some() && scope.as_ref() != principal.tenant() {
            return inactive();
        }
        let (scopes, issue_time, expire_time) = match principal.tenant_principal() {
            Some(p) => {
                (p.permissions.iter().cloned().collect(), p.issued_at.map(timestamp), p.expires_at.map(timestamp))
            }
            None => (self.all_permissions.iter().cloned().collect(), None, None),
        };
        let tenant_id = principal.tenant().map(|t| t.to_string()).unwrap_or_default();
        let principal = Some(convert::principal(&principal));
        Ok(Response::new(pb::IntrospectTokenResponse {
            active: true,
            principal,
            tenant_id,
            scopes,
            expire_time,
            issue_time,
        }))
    }

    pub(super) fn jwks(&self) -> pb::GetJwksResponse {
        let keys = self
            .auth
            .tokens()
            .ring()
            .jwks()
            .map(|k| pb::Jwk {
                kty: "RSA".into(),
                r#use: "sig".into(),
                kid: k.kid.clone(),
                alg: "RS256".into(),
                n: k.n.clone(),
                e: k.e.clone(),
            })
            .collect();
        pb::GetJwksResponse { keys }
    }
}

/// Announces a user's change and records its event, in `tx`.
pub(super) async fn changed_user(
    tx: &mut TenantTx,
    tenant: &TenantRef,
    user_id: &str,
    actor: &audit::Actor,
    event: Event<'_>,
) -> Result<(), IdentityError> {
    access::notify_user(tx, &tenant.id, user_id).await?;
    audit::record(tx, actor, event).await
}
