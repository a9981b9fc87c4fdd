//! Roles and RBAC: built-in and custom roles, assignment, effective
//! permissions that follow changes at once, the audit log, and the
//! role × RPC matrix against the policies declared in the proto.

use prost_types::FieldMask;
use tenantry::{
    identity::roles,
    policy::{Access, PolicyTable},
    proto::tenantry::v1::{
        AssignRoleRequest, CreateRoleRequest, DeleteRoleRequest, ListAuditEventsRequest, ListRolesRequest,
        ListUsersRequest, Role, UnassignRoleRequest, UpdateRoleRequest,
    },
};
use tonic::Code;

use crate::harness::{TestApp, identity::bearer, with_metadata};

#[tokio::test]
async fn built_in_roles_are_listed_first_and_cannot_be_changed() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let token = &tenant.owner_token;
    let created = CreateRoleRequest {
        name: "Auditor".into(),
        description: "reads the audit log".into(),
        permissions: vec!["audit:read".into()],
    };
    app.auth().create_role(bearer(created, token)).await.unwrap();
    let listed = app.auth().list_roles(bearer(ListRolesRequest::default(), token)).await.unwrap().into_inner();
    let ids: Vec<&str> = listed.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(ids, vec!["owner", "admin", "member", "viewer", "Auditor"]);
    assert!(listed.roles[0].built_in && !listed.roles[4].built_in);
    let page = app
        .auth()
        .list_roles(bearer(ListRolesRequest { page_size: 3, ..Default::default() }, token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.roles.len(), 3);
    let rest = app
        .auth()
        .list_roles(bearer(ListRolesRequest { page_size: 3, page_token: page.next_page_token }, token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.roles.len(), 2);
    let status =
        app.auth().delete_role(bearer(DeleteRoleRequest { role_id: "viewer".into() }, token)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = app
        .auth()
        .create_role(bearer(
            CreateRoleRequest { name: "admin".into(), permissions: vec!["users:read".into()], ..Default::default() },
            token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_custom_role_grants_its_permissions_and_changes_apply_at_once() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let (ada, token) = app.user_with_roles(&tenant, "ada", &[]).await;
    let status = app.auth().list_users(bearer(ListUsersRequest::default(), &token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let role = app
        .auth()
        .create_role(bearer(
            CreateRoleRequest {
                name: "Directory".into(),
                permissions: vec!["users:read".into()],
                ..Default::default()
            },
            &tenant.owner_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    let assigned = app
        .auth()
        .assign_role(bearer(
            AssignRoleRequest { user_id: ada.id.clone(), role_id: role.id.clone() },
            &tenant.owner_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assigned.user.unwrap().roles, vec![role.id.clone()]);
    app.auth().list_users(bearer(ListUsersRequest::default(), &token)).await.unwrap();

    // Narrowing the role takes the permission away from the same token.
    let update = UpdateRoleRequest {
        role: Some(Role { id: role.id.clone(), permissions: vec!["roles:read".into()], ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["permissions".into()] }),
    };
    app.auth().update_role(bearer(update, &tenant.owner_token)).await.unwrap();
    let status = app.auth().list_users(bearer(ListUsersRequest::default(), &token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    app.auth().list_roles(bearer(ListRolesRequest::default(), &token)).await.unwrap();

    app.auth()
        .unassign_role(bearer(
            UnassignRoleRequest { user_id: ada.id.clone(), role_id: role.id.clone() },
            &tenant.owner_token,
        ))
        .await
        .unwrap();
    let status = app.auth().list_roles(bearer(ListRolesRequest::default(), &token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    app.auth().delete_role(bearer(DeleteRoleRequest { role_id: role.id }, &tenant.owner_token)).await.unwrap();
}

#[tokio::test]
async fn roles_cannot_grant_more_than_the_caller_holds() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let custom = CreateRoleRequest {
        name: "Role admin".into(),
        permissions: vec!["roles:create".into(), "roles:assign".into(), "users:read".into()],
        ..Default::default()
    };
    let role = app.auth().create_role(bearer(custom, &tenant.owner_token)).await.unwrap().into_inner().role.unwrap();
    let (_, token) = app.user_with_roles(&tenant, "rae", &[&role.id]).await;
    let (bob, _) = app.user_with_roles(&tenant, "bob", &[]).await;
    let escalate =
        CreateRoleRequest { name: "Mine".into(), permissions: vec!["users:delete".into()], ..Default::default() };
    let status = app.auth().create_role(bearer(escalate, &token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    for role_id in ["admin", "owner"] {
        let status = app
            .auth()
            .assign_role(bearer(AssignRoleRequest { user_id: bob.id.clone(), role_id: role_id.into() }, &token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role_id}");
    }
    // An admin holds everything but still cannot hand out `owner`.
    let (_, admin) = app.user_with_roles(&tenant, "root", &["admin"]).await;
    let status = app
        .auth()
        .assign_role(bearer(AssignRoleRequest { user_id: bob.id.clone(), role_id: "owner".into() }, &admin))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    app.auth()
        .assign_role(bearer(AssignRoleRequest { user_id: bob.id, role_id: "owner".into() }, &tenant.owner_token))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_last_owner_keeps_the_owner_role() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let request = UnassignRoleRequest { user_id: tenant.owner.id.clone(), role_id: "owner".into() };
    let status = app.auth().unassign_role(bearer(request, &tenant.owner_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn the_audit_log_filters_by_type_prefix_actor_and_time_and_pages() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let (ada, _) = app.user_with_roles(&tenant, "ada", &["viewer"]).await;
    app.user_with_roles(&tenant, "bob", &["viewer"]).await;
    let list = |request: ListAuditEventsRequest| {
        let mut client = app.auth();
        let request = bearer(request, &tenant.owner_token);
        async move { client.list_audit_events(request).await.unwrap().into_inner() }
    };
    let created = list(ListAuditEventsRequest { event_type: "user.created".into(), ..Default::default() }).await;
    let targets: Vec<&str> = created.audit_events.iter().map(|e| e.target_id.as_str()).collect();
    assert_eq!(targets.len(), 3, "owner, ada, bob");
    assert_eq!(targets[1], ada.id, "newest first");
    assert_eq!(created.audit_events[0].actor.as_ref().unwrap().id, tenant.owner.id);
    let by_owner = list(ListAuditEventsRequest { actor_id: tenant.owner.id.clone(), ..Default::default() }).await;
    assert!(by_owner.audit_events.iter().all(|e| e.actor.as_ref().unwrap().id == tenant.owner.id));
    let first = list(ListAuditEventsRequest { page_size: 2, ..Default::default() }).await;
    let second =
        list(ListAuditEventsRequest { page_size: 2, page_token: first.next_page_token.clone(), ..Default::default() })
            .await;
    assert_eq!(first.audit_events.len(), 2);
    assert!(first.audit_events.iter().all(|a| second.audit_events.iter().all(|b| a.id != b.id)));
    let future = prost_types::Timestamp { seconds: chrono_now() + 3600, nanos: 0 };
    let none = list(ListAuditEventsRequest { start_time: Some(future), ..Default::default() }).await;
    assert!(none.audit_events.is_empty());
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Calls `path` with an empty message and the given bearer token.
async fn call_as(app: &TestApp, path: &str, server_streaming: bool, token: &str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let request = with_metadata((), &[("authorization", &format!("Bearer {token}"))]);
    let result = if server_streaming {
        grpc.server_streaming(request, path, codec).await.map(|_| ())
    } else {
        grpc.unary(request, path, codec).await.map(|_| ())
    };
    result.err().unwrap_or_else(|| tonic::Status::ok(""))
}

#[tokio::test]
async fn every_role_may_call_exactly_the_methods_its_permissions_allow() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let table = PolicyTable::embedded().unwrap();
    let pool = prost_reflect::DescriptorPool::decode(tenantry::proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods: Vec<_> = table.iter().filter(|p| p.service.starts_with("tenantry.v1.")).collect();
    methods.sort_by(|a, b| a.path.cmp(&b.path));
    let mut checked = 0;
    for role in roles::BUILT_IN {
        let token = if *role == "owner" {
            tenant.owner_token.clone()
        } else {
            app.user_with_roles(&tenant, &format!("as-{role}"), &[role]).await.1
        };
        let held = roles::built_in_permissions(role).unwrap();
        for policy in &methods {
            let streaming = pool
                .get_service_by_name(&policy.service)
                .and_then(|s| s.methods().find(|m| m.name() == policy.method))
                .is_some_and(|m| m.is_server_streaming());
            let status = call_as(&app, &policy.path, streaming, &token).await;
            let allowed = !policy.platform_admin_only
                && match &policy.access {
                    Access::Public | Access::Authenticated => true,
                    Access::Permission(permission) => held.contains(permission),
                };
            let denied = status.code() == Code::PermissionDenied;
            assert_eq!(!denied, allowed, "{role} on {}: {status:?}", policy.path);
            assert_ne!(status.code(), Code::Unauthenticated, "{role} on {}: {status:?}", policy.path);
            assert_ne!(status.code(), Code::Internal, "{role} on {}: {status:?}", policy.path);
            checked += 1;
        }
    }
    assert!(checked >= 4 * 49);
}
