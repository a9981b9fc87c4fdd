//! CreateUser, GetUser, ListUsers, UpdateUser, DeleteUser, ChangePassword,
//! and the owner user of a new tenant.
//!
//! Guard rails: roles handed out at creation must be within the caller's own
//! permissions; only owners (and platform admins) may create, change, disable
//! or delete owners; the tenant's last active owner cannot be disabled or
//! deleted. Disabling or deleting a user revokes their sessions and the API
//! keys they created, and a NOTIFY makes every node refuse their tokens.

use std::collections::BTreeSet;

use serde_json::json;
use tonic::{Request, Response};

use super::{AuthApi, Reply, caller_is_owner, convert, sessions::changed_user};
use crate::{
    auth::Principal,
    context,
    error::ApiError,
    field_mask::{Mutable, UpdateMask},
    identity::{
        IdentityError, api_keys,
        audit::{self, Actor, Event},
        passwords::{self, PasswordHasherPool},
        refresh, roles, throttle,
        users::{self, ListFilter, UserState},
    },
    pagination::{self, Cursor, ListQuery},
    proto::tenantry::v1 as pb,
    tenancy::TenantTx,
};

/// What UpdateUser may change (roles change through AssignRole/UnassignRole).
const USER_MUTABLE: Mutable = Mutable { message: "tenantry.v1.User", paths: &["email", "display_name", "state"] };

/// Creates the owner of a tenant being provisioned, in the provisioning
/// transaction (so the tenant and its owner exist together or not at all).
/// `password_hash` comes from [`hash_owner_password`], computed before the
/// transaction opened.
pub async fn create_owner(
    tx: &mut TenantTx,
    actor: &Actor,
    email: &str,
    password_hash: &str,
) -> Result<pb::User, ApiError> {
    let user = users::create(tx, email, "", password_hash, &[roles::OWNER.to_owned()]).await?;
    let event =
        Event::success("user.created", "user", &user.id).with(json!({ "email": email, "roles": [roles::OWNER] }));
    audit::record(tx, actor, event).await?;
    Ok(convert::user(user))
}

/// Checks a new owner's email and password and hashes the password.
pub async fn hash_owner_password(
    hasher: &PasswordHasherPool,
    email: &str,
    password: &str,
) -> Result<(String, String), ApiError> {
    let email = users::parse_email("owner_email", email)?;
    passwords::check_policy("owner_password", password)?;
    Ok((email, hasher.hash(password).await?))
}

fn parse_user_id(field: &'static str, id: &str) -> Result<String, ApiError> {
    if id.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    Ok(id.to_owned())
}

fn not_found() -> ApiError {
    IdentityError::NotFound("user").into()
}

fn owners_only() -> IdentityError {
    IdentityError::Denied("only an owner can create, change or remove an owner".into())
}

fn last_owner() -> IdentityError {
    IdentityError::Precondition {
        reason: crate::error::Reason::LastOwner,
        message: "the tenant's last active owner cannot be removed or disabled".into(),
    }
}

impl AuthApi {
    /// The permissions of `role_ids`, each of which must exist.
    async fn role_permissions(
        &self,
        tx: &mut TenantTx,
        field: &'static str,
        role_ids: &[String],
    ) -> Result<BTreeSet<String>, ApiError> {
        let mut wanted = BTreeSet::new();
        for id in role_ids {
            let role = roles::get(tx, id).await?.ok_or_else(|| ApiError::invalid(field, format!("no role `{id}`")))?;
            wanted.extend(role.permissions);
        }
        Ok(wanted)
    }

    pub(super) async fn do_create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Reply<pb::CreateUserResponse> {
        let actor = self.actor(&request)?;
        let ctx = context::of(&request)?;
        let message = request.get_ref();
        let email = users::parse_email("email", &message.email)?;
        let display_name = users::parse_display_name("display_name", &message.display_name)?;
        passwords::check_policy("password", &message.password)?;
        let role_ids: Vec<String> = message.roles.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        if role_ids.iter().any(|r| r == roles::OWNER) && !caller_is_owner(ctx) {
            return Err(owners_only().into());
        }
        let hash = self.hasher.hash(&message.password).await?;
        let (tenant, mut tx) = self.begin(ctx).await?;
        let wanted = self.role_permissions(&mut tx, "roles", &role_ids).await?;
        self.caller_holds(ctx, &wanted)?;
        let user = users::create(&mut tx, &email, &display_name, &hash, &role_ids).await?;
        let event = Event::success("user.created", "user", &user.id).with(json!({ "email": email, "roles": role_ids }));
        audit::record(&mut tx, &actor, event).await?;
        tx.commit().await.map_err(ApiError::from)?;
        tracing::info!(tenant = %tenant.id, user = %user.id, "user created");
        Ok(Response::new(pb::CreateUserResponse { user: Some(convert::user(user)) }))
    }

