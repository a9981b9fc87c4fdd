//! The attacks on AuthService: sessions, users, API keys, roles and the
//! audit log, each against the victim's real resources (see [`super::cases`]).

use tenantry::{
    identity::roles::CATALOGUE,
    proto::tenantry::v1::{
        AssignRoleRequest, ChangePasswordRequest, CreateApiKeyRequest, CreateRoleRequest, CreateUserRequest,
        DeleteRoleRequest, DeleteUserRequest, GetUserRequest, IntrospectTokenRequest, IntrospectTokenResponse,
        ListApiKeysRequest, ListAuditEventsRequest, ListRolesRequest, ListUsersRequest, LogoutRequest,
        RefreshTokenRequest, RevokeApiKeyRequest, Role, UnassignRoleRequest, UpdateRoleRequest, UpdateUserRequest,
        User, UserState, WhoAmIRequest,
    },
};
use tonic::Code;

use super::cases::{Duel, like_unknown, mask, not_found, ok, reveals_nothing, unknown_id};
use crate::harness::identity::{PASSWORD, bearer};

// AuthService: sessions

pub(super) async fn logout(d: &Duel<'_>) {
    let token = d.victim.refresh_token.lock().unwrap().clone();
    let theirs = d.app.auth().logout(d.req(LogoutRequest { refresh_token: token.clone() })).await;
    // Logging out is idempotent and says nothing about which tokens exist.
    ok(d, "Logout with the victim's refresh token", theirs);
    let rotated = d.app.auth().refresh_token(RefreshTokenRequest { refresh_token: token }).await;
    let rotated = rotated.unwrap_or_else(|s| panic!("{d}: the victim's session was ended: {s:?}")).into_inner();
    assert_eq!(rotated.tenant_id, d.victim.id);
    *d.victim.refresh_token.lock().unwrap() = rotated.refresh_token;
}

pub(super) async fn who_am_i(d: &Duel<'_>) {
    let me = ok(d, "WhoAmI", d.app.auth().who_am_i(d.req(WhoAmIRequest {})).await);
    assert_eq!(me.tenant_id, d.attacker.id, "{d}");
    reveals_nothing(d, "WhoAmI", &me);
}

pub(super) async fn introspect_token(d: &Duel<'_>) {
    let v = d.victim;
    let garbage = format!("{}x", &v.owner_token[..v.owner_token.len() / 2]);
    for (what, token) in [("access token", &v.owner_token), ("API key", &v.api_key_secret), ("garbage", &garbage)] {
        let answer = d.app.auth().introspect_token(d.req(IntrospectTokenRequest { token: token.clone() })).await;
        let answer = ok(d, what, answer);
        assert_eq!(answer, IntrospectTokenResponse::default(), "{d}: the victim's {what} must look inactive");
    }
    // The victim's credentials are untouched.
    let me = d.app.auth().who_am_i(bearer(WhoAmIRequest {}, &v.api_key_secret)).await;
    assert_eq!(me.unwrap_or_else(|s| panic!("{d}: the victim's key: {s:?}")).into_inner().tenant_id, v.id);
}

// AuthService: users

pub(super) async fn create_user(d: &Duel<'_>) {
    let v = d.victim;
    let request = CreateUserRequest {
        email: v.user.email.clone(),
        display_name: "namesake".into(),
        password: PASSWORD.into(),
        roles: Vec::new(),
    };
    let created = ok(d, "CreateUser with the victim's email", d.app.auth().create_user(d.req(request)).await);
    let created = created.user.unwrap();
    assert_ne!(created.id, v.user.id, "{d}");
    let mine = ok(d, "GetUser", d.app.auth().get_user(d.req(GetUserRequest { user_id: created.id.clone() })).await);
    assert_eq!(mine.user.unwrap().email, v.user.email, "{d}: the namesake lives in the attacker's tenant");

    like_unknown(
        d,
        Code::InvalidArgument,
        "CreateUser with the victim's role",
        &v.role.id,
        &unknown_id(&v.role.id),
        |role| {
            let request = CreateUserRequest {
                email: format!("probe@{}.test", v.slug),
                display_name: "probe".into(),
                password: PASSWORD.into(),
                roles: vec![role],
            };
            let (mut c, r) = (d.app.auth(), d.req(request));
            async move { c.create_user(r).await }
        },
    )
    .await;
}

