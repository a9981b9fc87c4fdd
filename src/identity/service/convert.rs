//! Domain values → protobuf messages.

use super::super::{
    api_keys::ApiKeyRecord,
    audit::{self, StoredEvent},
    roles::Role,
    users::{User, UserState},
};
use crate::{
    auth::Principal,
    proto::{tenantry::v1 as pb, timestamp},
};

pub fn user(user: User) -> pb::User {
    pb::User {
        id: user.id,
        email: user.email,
        display_name: user.display_name,
        state: match user.state {
            UserState::Active => pb::UserState::Active,
            UserState::Disabled => pb::UserState::Disabled,
        } as i32,
        roles: user.roles,
        create_time: Some(timestamp(user.created_at)),
        update_time: Some(timestamp(user.updated_at)),
        last_login_time: user.last_login_at.map(timestamp),
    }
}

pub fn role(role: Role) -> pb::Role {
    pb::Role {
        id: role.id,
        name: role.name,
        description: role.description,
        permissions: role.permissions.into_iter().collect(),
        built_in: role.built_in,
        create_time: role.created_at.map(timestamp),
        update_time: role.updated_at.map(timestamp),
    }
}

pub fn api_key(key: ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        id: key.id,
        name: key.name,
        public_id: key.public_id,
        scopes: key.scopes,
        created_by: key.created_by,
        create_time: Some(timestamp(key.created_at)),
        expire_time: key.expires_at.map(timestamp),
        revoke_time: key.revoked_at.map(timestamp),
        last_used_time: key.last_used_at.map(timestamp),
    }
}

pub fn principal(principal: &Principal) -> pb::Principal {
    match principal {
        Principal::PlatformAdmin { key_id, name } => pb::Principal {
            kind: pb::PrincipalKind::PlatformAdmin as i32,
            id: key_id.clone(),
            display_name: name.clone(),
            tenant_id: String::new(),
        },
        Principal::User(p) | Principal::ApiKey(p) => pb::Principal {
            kind: match principal {
                Principal::User(_) => pb::PrincipalKind::User as i32,
                _ => pb::PrincipalKind::ApiKey as i32,
            },
            id: p.id.clone(),
            display_name: p.display_name.clone(),
            tenant_id: p.tenant.to_string(),
        },
    }
}

pub fn event(event: StoredEvent, tenant_id: &str) -> pb::AuditEvent {
    let kind = match event.actor_kind.as_str() {
        "user" => pb::PrincipalKind::User,
        "api_key" => pb::PrincipalKind::ApiKey,
        "platform_admin" => pb::PrincipalKind::PlatformAdmin,
        "system" => pb::PrincipalKind::System,
        _ => pb::PrincipalKind::Unspecified,
    };
    let outcome = match event.outcome.as_str() {
        "success" => pb::AuditOutcome::Success,
        "failure" => pb::AuditOutcome::Failure,
        "denied" => pb::AuditOutcome::Denied,
        _ => pb::AuditOutcome::Unspecified,
    };
    pb::AuditEvent {
        id: event.id,
        event_type: event.event_type,
        actor: Some(pb::Principal {
            kind: kind as i32,
            id: event.actor_id,
            display_name: String::new(),
            tenant_id: if kind == pb::PrincipalKind::PlatformAdmin { String::new() } else { tenant_id.to_owned() },
        }),
        target_type: event.target_type,
        target_id: event.target_id,
        outcome: outcome as i32,
        client_address: event.client_address,
        request_id: event.request_id,
        details: Some(audit::to_struct(&event.details.0)),
        create_time: Some(timestamp(event.created_at)),
    }
}
