//! CreateRole, ListRoles, UpdateRole, DeleteRole, AssignRole, UnassignRole
//! and ListAuditEvents. Granting goes no further than the caller's own
//! permissions; the `owner` role is granted and removed by owners only; role
//! changes send a NOTIFY so every node recomputes its users' permissions.

use serde_json::json;
use tonic::{Request, Response};

use super::{AuthApi, Reply, caller_is_owner, convert};
use crate::{
    context,
    error::ApiError,
    field_mask::{Mutable, UpdateMask},
    identity::{
        IdentityError, access,
        audit::{self, Event, ListFilter},
        roles::{self, Role},
        users,
    },
    pagination::{self, Cursor, ListQuery},
    proto::{from_timestamp, tenantry::v1 as pb},
};

/// What UpdateRole may change on a custom role.
const ROLE_MUTABLE: Mutable = Mutable { message: "tenantry.v1.Role", paths: &["name", "description", "permissions"] };

fn built_in_fixed() -> ApiError {
    IdentityError::Precondition {
        reason: crate::error::Reason::RoleBuiltIn,
        message: "built-in roles cannot be changed or deleted".into(),
    }
    .into()
}

fn role_not_found() -> ApiError {
    IdentityError::NotFound("role").into()
}

impl AuthApi {
    pub(super) async fn do_create_role(
        &self,
        request: Request<pb::CreateRoleRequest>,
    ) -> Reply<pb::CreateRoleResponse> {
        let actor = self.actor(&request)?;
        let ctx = context::of(&request)?;
        let message = request.get_ref();
        let name = roles::parse_name("name", &message.name)?;
        let description = roles::parse_description("description", &message.description)?;
        let permissions = roles::parse_permissions("permissions", &message.permissions)?;
        self.caller_holds(ctx, &permissions)?;
        let (_, mut tx) = self.begin(ctx).await?;
        let role = roles::create(&mut tx, &name, &description, &permissions).await?;
        let event = Event::success("role.created", "role", &role.id)
            .with(json!({ "name": role.name, "permissions": role.permissions }));
        audit::record(&mut tx, &actor, event).await?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::CreateRoleResponse { role: Some(convert::role(role)) }))
    }

    pub(super) async fn do_list_roles(&self, request: Request<pb::ListRolesRequest>) -> Reply<pb::ListRolesResponse> {
        let ctx = context::of(&request)?;
        let size = pagination::page_size(request.get_ref().page_size)? as usize;
        // Roles are few (at most 504) and listed from memory, paged by offset.
        let query = ListQuery::new("roles", roles::LIST_ORDER);
        let offset = self.page_tokens.offset(&query, &request.get_ref().page_token)?;
        let (_, mut tx) = self.begin(ctx).await?;
        let all = roles::list(&mut tx).await?;
        tx.commit().await.map_err(ApiError::from)?;
        let end = (offset + size).min(all.len());
        let next_page_token = self.page_tokens.issue_offset(&query, end, all.len());
        let page: Vec<Role> = all.into_iter().skip(offset).take(size).collect();
        Ok(Response::new(pb::ListRolesResponse {
            roles: page.into_iter().map(convert::role).collect(),
            next_page_token,
        }))
    }

    pub(super) async fn do_update_role(
        &self,
        request: Request<pb::UpdateRoleRequest>,
    ) -> Reply<pb::UpdateRoleResponse> {
        let actor = self.actor(&request)?;
        let ctx = context::of(&request)?;
        let message = request.get_ref();
        let update = message.role.as_ref().ok_or_else(|| ApiError::invalid("role", "is required"))?;
        if update.id.is_empty() {
            return Err(ApiError::invalid("role.id", "is required").into());
        }
        if roles::BUILT_IN.contains(&update.id.as_str()) {
            return Err(built_in_fixed().into());
        }
        let paths: Vec<String> = match UpdateMask::parse(message.update_mask.as_ref(), ROLE_MUTABLE)? {
            Some(mask) => mask.paths,
            None => UpdateMask::populated(update, ROLE_MUTABLE)?,
        };
        if paths.is_empty() {
            return Err(ApiError::invalid("update_mask", "names no field to update").into());
        }
        let (mut name, mut description, mut permissions) = (None, None, None);
        for path in &paths {
            match path.as_str() {
                "name" => name = Some(roles::parse_name("role.name", &update.name)?),
                "description" => description = Some(roles::parse_description("role.description", &update.description)?),
                "permissions" => permissions = Some(roles::parse_permissions("role.permissions", &update.permissions)?),
                other => return Err(ApiError::internal(format!("mutable path `{other}` has no handler")).into()),
            }
        }
        let (tenant, mut tx) = self.begin(ctx).await?;
        let current = roles::get(&mut tx, &update.id).await?.ok_or_else(role_not_found)?;
        // Changing a role's grants is granting: the caller must hold both the
        // old set (it may be taking them away from others) and the new one.
        self.caller_holds(ctx, &current.permissions)?;
        if let Some(new) = &permissions {
            self.caller_holds(ctx, new)?;
        }
        let role =
            roles::update(&mut tx, &update.id, name.as_deref(), description.as_deref(), permissions.as_ref()).await?;
        access::notify_tenant(&mut tx, &tenant.id).await?;
        let event = Event::success("role.updated", "role", &role.id)
            .with(json!({ "fields": paths, "permissions": role.permissions }));
        audit::record(&mut tx, &actor, event).await?;
        tx.commit().await.map_err(ApiError::from)?;
        self.auth.cache().forget_tenant(&tenant.id);
        Ok(Response::new(pb::UpdateRoleResponse { role: Some(convert::role(role)) }))
    }

    pub(super) async fn do_delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Reply<pb::DeleteRoleResponse> {
        let actor = self.actor(&request)?;
        let ctx = context::of(&request)?;
        let id = request.get_ref().role_id.clone();
        if id.is_empty() {
            return Err(ApiError::invalid("role_id", "is required").into());
        }
        if roles::BUILT_IN.contains(&id.as_str()) {
            return Err(built_in_fixed().into());
        }
        let (tenant, mut tx) = self.begin(ctx).await?;
        let current = roles::get(&mut tx, &id).await?.ok_or_else(role_not_found)?;
        self.caller_holds(ctx, &current.permissions)?;
        roles::delete(&mut tx, &id).await?;
        access::notify_tenant(&mut tx, &tenant.id).await?;
        audit::record(
            &mut tx,
            &actor,
            Event::success("role.deleted", "role", &id).with(json!({ "name": current.name })),
        )
        .await?;
        tx.commit().await.map_err(ApiError::from)?;
        self.auth.cache().forget_tenant(&tenant.id);
        Ok(Response::new(pb::DeleteRoleResponse {}))
    }

    /// Checks an (un)assignment: user and role exist, the caller may grant the role.
    async fn binding(
        &self,
        ctx: &context::RequestContext,
        tx: &mut crate::tenancy::TenantTx,
        user_id: &str,
        role_id: &str,
    ) -> Result<Role, ApiError> {
        if user_id.is_empty() {
            return Err(ApiError::invalid("user_id", "is required"));
        }
        if role_id.is_empty() {
            return Err(ApiError::invalid("role_id", "is required"));
        }
        users::get(tx, user_id).await?.ok_or(IdentityError::NotFound("user"))?;
        let role = roles::get(tx, role_id).await?.ok_or_else(role_not_found)?;
        if role.id == roles::OWNER && !caller_is_owner(ctx) {
            return Err(IdentityError::Denied("only an owner can grant or remove the owner role".into()).into());
        }
        self.caller_holds(ctx, &role.permissions)?;
        Ok(role)
    }

    pub(super) async fn do_assign_role(
        &self,
        request: Request<pb::AssignRoleRequest>,
    ) -> Reply<pb::AssignRoleResponse> {
        let actor = self.actor(&request)?;
        let ctx = context::of(&request)?;
        let message = request.get_ref();
        let (tenant, mut tx) = self.begin(ctx).await?;
        let role = self.binding(ctx, &mut tx, &message.user_id, &message.role_id).await?;
        users::assign(&mut tx, &message.user_id, &role.id).await?;
        access::notify_user(&mut tx, &tenant.id, &message.user_id).await?;
        let event = Event::success("role.assigned", "user", &message.user_id).with(json!({ "role_id": role.id }));
        audit::record(&mut tx, &actor, event).await?;
        let user = users::get(&mut tx, &message.user_id).await?.ok_or(IdentityError::NotFound("user"))?;
        tx.commit().await.map_err(ApiError::from)?;
        self.auth.cache().forget_user(&tenant.id, &message.user_id);
        Ok(Response::new(pb::AssignRoleResponse { user: Some(convert::user(user)) }))
    }

    pub(super) async fn do_unassign_role(
        &self,
        request: Request<pb::UnassignRoleRequest>,
    ) -> Reply<pb::UnassignRoleResponse> {
        let actor = self.actor(&request)?;
        let ctx = context::of(&request)?;
        let message = request.get_ref();
        let (tenant, mut tx) = self.begin(ctx).await?;
        let owners = users::lock_owners(&mut tx).await?;
        let role = self.binding(ctx, &mut tx, &message.user_id, &message.role_id).await?;
        if role.id == roles::OWNER && owners == [message.user_id.clone()] {
            return Err(IdentityError::Precondition {
                reason: crate::error::Reason::LastOwner,
                message: "the tenant's last active owner keeps the owner role".into(),
            }
            .into());
        }
        users::unassign(&mut tx, &message.user_id, &role.id).await?;
        access::notify_user(&mut tx, &tenant.id, &message.user_id).await?;
        let event = Event::success("role.unassigned", "user", &message.user_id).with(json!({ "role_id": role.id }));
        audit::record(&mut tx, &actor, event).await?;
        let user = users::get(&mut tx, &message.user_id).await?.ok_or(IdentityError::NotFound("user"))?;
        tx.commit().await.map_err(ApiError::from)?;
        self.auth.cache().forget_user(&tenant.id, &message.user_id);
        Ok(Response::new(pb::UnassignRoleResponse { user: Some(convert::user(user)) }))
    }

    pub(super) async fn do_list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Reply<pb::ListAuditEventsResponse> {
        let ctx = context::of(&request)?;
        let message = request.get_ref();
        let size = pagination::page_size(message.page_size)?;
        let query = ListQuery::new("audit_events", audit::LIST_ORDER)
            .filter("event_type", &message.event_type)
            .filter("start_time", message.start_time)
            .filter("end_time", message.end_time)
            .filter("actor_id", &message.actor_id)
            .filter("target_id", &message.target_id);
        let before = self.page_tokens.cursor(&query, &message.page_token)?;
        let time = |field: &'static str, ts: &Option<prost_types::Timestamp>| {
            ts.as_ref()
                .map(|ts| from_timestamp(ts).ok_or_else(|| ApiError::invalid(field, "is not a valid time")))
                .transpose()
        };
        let non_empty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        if message.event_type.len() > 200 {
            return Err(ApiError::invalid("event_type", "must be at most 200 characters").into());
        }
        let filter = ListFilter {
            event_type: non_empty(&message.event_type),
            start: time("start_time", &message.start_time)?,
            end: time("end_time", &message.end_time)?,
            actor_id: non_empty(&message.actor_id),
            target_id: non_empty(&message.target_id),
        };
        let tenant_id = ctx.tenant()?.id.to_string();
        let (_, mut tx) = self.begin(ctx).await?;
        let mut events = audit::list(&mut tx, &filter, size, before).await?;
        tx.commit().await.map_err(ApiError::from)?;
        let next_page_token = self
            .page_tokens
            .next_page(&query, &mut events, size, |e| Cursor { created_at: e.created_at, id: e.id.clone() });
        Ok(Response::new(pb::ListAuditEventsResponse {
            audit_events: events.into_iter().map(|e| convert::event(e, &tenant_id)).collect(),
            next_page_token,
        }))
    }
}