pub(super) async fn get_user(d: &Duel<'_>) {
    for user in [&d.victim.user.id, &d.victim.owner.id] {
        not_found(d, "GetUser", user, |id| {
            let (mut c, r) = (d.app.auth(), d.req(GetUserRequest { user_id: id }));
            async move { c.get_user(r).await }
        })
        .await;
    }
}

pub(super) async fn list_users(d: &Duel<'_>) {
    let v = d.victim;
    let filters = [
        ListUsersRequest { page_size: 1000, ..Default::default() },
        ListUsersRequest { email: v.user.email.clone(), ..Default::default() },
        ListUsersRequest { role_id: v.role.id.clone(), ..Default::default() },
    ];
    for filter in filters {
        let what = format!("ListUsers {filter:?}");
        let users = ok(d, &what, d.app.auth().list_users(d.req(filter)).await);
        reveals_nothing(d, &what, &users);
    }
}

pub(super) async fn update_user(d: &Duel<'_>) {
    not_found(d, "UpdateUser", &d.victim.user.id, |id| {
        let user = User { id, display_name: "pwned".into(), state: UserState::Disabled as i32, ..Default::default() };
        let request = UpdateUserRequest { user: Some(user), update_mask: mask(&["display_name", "state"]) };
        let (mut c, r) = (d.app.auth(), d.req(request));
        async move { c.update_user(r).await }
    })
    .await;
}

pub(super) async fn delete_user(d: &Duel<'_>) {
    not_found(d, "DeleteUser", &d.victim.user.id, |id| {
        let (mut c, r) = (d.app.auth(), d.req(DeleteUserRequest { user_id: id }));
        async move { c.delete_user(r).await }
    })
    .await;
}

pub(super) async fn change_password(d: &Duel<'_>) {
    not_found(d, "ChangePassword", &d.victim.user.id, |id| {
        let request = ChangePasswordRequest {
            user_id: id,
            current_password: PASSWORD.into(),
            new_password: "the attacker's chosen password".into(),
        };
        let (mut c, r) = (d.app.auth(), d.req(request));
        async move { c.change_password(r).await }
    })
    .await;
}

pub(super) async fn victim_password_still_works(d: &Duel<'_>) {
    let v = d.victim;
    let login = d.app.login(&v.slug, &v.user.email, PASSWORD).await;
    let login = login.unwrap_or_else(|s| panic!("{d}: the victim's user lost their password: {s:?}"));
    assert_eq!(login.user.unwrap().id, v.user.id);
}

// AuthService: API keys

pub(super) async fn create_api_key(d: &Duel<'_>) {
    let request = CreateApiKeyRequest {
        name: d.victim.api_key.name.clone(),
        scopes: vec!["users:read".into()],
        expire_time: None,
    };
    let created = ok(d, "CreateApiKey", d.app.auth().create_api_key(d.req(request)).await);
    reveals_nothing(d, "CreateApiKey", &created);
    let me = ok(d, "WhoAmI with the new key", d.app.auth().who_am_i(bearer(WhoAmIRequest {}, &created.secret)).await);
    assert_eq!(me.tenant_id, d.attacker.id, "{d}: the key belongs to the caller's tenant");
}

pub(super) async fn list_api_keys(d: &Duel<'_>) {
    let request = ListApiKeysRequest { page_size: 1000, show_inactive: true, ..Default::default() };
    let keys = ok(d, "ListApiKeys", d.app.auth().list_api_keys(d.req(request)).await);
    reveals_nothing(d, "ListApiKeys", &keys);
}

pub(super) async fn revoke_api_key(d: &Duel<'_>) {
    let v = d.victim;
    not_found(d, "RevokeApiKey", &v.api_key.id, |id| {
        let (mut c, r) = (d.app.auth(), d.req(RevokeApiKeyRequest { api_key_id: id }));
        async move { c.revoke_api_key(r).await }
    })
    .await;
    let me = d.app.auth().who_am_i(bearer(WhoAmIRequest {}, &v.api_key_secret)).await;
    assert_eq!(me.unwrap_or_else(|s| panic!("{d}: the victim's key was revoked: {s:?}")).into_inner().tenant_id, v.id);
}

// AuthService: roles and audit

