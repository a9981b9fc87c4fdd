//! Update masks on every Update RPC (UpdateTenant, UpdateUser, UpdateRole,
//! UpdateScalingPolicy), over gRPC and REST: proto field paths (AIP-161),
//! JSON names, `*` (AIP-134 full replacement), and bad masks refused as
//! INVALID_ARGUMENT naming `update_mask` wherever the mask came from.

use std::collections::HashMap;

use http::Method;
use prost_types::FieldMask;
use serde_json::{Value, json};
use tenantry::proto::tenantry::v1::{
    CreateRoleRequest, CreateTenantRequest, Role, ScalingPolicy, Tenant, UpdateRoleRequest, UpdateScalingPolicyRequest,
    UpdateTenantRequest, UpdateUserRequest, User, UserState, scaling_service_client::ScalingServiceClient,
};

use super::{grpc_violation, rest, rest_violation};
use crate::harness::{TestApp, identity, identity::bearer, with_metadata};

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}

/// A tenant with an owner, a second user and a custom role to update.
struct Fixture {
    app: TestApp,
    tenant: identity::Tenant,
    user_id: String,
    role_id: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let app = TestApp::builder().spawn().await;
        let tenant = app.tenant_with_owner("acme").await;
        let (user, _) = app.user_with_roles(&tenant, "bob", &["member"]).await;
        let role = CreateRoleRequest {
            name: "Auditor".into(),
            description: "reads the audit log".into(),
            permissions: vec!["audit:read".into()],
        };
        let role = app.auth().create_role(bearer(role, &tenant.owner_token)).await.unwrap().into_inner().role.unwrap();
        Fixture { app, tenant, user_id: user.id, role_id: role.id }
    }

    fn owner(&self) -> String {
        format!("Bearer {}", self.tenant.owner_token)
    }

    /// A second tenant, "Globex" on the free plan, labelled region=eu.
    async fn globex(&self) -> Tenant {
        let labelled = CreateTenantRequest {
            slug: "globex".into(),
            display_name: "Globex".into(),
            plan_id: "free".into(),
            labels: HashMap::from([("region".to_owned(), "eu".to_owned())]),
            ..Default::default()
        };
        self.app.tenants().create_tenant(self.app.as_admin(labelled)).await.unwrap().into_inner().tenant.unwrap()
    }

    fn admin(&self) -> String {
        format!("Bearer {}", self.app.admin_key)
    }
}

/// Every Update RPC of the contract.
#[derive(Debug, Clone, Copy)]
enum Update {
    Tenant,
    User,
    Role,
    ScalingPolicy,
}

const EVERY_UPDATE: [Update; 4] = [Update::Tenant, Update::User, Update::Role, Update::ScalingPolicy];

impl Update {
    /// Paths of the resource that exist but cannot be updated (output only
    /// or immutable).
    fn fixed_paths(self) -> &'static [&'static str] {
        match self {
            Update::Tenant => &["id", "slug", "state", "create_time", "updateTime"],
            Update::User => &["id", "roles", "create_time", "lastLoginTime"],
            Update::Role => &["id", "built_in", "createTime"],
            Update::ScalingPolicy => &["update_time", "updateTime"],
        }
    }

    /// The REST path and the credential headers.
    fn rest_target(self, fx: &Fixture) -> (String, Vec<(&'static str, String)>) {
        match self {
            Update::Tenant => (format!("/v1/tenants/{}", fx.tenant.id), vec![("authorization", fx.admin())]),
            Update::User => (format!("/v1/users/{}", fx.user_id), vec![("authorization", fx.owner())]),
            Update::Role => (format!("/v1/roles/{}", fx.role_id), vec![("authorization", fx.owner())]),
            Update::ScalingPolicy => (
                "/v1/scaling/policy".to_owned(),
                vec![("authorization", fx.admin()), ("x-tenant-id", fx.tenant.id.clone())],
            ),
        }
    }

    /// A body every path of the resource's mask could take its value from.
    fn rest_body(self) -> Value {
        match self {
            Update::Tenant => json!({"displayName": "Acme"}),
            Update::User => json!({"displayName": "Bob"}),
            Update::Role => json!({"description": "reads"}),
            Update::ScalingPolicy => json!({"maxReplicas": 9}),
        }
    }

    async fn rest(self, fx: &Fixture, query: &str, body: &Value) -> (u16, Value) {
        let (path, headers) = self.rest_target(fx);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        rest(&fx.app, Method::PATCH, &format!("{path}{query}"), &headers, Some(body)).await
    }

    async fn grpc(self, fx: &Fixture, paths: &[&str]) -> Result<(), tonic::Status> {
        let app = &fx.app;
        let token = &fx.tenant.owner_token;
        match self {
            Update::Tenant => {
                let tenant = Tenant { id: fx.tenant.id.clone(), display_name: "Acme".into(), ..Default::default() };
                let request = UpdateTenantRequest { tenant: Some(tenant), update_mask: mask(paths) };
                app.tenants().update_tenant(app.as_admin(request)).await.map(drop)
            }
            Update::User => {
                let user = User { id: fx.user_id.clone(), display_name: "Bob".into(), ..Default::default() };
                let request = UpdateUserRequest { user: Some(user), update_mask: mask(paths) };
                app.auth().update_user(bearer(request, token)).await.map(drop)
            }
            Update::Role => {
                let role = Role { id: fx.role_id.clone(), description: "reads".into(), ..Default::default() };
                let request = UpdateRoleRequest { role: Some(role), update_mask: mask(paths) };
                app.auth().update_role(bearer(request, token)).await.map(drop)
            }
            Update::ScalingPolicy => {
                let policy = ScalingPolicy { max_replicas: 9, ..Default::default() };
                let request = UpdateScalingPolicyRequest { policy: Some(policy), update_mask: mask(paths) };
                scaling(fx).update_scaling_policy(in_tenant(fx, request)).await.map(drop)
            }
        }
    }
}

