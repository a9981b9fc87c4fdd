//! Tenant API keys: created with their secret shown once, scoped within the
//! creator's permissions, listed without secrets, revoked on every node
//! within a second, `last_used_time` kept in batches.

use std::time::Duration;

use tenantry::proto::tenantry::v1::{
    CreateApiKeyRequest, DeleteUserRequest, GetQuotaRequest, IntrospectTokenRequest, ListApiKeysRequest,
    ListUsersRequest, RevokeApiKeyRequest, SuspendTenantRequest, WhoAmIRequest,
};
use tonic::Code;

use crate::harness::{TestApp, eventually, identity::bearer};

fn key_request(name: &str, scopes: &[&str]) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expire_time: None,
    }
}

#[tokio::test]
async fn an_api_key_is_shown_once_authenticates_with_its_scopes_and_lists_without_its_secret() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let created = app
        .auth()
        .create_api_key(bearer(key_request("ci", &["users:read"]), &tenant.owner_token))
        .await
        .unwrap()
        .into_inner();
    let key = created.api_key.unwrap();
    assert!(created.secret.starts_with(&format!("tnty_{}_", key.public_id)));
    assert_eq!(key.created_by, tenant.owner.id);

    let me = app.auth().who_am_i(bearer(WhoAmIRequest {}, &created.secret)).await.unwrap().into_inner();
    assert_eq!(me.principal.unwrap().id, key.id);
    assert_eq!(me.permissions, vec!["users:read".to_owned()]);
    assert_eq!(me.tenant_id, tenant.id);
    app.auth().list_users(bearer(ListUsersRequest::default(), &created.secret)).await.unwrap();
    let status = app.auth().list_api_keys(bearer(ListApiKeysRequest::default(), &created.secret)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "scopes limit the key");

    let listed = app
        .auth()
        .list_api_keys(bearer(ListApiKeysRequest::default(), &tenant.owner_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.api_keys.len(), 1);
    assert!(!format!("{listed:?}").contains(&created.secret[22..]), "no secret in listings");
}

