//! Platform-admin API keys at the edge: missing, malformed, unknown, revoked
//! and valid credentials, in both headers.

use std::time::Duration;

use tenantry::proto::tenantry::v1::{GetJwksRequest, ListTenantsRequest};
use tonic::Code;

use crate::harness::{TestApp, eventually, with_metadata};

const WELL_FORMED_UNKNOWN: &str = "tnty_AAAAAAAAAAAAAAAA_0123456789012345678901234567890123456789012";

#[tokio::test]
async fn a_call_without_credentials_is_unauthenticated_with_a_clear_message() {
    let app = TestApp::builder().spawn().await;
    let status = app.tenants().list_tenants(ListTenantsRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("authorization: Bearer"), "{}", status.message());
}

#[tokio::test]
async fn malformed_and_unknown_credentials_are_unauthenticated_never_internal() {
    let app = TestApp::builder().spawn().await;
    let long = format!("Bearer {}", "x".repeat(9000));
    let cases: Vec<(&'static str, String)> = vec![
        ("authorization", format!("Bearer {WELL_FORMED_UNKNOWN}")),
        ("x-api-key", WELL_FORMED_UNKNOWN.to_owned()),
        ("authorization", "Basic dXNlcjpwYXNz".into()),
        ("authorization", "Bearer".into()),
        ("authorization", "Bearer tnty_short_key".into()),
        ("authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".into()),
        ("x-api-key", "tnty_AAAAAAAAAAAAAAAA_0123456789012345678901234567890123456789012_x".into()),
        ("authorization", long),
    ];
    for (header, value) in cases {
        let request = with_metadata(ListTenantsRequest::default(), &[(header, &value)]);
        let status = app.tenants().list_tenants(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{header}: {value:.40} → {status:?}");
        assert!(!status.message().contains("0123456789"), "the message echoes the credential");
    }
}

#[tokio::test]
async fn a_valid_key_with_the_wrong_secret_is_refused() {
    let app = TestApp::builder().spawn().await;
    let (public_id, _secret) = app.admin_key.trim_start_matches("tnty_").split_once('_').unwrap();
    let forged = format!("tnty_{public_id}_{}", "A".repeat(43));
    let request = with_metadata(ListTenantsRequest::default(), &[("x-api-key", &forged)]);
    let status = app.tenants().list_tenants(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// Admin keys are cached per node; revoking or expiring one with plain SQL
/// reaches every node through the table's trigger and NOTIFY.
#[tokio::test]
async fn a_revoked_or_expired_admin_key_is_refused_on_every_node_within_a_second() {
    for change in ["revoked_at = now()", "expires_at = now() - interval '1 second'"] {
        let app = TestApp::builder().spawn().await;
        let peer = app.second_node().spawn().await;
        // Both nodes verify (and cache) the key.
        for node in [&app, &peer] {
            node.tenants().list_tenants(app.as_admin(ListTenantsRequest::default())).await.unwrap();
        }
        sqlx::query(&format!("UPDATE platform.admin_api_keys SET {change}")).execute(&app.pool).await.unwrap();
        for node in [&app, &peer] {
            let refused = eventually(Duration::from_secs(1), || {
                let (mut client, request) = (node.tenants(), app.as_admin(ListTenantsRequest::default()));
                async move { client.list_tenants(request).await.is_err_and(|s| s.code() == Code::Unauthenticated) }
            })
            .await;
            assert!(refused, "{change}: a node still accepts the key after a second");
        }
    }
}

#[tokio::test]
async fn a_valid_admin_key_is_accepted_in_either_header() {
    let app = TestApp::builder().spawn().await;
    let response = app.tenants().list_tenants(app.as_admin(ListTenantsRequest::default())).await;
    assert!(response.is_ok(), "{response:?}");
    let request = with_metadata(ListTenantsRequest::default(), &[("x-api-key", &app.admin_key)]);
    let response = app.tenants().list_tenants(request).await;
    assert!(response.is_ok(), "{response:?}");
}

#[tokio::test]
async fn sending_both_credential_headers_is_refused() {
    let app = TestApp::builder().spawn().await;
    let bearer = format!("Bearer {}", app.admin_key);
    let request =
        with_metadata(ListTenantsRequest::default(), &[("authorization", &bearer), ("x-api-key", &app.admin_key)]);
    let status = app.tenants().list_tenants(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn public_methods_need_no_credential() {
    let app = TestApp::builder().spawn().await;
    match app.auth().get_jwks(GetJwksRequest::default()).await {
        Ok(_) => {}
        Err(status) => assert_eq!(status.code(), Code::Unimplemented, "{status:?}"),
    }
}

#[tokio::test]
async fn unknown_methods_are_unimplemented_before_authentication() {
    let app = TestApp::builder().spawn().await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/tenantry.v1.TenantService/NoSuchMethod");
    let codec = tonic_prost::ProstCodec::<ListTenantsRequest, ListTenantsRequest>::default();
    let status = grpc.unary(tonic::Request::new(ListTenantsRequest::default()), path, codec).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("NoSuchMethod"));
}

#[tokio::test]
async fn every_method_refuses_anonymous_callers_unless_its_policy_is_public() {
    let app = TestApp::builder().spawn().await;
    let table = tenantry::policy::PolicyTable::embedded().unwrap();
    let methods: Vec<_> = table.iter().filter(|p| p.service.starts_with("tenantry.v1.")).collect();
    assert!(methods.len() >= 49);
    for policy in methods {
        let status = app.call_raw(&policy.path, &[]).await;
        if policy.access == tenantry::policy::Access::Public {
            // Public methods run (and may refuse the empty message) or are not served yet.
            assert_ne!(status.code(), Code::Unauthenticated, "{}: {status:?}", policy.path);
        } else {
            assert_eq!(status.code(), Code::Unauthenticated, "{}: {status:?}", policy.path);
        }
    }
}

#[tokio::test]
async fn an_admin_gets_past_authentication_and_authorization_on_every_method() {
    let app = TestApp::builder().spawn().await;
    let table = tenantry::policy::PolicyTable::embedded().unwrap();
    let bearer = format!("Bearer {}", app.admin_key);
    for policy in table.iter().filter(|p| p.service.starts_with("tenantry.v1.")) {
        let status = app.call_raw(&policy.path, &[("authorization", &bearer)]).await;
        let code = status.code();
        assert!(
            ![Code::Unauthenticated, Code::PermissionDenied, Code::Internal].contains(&code),
            "{}: {status:?}",
            policy.path
        );
        if policy.tenant_scope == tenantry::policy::TenantScope::Required {
            // Tenant-scoped calls need a tenant named first.
            assert_eq!(code, Code::InvalidArgument, "{}: {status:?}", policy.path);
        }
        if code == Code::Unimplemented {
            let name = format!("{}.{}", policy.service, policy.method);
            assert!(status.message().contains(&name), "an unlanded method is named: {status:?}");
        }
    }
}