    pub(super) async fn do_get_user(&self, request: Request<pb::GetUserRequest>) -> Reply<pb::GetUserResponse> {
        let ctx = context::of(&request)?;
        let id = parse_user_id("user_id", &request.get_ref().user_id)?;
        let (_, mut tx) = self.begin(ctx).await?;
        let user = users::get(&mut tx, &id).await?.ok_or_else(not_found)?;
        tx.end_read();
        Ok(Response::new(pb::GetUserResponse { user: Some(convert::user(user)) }))
    }

    pub(super) async fn do_list_users(&self, request: Request<pb::ListUsersRequest>) -> Reply<pb::ListUsersResponse> {
        let ctx = context::of(&request)?;
        let message = request.get_ref();
        let size = pagination::page_size(message.page_size)?;
        let query = ListQuery::new("users", users::LIST_ORDER)
            .filter("state", message.state)
            .filter("email", &message.email)
            .filter("role_id", &message.role_id);
        let after = self.page_tokens.cursor(&query, &message.page_token)?;
        let state = match pb::UserState::try_from(message.state) {
            Ok(pb::UserState::Unspecified) => None,
            Ok(pb::UserState::Active) => Some(UserState::Active),
            Ok(pb::UserState::Disabled) => Some(UserState::Disabled),
            Err(_) => return Err(ApiError::invalid("state", "is not a user state").into()),
        };
        let email = match message.email.as_str() {
            "" => None,
            email => Some(users::parse_email("email", email)?),
        };
        let role_id = (!message.role_id.is_empty()).then(|| message.role_id.clone());
        let (_, mut tx) = self.begin(ctx).await?;
        let mut found = users::list(&mut tx, &ListFilter { state, email, role_id }, size, after).await?;
        tx.end_read();
        let next_page_token = self
            .page_tokens
            .next_page(&query, &mut found, size, |u| Cursor { created_at: u.created_at, id: u.id.clone() });
        Ok(Response::new(pb::ListUsersResponse {
            users: found.into_iter().map(convert::user).collect(),
            next_page_token,
        }))
    }

    pub(super) async fn do_update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Reply<pb::UpdateUserResponse> {
        let actor = self.actor(&request)?;
        let ctx = context::of(&request)?;
        let message = request.get_ref();
        let update = message.user.as_ref().ok_or_else(|| ApiError::invalid("user", "is required"))?;
        let id = parse_user_id("user.id", &update.id)?;
        let paths: Vec<String> = match UpdateMask::parse(message.update_mask.as_ref(), USER_MUTABLE)? {
            Some(mask) => mask.paths,
            None => UpdateMask::populated(update, USER_MUTABLE)?,
        };
        let (mut email, mut display_name, mut state) = (None, None, None);
        for path in &paths {
            match path.as_str() {
                "email" => email = Some(users::parse_email("user.email", &update.email)?),
                "display_name" => {
                    display_name = Some(users::parse_display_name("user.display_name", &update.display_name)?)
                }
                "state" => {
                    state = Some(match pb::UserState::try_from(update.state) {
                        Ok(pb::UserState::Active) => UserState::Active,
                        Ok(pb::UserState::Disabled) => UserState::Disabled,
                        _ => return Err(ApiError::invalid("user.state", "must be ACTIVE or DISABLED").into()),
                    })
                }
                other => return Err(ApiError::internal(format!("mutable path `{other}` has no handler")).into()),
            }
        }
        if paths.is_empty() {
            return Err(ApiError::invalid("update_mask", "names no field to update").into());
        }
        let (tenant, mut tx) = self.begin(ctx).await?;
        let owners = users::lock_owners(&mut tx).await?;
        let current = users::get(&mut tx, &id).await?.ok_or_else(not_found)?;
        let is_owner = current.roles.iter().any(|r| r == roles::OWNER);
        if is_owner && (email.is_some() || state.is_some()) && !caller_is_owner(ctx) {
            return Err(owners_only().into());
        }
        let disabling = state == Some(UserState::Disabled) && current.state == UserState::Active;
        if disabling && owners == [id.clone()] {
            return Err(last_owner().into());
        }
        let user = users::update(&mut tx, &id, email.as_deref(), display_name.as_deref(), state).await?;
        if disabling {
            refresh::revoke_user_families(&mut tx, &id, None, "user_disabled").await?;
        }
        let event = Event::success(if disabling { "user.disabled" } else { "user.updated" }, "user", &id)
            .with(json!({ "fields": paths }));
        changed_user(&mut tx, &tenant, &id, &actor, event).await?;
        tx.commit().await.map_err(ApiError::from)?;
        self.auth.cache().forget_user(&tenant.id, &id);
        Ok(Response::new(pb::UpdateUserResponse { user: Some(convert::user(user)) }))
    }

