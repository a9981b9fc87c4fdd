//! Cross-tenant attacks with real tenant credentials, over every
//! tenant-scoped RPC enumerated from the descriptor (a new RPC is covered
//! the moment it is added to the contract): naming another tenant is
//! PERMISSION_DENIED, and another tenant's ids and lists reveal nothing.
//!
//! # Layout
//!
//! - this file: the forged `x-tenant-id` sweep, and the runner of the case
//!   table: every entry, for three attacker/victim pairings (each direction
//!   between two tenants with an owner's token, and an API key), with the
//!   victim's snapshot compared around every attack.
//! - [`cases`]: one entry per tenant-scoped RPC, and the helpers attacks share.
//! - [`identity_attacks`], [`workload_attacks`]: the attacks, by service.
//! - [`estate`]: a tenant holding a real resource of every kind, and its
//!   snapshot.

mod cases;
mod estate;
mod identity_attacks;
mod workload_attacks;

use tenantry::{
    identity::roles::CATALOGUE,
    policy::{Access, PolicyTable, TenantScope},
    proto::tenantry::v1::{
        CreateApiKeyRequest, GetTenantRequest, GetUserRequest, ListAuditEventsRequest, ListUsersRequest,
    },
};
use tonic::Code;

use self::{
    cases::{CASES, Class, Duel, table_mismatches, tenant_scoped_rpcs},
    estate::Estate,
};
use crate::harness::{TestApp, identity::bearer};

#[tokio::test]
async fn a_tenant_credential_naming_another_tenant_is_refused_on_every_tenant_scoped_method() {
    let app = TestApp::builder().spawn().await;
    let alpha = app.tenant_with_owner("alpha").await;
    let bravo = app.tenant_with_owner("bravo").await;
    let key = CreateApiKeyRequest {
        name: "automation".into(),
        scopes: CATALOGUE.iter().map(|(p, _)| (*p).to_owned()).collect(),
        expire_time: None,
    };
    let key = app.auth().create_api_key(bearer(key, &alpha.owner_token)).await.unwrap().into_inner().secret;
    let table = PolicyTable::embedded().unwrap();
    let methods: Vec<_> = table
        .iter()
        .filter(|p| p.service.starts_with("tenantry.v1."))
        .filter(|p| p.tenant_scope != TenantScope::None && p.access != Access::Public)
        .collect();
    assert!(methods.len() >= 40, "only {} tenant-scoped methods", methods.len());
    // Naming a tenant that does not exist is refused alike: no existence oracle.
    let nobody = tenantry::ids::new_id("ten");
    for (credential, secret) in [("owner token", &alpha.owner_token), ("API key", &key)] {
        let authorization = format!("Bearer {secret}");
        for policy in &methods {
            for forged in [bravo.id.as_str(), bravo.slug.as_str(), nobody.as_str()] {
                let metadata = [("authorization", authorization.as_str()), ("x-tenant-id", forged)];
                let status = app.call_raw(&policy.path, &metadata).await;
                let path = &policy.path;
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{path} with the {credential} naming {forged}: {status:?}"
                );
            }
            // Naming its own tenant is fine: the refusal above is about the other tenant.
            let own = [("authorization", authorization.as_str()), ("x-tenant-id", alpha.slug.as_str())];
            let own = app.call_raw(&policy.path, &own).await;
            assert_ne!(own.code(), Code::PermissionDenied, "{} naming its own tenant: {own:?}", policy.path);
        }
    }
}

#[tokio::test]
async fn another_tenants_ids_and_lists_reveal_nothing() {
    let app = TestApp::builder().spawn().await;
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

#[test]
fn the_case_table_covers_exactly_the_tenant_scoped_rpcs_of_the_descriptor() {
    let rpcs = tenant_scoped_rpcs();
    assert!(rpcs.len() >= 40, "only {} tenant-scoped RPCs: {rpcs:?}", rpcs.len());
    let table: Vec<&str> = CASES.iter().map(|c| c.rpc).collect();
    let problems = table_mismatches(&rpcs, &table);
    assert!(problems.is_empty(), "the cross-tenant case table is out of date:\n{}", problems.join("\n"));
    // Every RPC that takes an id of a tenant's resource is attacked with one.
    for rpc in ["AuthService/GetUser", "AuthService/RevokeApiKey", "JobsService/CompleteJob", "TenantService/GetTenant"]
    {
        let case = CASES.iter().find(|c| c.rpc == rpc).unwrap();
        assert_eq!(case.class, Class::ForeignIds, "{rpc}");
    }
}

#[test]
fn the_table_check_names_an_rpc_without_a_case_and_a_case_without_an_rpc() {
    let descriptor = vec!["AuthService/GetUser".to_owned(), "JobsService/PauseJob".to_owned()];
    let problems = table_mismatches(&descriptor, &["AuthService/GetUser", "AuthService/GetUserV0"]);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("JobsService/PauseJob is tenant-scoped in the descriptor but has no"),
        "{problems:#?}"
    );
    assert!(problems[1].starts_with("AuthService/GetUserV0 has a case but is not"), "{problems:#?}");
    let twice = table_mismatches(&descriptor[..1], &["AuthService/GetUser", "AuthService/GetUser"]);
    assert_eq!(twice, vec!["AuthService/GetUser has 2 cases".to_owned()]);
}

#[tokio::test]
async fn another_tenants_resources_answer_not_found_and_stay_unchanged_on_every_tenant_scoped_rpc() {
    let rpcs = tenant_scoped_rpcs();
    let table: Vec<&str> = CASES.iter().map(|c| c.rpc).collect();
    let problems = table_mismatches(&rpcs, &table);
    assert!(problems.is_empty(), "the cross-tenant case table is out of date:\n{}", problems.join("\n"));

    let app = TestApp::builder().spawn().await;
    let alpha = Estate::build(&app, "alpha").await;
    let bravo = Estate::build(&app, "bravo").await;
    let charlie = Estate::build(&app, "charlie").await;
    // Each attacker attacks once, so what it creates under the victim's names
    // in its own tenant never collides with an earlier attack of its own.
    let token = "its owner's access token";
    let runs = [
        (&alpha, alpha.owner_token.as_str(), token, &bravo),
        (&bravo, bravo.owner_token.as_str(), token, &alpha),
        (&charlie, charlie.api_key_secret.as_str(), "a full-scope API key", &alpha),
    ];
    for (attacker, credential, credential_kind, victim) in runs {
        for case in CASES {
            let duel = Duel { app: &app, attacker, victim, credential, credential_kind, rpc: case.rpc };
            let before = victim.snapshot(&app).await;
            (case.attack)(&duel).await;
            let changed = before.differences(&victim.snapshot(&app).await);
            assert!(changed.is_empty(), "{duel}: the victim's data changed:\n{}", changed.join("\n"));
            if let Some(afterwards) = case.afterwards {
                afterwards(&duel).await;
            }
        }
    }
    for estate in [&alpha, &bravo, &charlie] {
        estate.still_works(&app).await;
    }
}