fn scaling(fx: &Fixture) -> ScalingServiceClient<tonic::transport::Channel> {
    ScalingServiceClient::new(fx.app.channel.clone())
}

fn in_tenant<T>(fx: &Fixture, message: T) -> tonic::Request<T> {
    with_metadata(message, &[("authorization", &fx.admin()), ("x-tenant-id", &fx.tenant.id)])
}

#[tokio::test]
async fn every_update_rpc_refuses_a_bad_mask_naming_update_mask_over_grpc_and_rest() {
    let fx = Fixture::new().await;
    for update in EVERY_UPDATE {
        let mut bad: Vec<Vec<&str>> =
            vec![vec!["nope"], vec!["display_name."], vec![""], vec!["a", ""], vec!["*", "id"]];
        bad.extend(update.fixed_paths().iter().map(|p| vec![*p]));
        for paths in bad {
            let status = update.grpc(&fx, &paths).await.expect_err(&format!("{update:?} {paths:?} over gRPC"));
            assert_eq!(grpc_violation(&status), "update_mask", "{update:?} {paths:?}: {status:?}");
            let joined = paths.join(",");
            if joined.is_empty() {
                continue; // `?updateMask=` is the JSON form of an empty mask: no mask.
            }
            for name in ["updateMask", "update_mask"] {
                let query = format!("?{name}={}", joined.replace('*', "%2A"));
                let (status, error) = update.rest(&fx, &query, &update.rest_body()).await;
                assert_eq!(status, 400, "{update:?} {query}: {error}");
                assert_eq!(error["code"], 3, "{error}");
                assert_eq!(rest_violation(&error), "update_mask", "{update:?} {query}: {error}");
                let message = error["message"].as_str().unwrap();
                assert!(message.contains("update_mask") && !message.contains("body"), "{update:?} {query}: {message}");
            }
        }
    }
}

#[tokio::test]
async fn every_update_rpc_accepts_proto_paths_and_json_names_over_grpc_and_rest() {
    let fx = Fixture::new().await;
    let cases: [(Update, &[&str]); 4] = [
        (Update::Tenant, &["display_name", "displayName"]),
        (Update::User, &["display_name", "displayName"]),
        (Update::Role, &["description"]),
        (Update::ScalingPolicy, &["max_replicas", "maxReplicas"]),
    ];
    for (update, spellings) in cases {
        for path in spellings {
            update.grpc(&fx, &[path]).await.unwrap_or_else(|s| panic!("{update:?} {path} over gRPC: {s:?}"));
            for name in ["updateMask", "update_mask"] {
                let (status, body) = update.rest(&fx, &format!("?{name}={path}"), &update.rest_body()).await;
                assert_eq!(status, 200, "{update:?} ?{name}={path}: {body}");
            }
        }
    }
}

#[tokio::test]
async fn a_mask_changes_only_the_fields_it_names_in_either_spelling() {
    let fx = Fixture::new().await;
    let tenant = fx.globex().await;
    let admin = fx.admin();
    let headers = [("authorization", admin.as_str())];
    // The body clears the labels, but only the display name is in the mask.
    let body = json!({"displayName": "Globex Corp", "labels": {}});
    for query in ["?update_mask=display_name", "?updateMask=displayName"] {
        let path = format!("/v1/tenants/{}{query}", tenant.id);
        let (status, patched) = rest(&fx.app, Method::PATCH, &path, &headers, Some(&body)).await;
        assert_eq!(status, 200, "{query}: {patched}");
        assert_eq!(patched["tenant"]["displayName"], "Globex Corp");
        assert_eq!(patched["tenant"]["labels"], json!({"region": "eu"}), "{query}");
    }
    let user =
        User { id: fx.user_id.clone(), display_name: "Robert".into(), email: "x@y.test".into(), ..Default::default() };
    let request = UpdateUserRequest { user: Some(user), update_mask: mask(&["displayName"]) };
    let updated = fx.app.auth().update_user(bearer(request, &fx.tenant.owner_token)).await.unwrap().into_inner();
    let updated = updated.user.unwrap();
    assert_eq!((updated.display_name.as_str(), updated.email.as_str()), ("Robert", "bob@acme.test"));
    let policy = ScalingPolicy { max_replicas: 12, min_replicas: 40, ..Default::default() };
    let request = UpdateScalingPolicyRequest { policy: Some(policy), update_mask: mask(&["maxReplicas"]) };
    let policy = scaling(&fx).update_scaling_policy(in_tenant(&fx, request)).await.unwrap().into_inner();
    let policy = policy.policy.unwrap();
    assert_eq!((policy.min_replicas, policy.max_replicas), (2, 12), "enterprise starts at 2; min is not in the mask");
}

