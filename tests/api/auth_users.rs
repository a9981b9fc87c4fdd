//! Users: the owner created with the tenant, CRUD, disabling and deleting
//! (their tokens, sessions and keys die with them), passwords, last owner.

use std::time::Duration;

use prost_types::FieldMask;
use tenantry::proto::tenantry::v1::{
    ChangePasswordRequest, CreateTenantRequest, CreateUserRequest, DeleteUserRequest, GetUserRequest, ListUsersRequest,
    RefreshTokenRequest, UpdateUserRequest, User, UserState, WhoAmIRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{
    TestApp, eventually,
    identity::{PASSWORD, bearer},
};

#[tokio::test]
async fn creating_a_tenant_with_an_owner_creates_the_owner_in_the_same_transaction() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    assert_eq!(tenant.owner.email, "owner@acme.test");
    assert_eq!(tenant.owner.roles, vec!["owner".to_owned()]);
    // A bad owner password refuses the whole tenant: nothing is left behind.
    let status = app
        .tenants()
        .create_tenant(app.as_admin(CreateTenantRequest {
            slug: "weak".into(),
            display_name: "Weak".into(),
            plan_id: "free".into(),
            owner_email: Some("owner@weak.test".into()),
            owner_password: Some("short".into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.get_error_details().bad_request().unwrap().field_violations[0].field, "owner_password");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.tenants WHERE slug = 'weak'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn users_are_created_read_listed_and_updated() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let token = &tenant.owner_token;
    let (ada, _) = app.user_with_roles(&tenant, "ada", &["member"]).await;
    assert_eq!(ada.state, UserState::Active as i32);
    let duplicate =
        CreateUserRequest { email: "ADA@acme.test".into(), password: PASSWORD.into(), ..Default::default() };
    let status = app.auth().create_user(bearer(duplicate, token)).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let weak = CreateUserRequest { email: "bob@acme.test".into(), password: "too short".into(), ..Default::default() };
    let status = app.auth().create_user(bearer(weak, token)).await.unwrap_err();
    assert_eq!(status.get_error_details().bad_request().unwrap().field_violations[0].field, "password");

    let got = app.auth().get_user(bearer(GetUserRequest { user_id: ada.id.clone() }, token)).await.unwrap();
    assert_eq!(got.into_inner().user.unwrap().email, "ada@acme.test");
    let page = app
        .auth()
        .list_users(bearer(ListUsersRequest { page_size: 1, ..Default::default() }, token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.users[0].id, ada.id, "newest first");
    let next = app
        .auth()
        .list_users(bearer(
            ListUsersRequest { page_size: 1, page_token: page.next_page_token, ..Default::default() },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.users[0].id, tenant.owner.id);
    assert!(next.next_page_token.is_empty());
    let members = app
        .auth()
        .list_users(bearer(ListUsersRequest { role_id: "member".into(), ..Default::default() }, token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.users.len(), 1);

    let update = UpdateUserRequest {
        user: Some(User {
            id: ada.id.clone(),
            display_name: "Ada L.".into(),
            email: "ignored@x.test".into(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask { paths: vec!["display_name".into()] }),
    };
    let updated = app.auth().update_user(bearer(update, token)).await.unwrap().into_inner().user.unwrap();
    assert_eq!((updated.display_name.as_str(), updated.email.as_str()), ("Ada L.", "ada@acme.test"));
    let bad_path = UpdateUserRequest {
        user: Some(User { id: ada.id.clone(), ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["roles".into()] }),
    };
    let status = app.auth().update_user(bearer(bad_path, token)).await.unwrap_err();
    assert_eq!(status.get_error_details().bad_request().unwrap().field_violations[0].field, "update_mask");
}

#[tokio::test]
async fn another_tenants_user_is_not_found() {
    let app = TestApp::builder().spawn().await;
    let acme = app.tenant_with_owner("acme").await;
    let other = app.tenant_with_owner("globex").await;
    let status =
        app.auth().get_user(bearer(GetUserRequest { user_id: other.owner.id }, &acme.owner_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn a_deleted_users_tokens_and_sessions_stop_working_on_every_node() {
    let app = TestApp::builder().spawn().await;
    let peer = app.second_node().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let (ada, token) = app.user_with_roles(&tenant, "ada", &["member"]).await;
    let refresh = app.login("acme", "ada@acme.test", PASSWORD).await.unwrap().refresh_token;
    // Both nodes have verified (and cached) the token.
    app.auth().who_am_i(bearer(WhoAmIRequest {}, &token)).await.unwrap();
    peer.auth().who_am_i(bearer(WhoAmIRequest {}, &token)).await.unwrap();
    app.auth().delete_user(bearer(DeleteUserRequest { user_id: ada.id.clone() }, &tenant.owner_token)).await.unwrap();
    let refused = eventually(Duration::from_secs(2), || {
        let mut client = peer.auth();
        let token = token.clone();
        async move {
            client.who_am_i(bearer(WhoAmIRequest {}, &token)).await.is_err_and(|s| s.code() == Code::Unauthenticated)
        }
    })
    .await;
    assert!(refused, "the peer node refuses the deleted user's token");
    let status = app.auth().who_am_i(bearer(WhoAmIRequest {}, &token)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = app.auth().refresh_token(RefreshTokenRequest { refresh_token: refresh }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = app.login("acme", "ada@acme.test", PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status =
        app.auth().get_user(bearer(GetUserRequest { user_id: ada.id }, &tenant.owner_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn a_disabled_user_cannot_log_in_or_use_their_token() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let (ada, token) = app.user_with_roles(&tenant, "ada", &["viewer"]).await;
    let update = UpdateUserRequest {
        user: Some(User { id: ada.id, state: UserState::Disabled as i32, ..Default::default() }),
        update_mask: None,
    };
    let user = app.auth().update_user(bearer(update, &tenant.owner_token)).await.unwrap().into_inner().user.unwrap();
    assert_eq!(user.state, UserState::Disabled as i32);
    let status = app.auth().who_am_i(bearer(WhoAmIRequest {}, &token)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = app.login("acme", "ada@acme.test", PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn the_last_owner_cannot_be_deleted_or_disabled() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let request = DeleteUserRequest { user_id: tenant.owner.id.clone() };
    let status = app.auth().delete_user(bearer(request, &tenant.owner_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let update = UpdateUserRequest {
        user: Some(User { id: tenant.owner.id.clone(), state: UserState::Disabled as i32, ..Default::default() }),
        update_mask: None,
    };
    let status = app.auth().update_user(bearer(update, &tenant.owner_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn an_admin_cannot_delete_an_owner() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let (_, admin) = app.user_with_roles(&tenant, "root", &["admin"]).await;
    let status = app
        .auth()
        .delete_user(bearer(DeleteUserRequest { user_id: tenant.owner.id.clone() }, &admin))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn changing_ones_own_password_needs_the_current_one_and_ends_other_sessions() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let (ada, token) = app.user_with_roles(&tenant, "ada", &["viewer"]).await;
    let other_session = app.login("acme", "ada@acme.test", PASSWORD).await.unwrap().refresh_token;
    let wrong = ChangePasswordRequest {
        user_id: ada.id.clone(),
        current_password: "not the password".into(),
        new_password: "a brand new passphrase".into(),
    };
    let status = app.auth().change_password(bearer(wrong, &token)).await.unwrap_err();
    assert_eq!(status.get_error_details().bad_request().unwrap().field_violations[0].field, "current_password");
    let right = ChangePasswordRequest {
        user_id: ada.id.clone(),
        current_password: PASSWORD.into(),
        new_password: "a brand new passphrase".into(),
    };
    app.auth().change_password(bearer(right, &token)).await.unwrap();
    let status = app.auth().refresh_token(RefreshTokenRequest { refresh_token: other_session }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(app.login("acme", "ada@acme.test", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    app.login("acme", "ada@acme.test", "a brand new passphrase").await.unwrap();
    // Someone else's password needs users:update, which a viewer lacks.
    let other = ChangePasswordRequest {
        user_id: tenant.owner.id.clone(),
        current_password: String::new(),
        new_password: "hijacked passphrase".into(),
    };
    let status = app.auth().change_password(bearer(other, &token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}