    pub(super) async fn do_delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Reply<pb::DeleteUserResponse> {
        let actor = self.actor(&request)?;
        let ctx = context::of(&request)?;
        let id = parse_user_id("user_id", &request.get_ref().user_id)?;
        let (tenant, mut tx) = self.begin(ctx).await?;
        let owners = users::lock_owners(&mut tx).await?;
        let current = users::get(&mut tx, &id).await?.ok_or_else(not_found)?;
        if current.roles.iter().any(|r| r == roles::OWNER) {
            if !caller_is_owner(ctx) {
                return Err(owners_only().into());
            }
            if owners == [id.clone()] {
                return Err(last_owner().into());
            }
        }
        users::delete(&mut tx, &id).await?;
        let sessions = refresh::revoke_user_families(&mut tx, &id, None, "user_deleted").await?;
        let keys = api_keys::revoke_created_by(&mut tx, &id).await?;
        let key_ids: Vec<&str> = keys.iter().map(|(id, _)| id.as_str()).collect();
        let event = Event::success("user.deleted", "user", &id)
            .with(json!({ "email": current.email, "sessions_revoked": sessions, "api_keys_revoked": key_ids }));
        changed_user(&mut tx, &tenant, &id, &actor, event).await?;
        tx.commit().await.map_err(ApiError::from)?;
        self.auth.cache().forget_user(&tenant.id, &id);
        for (_, public_id) in &keys {
            self.auth.cache().forget_key(public_id);
        }
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    pub(super) async fn do_change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Reply<pb::ChangePasswordResponse> {
        let actor = self.actor(&request)?;
        let ctx = context::of(&request)?;
        let message = request.get_ref();
        let id = parse_user_id("user_id", &message.user_id)?;
        passwords::check_policy("new_password", &message.new_password)?;
        let own_session = match ctx.principal() {
            Some(Principal::User(p)) if p.id == id => Some(p.session_id.clone()),
            _ => None,
        };
        if own_session.is_none() && !self.caller_permissions(ctx).contains("users:update") {
            return Err(IdentityError::Denied("changing another user's password needs `users:update`".into()).into());
        }
        // Hashed before any transaction opens, so no connection waits on argon2.
        let hash = self.hasher.hash(&message.new_password).await?;
        let (tenant, mut tx) = self.begin(ctx).await?;
        let target = users::get(&mut tx, &id).await?.ok_or_else(not_found)?;
        if own_session.is_none() && target.roles.iter().any(|r| r == roles::OWNER) && !caller_is_owner(ctx) {
            return Err(owners_only().into());
        }
        if own_session.is_some() {
            // Proving the current password is a guess like a login: throttled the same way.
            throttle::reserve(&mut tx, &target.email).await?;
            let stored = users::password_hash(&mut tx, &id).await?;
            tx.commit().await.map_err(ApiError::from)?;
            if message.current_password.is_empty()
                || !self.hasher.verify(&message.current_password, stored.as_deref()).await?
            {
                let mut tx = TenantTx::begin(&self.pool, &tenant.id, ctx.deadline).await.map_err(ApiError::from)?;
                throttle::record_failure(&mut tx, &target.email).await?;
                let event = Event::success("user.password_change_failed", "user", &id)
                    .outcome(audit::Outcome::Failure)
                    .with(json!({ "reason": "wrong_current_password" }));
                audit::record(&mut tx, &actor, event).await?;
                tx.commit().await.map_err(ApiError::from)?;
                return Err(ApiError::invalid("current_password", "does not match").into());
            }
            tx = TenantTx::begin(&self.pool, &tenant.id, ctx.deadline).await.map_err(ApiError::from)?;
        }
        users::set_password(&mut tx, &id, &hash).await?;
        let keep = own_session.flatten();
        let revoked = refresh::revoke_user_families(&mut tx, &id, keep.as_deref(), "password_changed").await?;
        let event = Event::success("user.password_changed", "user", &id).with(json!({ "sessions_revoked": revoked }));
        audit::record(&mut tx, &actor, event).await?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }
}