#[tokio::test]
async fn a_star_mask_replaces_every_mutable_field_and_resets_the_absent_ones() {
    let fx = Fixture::new().await;
    let admin = fx.admin();
    let owner = fx.owner();

    // UpdateTenant over REST: labels absent from the body are cleared.
    let tenant = fx.globex().await;
    let path = format!("/v1/tenants/{}?updateMask=*", tenant.id);
    let body = json!({"displayName": "Globex 2", "planId": "pro"});
    let (status, replaced) = rest(&fx.app, Method::PATCH, &path, &[("authorization", &admin)], Some(&body)).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["tenant"]["labels"], json!({}), "{replaced}");
    assert_eq!(
        (replaced["tenant"]["displayName"].as_str(), replaced["tenant"]["planId"].as_str()),
        (Some("Globex 2"), Some("pro"))
    );
    // A required field left out of a full replacement is refused, naming it.
    let only_name = Tenant { id: tenant.id.clone(), display_name: "Globex 3".into(), ..Default::default() };
    let request = UpdateTenantRequest { tenant: Some(only_name), update_mask: mask(&["*"]) };
    let status = fx.app.tenants().update_tenant(fx.app.as_admin(request)).await.unwrap_err();
    assert_eq!(grpc_violation(&status), "tenant.plan_id", "{status:?}");

    // A tenant admin's `*` replaces what it may change; the plan stays unless named.
    let own = format!("/v1/tenants/{}?updateMask=*", fx.tenant.id);
    let body = json!({"displayName": "Acme Star"});
    let (status, replaced) = rest(&fx.app, Method::PATCH, &own, &[("authorization", &owner)], Some(&body)).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(
        (replaced["tenant"]["displayName"].as_str(), replaced["tenant"]["planId"].as_str()),
        (Some("Acme Star"), Some("enterprise"))
    );
    let body = json!({"displayName": "Acme Star", "planId": "free"});
    let (status, refused) = rest(&fx.app, Method::PATCH, &own, &[("authorization", &owner)], Some(&body)).await;
    assert_eq!(status, 403, "{refused}");

    // UpdateUser over gRPC: the display name absent from the request is reset.
    let user = User {
        id: fx.user_id.clone(),
        email: "robert@acme.test".into(),
        state: UserState::Active as i32,
        ..Default::default()
    };
    let request = UpdateUserRequest { user: Some(user), update_mask: mask(&["*"]) };
    let user = fx.app.auth().update_user(bearer(request, &fx.tenant.owner_token)).await.unwrap().into_inner();
    let user = user.user.unwrap();
    assert_eq!((user.email.as_str(), user.display_name.as_str()), ("robert@acme.test", ""));

    // UpdateRole over REST: the description absent from the body is reset.
    let path = format!("/v1/roles/{}?update_mask=*", fx.role_id);
    let body = json!({"name": "Reader", "permissions": ["audit:read"]});
    let (status, role) = rest(&fx.app, Method::PATCH, &path, &[("authorization", &owner)], Some(&body)).await;
    assert_eq!(status, 200, "{role}");
    assert_eq!((role["role"]["name"].as_str(), role["role"]["description"].as_str()), (Some("Reader"), Some("")));

    // UpdateScalingPolicy over REST: the tolerance set first is reset to its default.
    let headers = [("authorization", admin.as_str()), ("x-tenant-id", fx.tenant.id.as_str())];
    let body = json!({"scaleUpTolerance": 0.3});
    let (status, set) =
        rest(&fx.app, Method::PATCH, "/v1/scaling/policy?updateMask=scaleUpTolerance", &headers, Some(&body)).await;
    assert_eq!((status, set["policy"]["scaleUpTolerance"].as_f64()), (200, Some(0.3)), "{set}");
    let body = json!({"minReplicas": 2, "maxReplicas": 5, "metrics": [{"signal": "SCALING_SIGNAL_JOB_BACKLOG", "targetValue": 10}]});
    let (status, replaced) =
        rest(&fx.app, Method::PATCH, "/v1/scaling/policy?updateMask=*", &headers, Some(&body)).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["policy"]["scaleUpTolerance"].as_f64(), Some(0.1), "{replaced}");
    assert_eq!(replaced["policy"]["maxReplicas"], 5);
}