pub(super) async fn create_role(d: &Duel<'_>) {
    let v = d.victim;
    let request = CreateRoleRequest {
        name: v.role.name.clone(),
        description: String::new(),
        permissions: vec!["users:read".into()],
    };
    let role = ok(d, "CreateRole with the victim's role name", d.app.auth().create_role(d.req(request)).await);
    assert_ne!(role.role.unwrap().id, v.role.id, "{d}");
}

pub(super) async fn list_roles(d: &Duel<'_>) {
    let roles = ok(
        d,
        "ListRoles",
        d.app.auth().list_roles(d.req(ListRolesRequest { page_size: 1000, ..Default::default() })).await,
    );
    reveals_nothing(d, "ListRoles", &roles);
}

pub(super) async fn update_role(d: &Duel<'_>) {
    not_found(d, "UpdateRole", &d.victim.role.id, |id| {
        let role = Role {
            id,
            name: "pwned".into(),
            permissions: CATALOGUE.iter().map(|(p, _)| (*p).to_owned()).collect(),
            ..Default::default()
        };
        let request = UpdateRoleRequest { role: Some(role), update_mask: mask(&["name", "permissions"]) };
        let (mut c, r) = (d.app.auth(), d.req(request));
        async move { c.update_role(r).await }
    })
    .await;
}

pub(super) async fn delete_role(d: &Duel<'_>) {
    not_found(d, "DeleteRole", &d.victim.role.id, |id| {
        let (mut c, r) = (d.app.auth(), d.req(DeleteRoleRequest { role_id: id }));
        async move { c.delete_role(r).await }
    })
    .await;
}

/// The victim's user with a built-in role, the attacker's own owner with the
/// victim's role, and the victim's user with the victim's role.
fn bindings<'a>(d: &'a Duel<'a>) -> [(&'static str, &'a str, &'a str, bool); 3] {
    let (v, a) = (d.victim, d.attacker);
    [
        ("the victim's user, role viewer", v.user.id.as_str(), "viewer", true),
        ("own owner, the victim's role", a.owner.id.as_str(), v.role.id.as_str(), false),
        ("the victim's user and role", v.user.id.as_str(), v.role.id.as_str(), true),
    ]
}

pub(super) async fn assign_role(d: &Duel<'_>) {
    for (what, user, role, foreign_user) in bindings(d) {
        let assign = |user: String, role: String| {
            let (mut c, r) = (d.app.auth(), d.req(AssignRoleRequest { user_id: user, role_id: role }));
            async move { c.assign_role(r).await }
        };
        let what = format!("AssignRole ({what})");
        match foreign_user {
            true => not_found(d, &what, user, |id| assign(id, role.to_owned())).await,
            false => not_found(d, &what, role, |id| assign(user.to_owned(), id)).await,
        }
    }
}

pub(super) async fn unassign_role(d: &Duel<'_>) {
    for (what, user, role, foreign_user) in bindings(d) {
        let unassign = |user: String, role: String| {
            let (mut c, r) = (d.app.auth(), d.req(UnassignRoleRequest { user_id: user, role_id: role }));
            async move { c.unassign_role(r).await }
        };
        let what = format!("UnassignRole ({what})");
        match foreign_user {
            true => not_found(d, &what, user, |id| unassign(id, role.to_owned())).await,
            false => not_found(d, &what, role, |id| unassign(user.to_owned(), id)).await,
        }
    }
}

pub(super) async fn list_audit_events(d: &Duel<'_>) {
    let v = d.victim;
    let all = ListAuditEventsRequest { page_size: 1000, ..Default::default() };
    let events = ok(d, "ListAuditEvents", d.app.auth().list_audit_events(d.req(all)).await);
    assert!(!events.audit_events.is_empty(), "{d}: the attacker's own log is listed");
    reveals_nothing(d, "ListAuditEvents", &events);
    let filters = [
        ListAuditEventsRequest { target_id: v.user.id.clone(), ..Default::default() },
        ListAuditEventsRequest { actor_id: v.owner.id.clone(), ..Default::default() },
    ];
    for filter in filters {
        let what = format!("ListAuditEvents {filter:?}");
        let events = ok(d, &what, d.app.auth().list_audit_events(d.req(filter)).await);
        assert!(events.audit_events.is_empty(), "{d}: {what} found {events:?}");
    }
}