#[tokio::test]
async fn scopes_beyond_the_creators_permissions_are_refused() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let (_, member) = app.user_with_roles(&tenant, "mia", &["member"]).await;
    // A member cannot create keys at all; give them a role that can, but not users:create.
    let status = app.auth().create_api_key(bearer(key_request("x", &["users:read"]), &member)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let created = app
        .auth()
        .create_api_key(bearer(key_request("limited", &["apikeys:create", "users:read"]), &tenant.owner_token))
        .await
        .unwrap()
        .into_inner();
    let status = app
        .auth()
        .create_api_key(bearer(key_request("escalate", &["users:read", "users:create"]), &created.secret))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("users:create"), "{status:?}");
    let status = app
        .auth()
        .create_api_key(bearer(key_request("platform", &["tenants:create"]), &tenant.owner_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "platform permissions are not grantable");
    app.auth().create_api_key(bearer(key_request("narrower", &["users:read"]), &created.secret)).await.unwrap();
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_every_node_within_a_second() {
    let app = TestApp::builder().spawn().await;
    let peer = app.second_node().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let created = app
        .auth()
        .create_api_key(bearer(key_request("ci", &["users:read"]), &tenant.owner_token))
        .await
        .unwrap()
        .into_inner();
    // Both nodes verify (and cache) the key.
    app.auth().who_am_i(bearer(WhoAmIRequest {}, &created.secret)).await.unwrap();
    peer.auth().who_am_i(bearer(WhoAmIRequest {}, &created.secret)).await.unwrap();
    let revoked = app
        .auth()
        .revoke_api_key(bearer(RevokeApiKeyRequest { api_key_id: created.api_key.unwrap().id }, &tenant.owner_token))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.api_key.unwrap().revoke_time.is_some());
    let refused = eventually(Duration::from_secs(1), || {
        let mut client = peer.auth();
        let secret = created.secret.clone();
        async move {
            client.who_am_i(bearer(WhoAmIRequest {}, &secret)).await.is_err_and(|s| s.code() == Code::Unauthenticated)
        }
    })
    .await;
    assert!(refused, "the peer refuses the revoked key within a second");
    let status = app.auth().who_am_i(bearer(WhoAmIRequest {}, &created.secret)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_deleted_users_keys_die_with_them() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let (admin, admin_token) = app.user_with_roles(&tenant, "root", &["admin"]).await;
    let created =
        app.auth().create_api_key(bearer(key_request("ci", &["users:read"]), &admin_token)).await.unwrap().into_inner();
    app.auth().who_am_i(bearer(WhoAmIRequest {}, &created.secret)).await.unwrap();
    app.auth().delete_user(bearer(DeleteUserRequest { user_id: admin.id }, &tenant.owner_token)).await.unwrap();
    let refused = eventually(Duration::from_secs(1), || {
        let mut client = app.auth();
        let secret = created.secret.clone();
        async move { client.who_am_i(bearer(WhoAmIRequest {}, &secret)).await.is_err() }
    })
    .await;
    assert!(refused);
}

#[tokio::test]
async fn a_suspended_tenants_keys_are_refused() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let created = app
        .auth()
        .create_api_key(bearer(key_request("ci", &["usage:read"]), &tenant.owner_token))
        .await
        .unwrap()
        .into_inner();
    app.auth().who_am_i(bearer(WhoAmIRequest {}, &created.secret)).await.unwrap();
    app.tenants()
        .suspend_tenant(app.as_admin(SuspendTenantRequest { tenant_id: tenant.id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let status = app.usage().get_quota(bearer(GetQuotaRequest::default(), &created.secret)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn last_used_time_is_recorded_in_batches() {
    let app = TestApp::builder()
        .configure(|config| {
            config.identity.last_used_flush = Duration::from_millis(100);
        })
        .spawn()
        .await;
    let tenant = app.tenant_with_owner("acme").await;
    let created = app
        .auth()
        .create_api_key(bearer(key_request("ci", &["apikeys:read"]), &tenant.owner_token))
        .await
        .unwrap()
        .into_inner();
    assert!(created.api_key.unwrap().last_used_time.is_none());
    for _ in 0..5 {
        app.auth().who_am_i(bearer(WhoAmIRequest {}, &created.secret)).await.unwrap();
    }
    let recorded = eventually(Duration::from_secs(3), || {
        let mut client = app.auth();
        let secret = created.secret.clone();
        async move {
            let keys = client.list_api_keys(bearer(ListApiKeysRequest::default(), &secret)).await.unwrap().into_inner();
            keys.api_keys[0].last_used_time.is_some()
        }
    })
    .await;
    assert!(recorded);
}

#[tokio::test]
async fn introspection_reports_active_credentials_of_the_callers_tenant_only() {
    let app = TestApp::builder().spawn().await;
    let acme = app.tenant_with_owner("acme").await;
    let globex = app.tenant_with_owner("globex").await;
    let introspect = |token: &str, caller: &str| {
        let mut client = app.auth();
        let request = bearer(IntrospectTokenRequest { token: token.to_owned() }, caller);
        async move { client.introspect_token(request).await.unwrap().into_inner() }
    };
    let own = introspect(&acme.owner_token, &acme.owner_token).await;
    assert!(own.active);
    assert_eq!(own.principal.unwrap().id, acme.owner.id);
    assert_eq!(own.tenant_id, acme.id);
    assert!(own.expire_time.is_some() && own.issue_time.is_some());
    let foreign = introspect(&globex.owner_token, &acme.owner_token).await;
    assert_eq!(foreign, Default::default(), "another tenant's token is simply inactive");
    let garbage = introspect("not.a.token", &acme.owner_token).await;
    assert!(!garbage.active);
    let from_admin = app
        .auth()
        .introspect_token(app.as_admin(IntrospectTokenRequest { token: globex.owner_token.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert!(from_admin.active);
}
