//! Cross-tenant attacks with real tenant credentials, over every
//! tenant-scoped RPC enumerated from the descriptor (a new RPC is covered
//! the moment it is added to the contract): naming another tenant is
//! PERMISSION_DENIED, and another tenant's ids and lists reveal nothing.

use tenantry::{
    policy::{Access, PolicyTable, TenantScope},
    proto::tenantry::v1::{GetTenantRequest, GetUserRequest, ListAuditEventsRequest, ListUsersRequest},
};
use tonic::Code;

use crate::harness::{TestApp, identity::bearer, spawn_app, with_metadata};

/// Calls `path` with an empty message; the stack answers before decoding.
async fn call_raw(app: &TestApp, path: &str, metadata: &[(&'static str, &str)]) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(with_metadata((), metadata), path, codec).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

#[tokio::test]
async fn a_tenant_credential_naming_another_tenant_is_refused_on_every_tenant_scoped_method() {
    let app = spawn_app().await;
    let alpha = app.tenant_with_owner("alpha").await;
    let bravo = app.tenant_with_owner("bravo").await;
    let authorization = format!("Bearer {}", alpha.owner_token);
    let table = PolicyTable::embedded().unwrap();
    let methods: Vec<_> = table
        .iter()
        .filter(|p| p.service.starts_with("tenantry.v1."))
        .filter(|p| p.tenant_scope != TenantScope::None && p.access != Access::Public)
        .collect();
    assert!(methods.len() >= 40, "only {} tenant-scoped methods", methods.len());
    for policy in methods {
        for forged in [bravo.id.as_str(), bravo.slug.as_str()] {
            let status =
                call_raw(&app, &policy.path, &[("authorization", &authorization), ("x-tenant-id", forged)]).await;
            assert_eq!(status.code(), Code::PermissionDenied, "{} naming {forged}: {status:?}", policy.path);
        }
        // Naming its own tenant is fine: the refusal above is about the other tenant.
        let own =
            call_raw(&app, &policy.path, &[("authorization", &authorization), ("x-tenant-id", &alpha.slug)]).await;
        assert_ne!(own.code(), Code::PermissionDenied, "{} naming its own tenant: {own:?}", policy.path);
    }
}

#[tokio::test]
async fn another_tenants_ids_and_lists_reveal_nothing() {
    let app = spawn_app().await;
    let alpha = app.tenant_with_owner("alpha").await;
    let bravo = app.tenant_with_owner("bravo").await;

    // Another tenant's user id: NOT_FOUND, never PERMISSION_DENIED.
    let status = app
        .auth()
        .get_user(bearer(GetUserRequest { user_id: bravo.owner.id.clone() }, &alpha.owner_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = app
        .tenants()
        .get_tenant(bearer(GetTenantRequest { tenant_id: bravo.id.clone() }, &alpha.owner_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Lists hold only the caller's tenant.
    let users = app.auth().list_users(bearer(ListUsersRequest::default(), &alpha.owner_token)).await.unwrap();
    let emails: Vec<String> = users.into_inner().users.into_iter().map(|u| u.email).collect();
    assert_eq!(emails, vec!["owner@alpha.test".to_owned()]);
    let events =
        app.auth().list_audit_events(bearer(ListAuditEventsRequest::default(), &alpha.owner_token)).await.unwrap();
    let events = events.into_inner().audit_events;
    assert!(!events.is_empty(), "alpha's own login is audited");
    for event in events {
        let serialized = format!("{event:?}");
        assert!(!serialized.contains(&bravo.id) && !serialized.contains("bravo"), "{serialized}");
    }
}
