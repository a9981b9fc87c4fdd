//! The case table: one entry per tenant-scoped RPC of the descriptor, saying
//! how another tenant's resources could reach it and attacking it that way.
//! [`table_mismatches`] keeps the table and the contract equal, so a new
//! RPC without an entry (or an entry for a removed RPC) fails the matrix.
//!
//! Each attack runs as an attacker tenant's real credential against a victim
//! tenant's real resources ([`super::estate::Estate`]); the runner snapshots
//! the victim before and after, so every entry also proves the victim's
//! data unchanged.

use std::{collections::BTreeMap, fmt, future::Future, pin::Pin};

use tenantry::{
    identity::roles::CATALOGUE,
    policy::{Access, PolicyTable, TenantScope},
    proto::tenantry::v1::{
        AssignRoleRequest, CancelJobRequest, ChangePasswordRequest, CompleteJobRequest, CreateApiKeyRequest,
        CreateRoleRequest, CreateUserRequest, DeleteRoleRequest, DeleteUserRequest, EnqueueJobRequest, FailJobRequest,
        GetJobRequest, GetQuotaRequest, GetScalingPolicyRequest, GetScalingStatusRequest, GetTenantRequest,
        GetUsageRequest, GetUserRequest, HeartbeatJobRequest, IntrospectTokenRequest, IntrospectTokenResponse,
        LeaseJobsRequest, ListApiKeysRequest, ListAuditEventsRequest, ListJobsRequest, ListPlansRequest,
        ListRolesRequest, ListScalingDecisionsRequest, ListUsersRequest, LogoutRequest, MetricValue,
        RecordUsageRequest, RefreshTokenRequest, RetryJobRequest, Role, ScalingPolicy, ScalingSignal,
        SimulateScalingRequest, SimulationSample, Tenant, UnassignRoleRequest, UpdateRoleRequest,
        UpdateScalingPolicyRequest, UpdateTenantRequest, UpdateUserRequest, UsageEvent, User, UserState,
        WatchJobRequest, WhoAmIRequest, jobs_service_client::JobsServiceClient,
        scaling_service_client::ScalingServiceClient,
    },
};
use tonic::{Code, Request, Response, Status, transport::Channel};

use super::estate::{Estate, PROBE_METRIC, QUEUE};
use crate::harness::{
    TestApp,
    identity::{PASSWORD, bearer},
};

/// One attacker credential against one victim, for one RPC.
pub struct Duel<'a> {
    pub app: &'a TestApp,
    pub attacker: &'a Estate,
    pub victim: &'a Estate,
    /// The attacker's credential (an access token or an API key).
    pub credential: &'a str,
    /// What that credential is, for messages.
    pub credential_kind: &'static str,
    pub rpc: &'static str,
}

impl fmt::Display for Duel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (rpc, kind) = (self.rpc, self.credential_kind);
        write!(f, "{rpc}: {} ({kind}) against {}", self.attacker.slug, self.victim.slug)
    }
}

impl Duel<'_> {
    /// `message` with the attacker's credential.
    fn req<T>(&self, message: T) -> Request<T> {
        bearer(message, self.credential)
    }
    fn jobs(&self) -> JobsServiceClient<Channel> {
        JobsServiceClient::new(self.app.channel.clone())
    }
    fn scaling(&self) -> ScalingServiceClient<Channel> {
        ScalingServiceClient::new(self.app.channel.clone())
    }
}

/// How another tenant's resources could reach an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Takes resource ids: the victim's answer NOT_FOUND, exactly as an id
    /// nobody holds would.
    ForeignIds,
    /// Lists, searches or leases without an id: the answer holds nothing of
    /// the victim, even when filtered by the victim's ids and names.
    Listing,
    /// Takes names unique within a tenant (email, role name, usage event id,
    /// job unique key): the victim's are free in the attacker's tenant, so
    /// they neither collide nor reveal that they exist.
    Namespaced,
    /// Takes a credential as data: the victim's answers like an unknown one
    /// and has no effect.
    ForeignCredential,
    /// Takes nothing that could name another tenant's resource (why).
    NoForeignId(&'static str),
}

/// An attack (or a check) run for one RPC.
pub type Attack = for<'a> fn(&'a Duel<'a>) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// One row of the table.
pub struct Case {
    /// `Service/Method`, as in the descriptor.
    pub rpc: &'static str,
    pub class: Class,
    pub attack: Attack,
    /// Checks that would change the victim's snapshot (a login moves
    /// `last_login_time`), run after the snapshot comparison.
    pub afterwards: Option<Attack>,
}

macro_rules! attack {
    ($f:path) => {{
        fn run<'a>(duel: &'a Duel<'a>) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
            Box::pin($f(duel))
        }
        run as Attack
    }};
}

macro_rules! case {
    ($rpc:literal, $class:expr, $attack:path) => {
        Case { rpc: $rpc, class: $class, attack: attack!($attack), afterwards: None }
    };
    ($rpc:literal, $class:expr, $attack:path, then $afterwards:path) => {
        Case { rpc: $rpc, class: $class, attack: attack!($attack), afterwards: Some(attack!($afterwards)) }
    };
}

use Class::*;

/// Every tenant-scoped RPC and how it is attacked.
pub const CASES: &[Case] = &[
    // TenantService
    case!("TenantService/GetTenant", ForeignIds, get_tenant),
    case!("TenantService/UpdateTenant", ForeignIds, update_tenant),
    case!(
        "TenantService/ListPlans",
        NoForeignId("the plan catalogue is platform-wide and holds no tenant's data"),
        list_plans
    ),
    // AuthService: sessions
    case!("AuthService/Logout", ForeignCredential, logout),
    case!("AuthService/WhoAmI", NoForeignId("takes no argument; describes the caller"), who_am_i),
    case!("AuthService/IntrospectToken", ForeignCredential, introspect_token),
    // AuthService: users
    case!("AuthService/CreateUser", Namespaced, create_user),
    case!("AuthService/GetUser", ForeignIds, get_user),
    case!("AuthService/ListUsers", Listing, list_users),
    case!("AuthService/UpdateUser", ForeignIds, update_user),
    case!("AuthService/DeleteUser", ForeignIds, delete_user),
    case!("AuthService/ChangePassword", ForeignIds, change_password, then victim_password_still_works),
    // AuthService: API keys
    case!(
        "AuthService/CreateApiKey",
        NoForeignId("takes a name, scopes and an expiry; key names are not identifiers"),
        create_api_key
    ),
    case!("AuthService/ListApiKeys", Listing, list_api_keys),
    case!("AuthService/RevokeApiKey", ForeignIds, revoke_api_key),
    // AuthService: roles and audit
    case!("AuthService/CreateRole", Namespaced, create_role),
    case!("AuthService/ListRoles", Listing, list_roles),
    case!("AuthService/UpdateRole", ForeignIds, update_role),
    case!("AuthService/DeleteRole", ForeignIds, delete_role),
    case!("AuthService/AssignRole", ForeignIds, assign_role),
    case!("AuthService/UnassignRole", ForeignIds, unassign_role),
    case!("AuthService/ListAuditEvents", Listing, list_audit_events),
    // UsageService
    case!("UsageService/RecordUsage", Namespaced, record_usage),
    case!("UsageService/GetUsage", Listing, get_usage),
    case!("UsageService/GetQuota", NoForeignId("takes no argument; reports the caller's plan and counters"), get_quota),
    // JobsService
    case!("JobsService/EnqueueJob", Namespaced, enqueue_job),
    case!("JobsService/GetJob", ForeignIds, get_job),
    case!("JobsService/ListJobs", Listing, list_jobs),
    case!("JobsService/CancelJob", ForeignIds, cancel_job),
    case!("JobsService/RetryJob", ForeignIds, retry_job),
    case!("JobsService/WatchJob", ForeignIds, watch_job),
    case!("JobsService/LeaseJobs", Listing, lease_jobs),
    case!("JobsService/HeartbeatJob", ForeignIds, heartbeat_job),
    case!("JobsService/CompleteJob", ForeignIds, complete_job),
    case!("JobsService/FailJob", ForeignIds, fail_job),
    // ScalingService
    case!(
        "ScalingService/GetScalingPolicy",
        NoForeignId("takes no argument; reads the caller's policy"),
        get_scaling_policy
    ),
    case!(
        "ScalingService/UpdateScalingPolicy",
        NoForeignId("the body is a policy without an id; it changes the caller's own"),
        update_scaling_policy
    ),
    case!(
        "ScalingService/GetScalingStatus",
        NoForeignId("takes no argument; reads the caller's simulated deployment"),
        get_scaling_status
    ),
    case!("ScalingService/ListScalingDecisions", Listing, list_scaling_decisions),
    case!(
        "ScalingService/SimulateScaling",
        NoForeignId("a pure function of the policy and samples in the request"),
        simulate_scaling
    ),
];

/// The tenant-scoped RPCs of the embedded descriptor, as `Service/Method`.
pub fn tenant_scoped_rpcs() -> Vec<String> {
    let table = PolicyTable::embedded().expect("the embedded policies load");
    let mut rpcs: Vec<String> = table
        .iter()
        .filter(|p| p.service.starts_with("tenantry.v1."))
        .filter(|p| p.tenant_scope != TenantScope::None && p.access != Access::Public)
        .map(|p| format!("{}/{}", p.service.trim_start_matches("tenantry.v1."), p.method))
        .collect();
    rpcs.sort();
    rpcs
}

/// What keeps `table` from covering exactly `descriptor`, one message per RPC.
pub fn table_mismatches(descriptor: &[String], table: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for rpc in descriptor {
        if !table.contains(&rpc.as_str()) {
            problems.push(format!(
                "{rpc} is tenant-scoped in the descriptor but has no cross-tenant case: add it to CASES in \
                 tests/api/isolation_matrix/cases.rs (an attack, or NoForeignId with the reason)"
            ));
        }
    }
    let mut seen = BTreeMap::new();
    for rpc in table {
        *seen.entry(*rpc).or_insert(0) += 1;
        if !descriptor.iter().any(|d| d == rpc) {
            problems.push(format!(
                "{rpc} has a case but is not a tenant-scoped RPC of the descriptor: remove or rename it"
            ));
        }
    }
    problems.extend(seen.into_iter().filter(|(_, n)| *n > 1).map(|(rpc, n)| format!("{rpc} has {n} cases")));
    problems
}

/// A well-formed id with `like`'s prefix that nobody holds.
fn unknown_id(like: &str) -> String {
    let (prefix, _) = like.split_once('_').expect("a prefixed id");
    tenantry::ids::new_id(prefix)
}

/// Calls `call` with the victim's `foreign` id and with `unknown`: both must
/// fail with `code`, and alike (message and details, ids aside), so the
/// answer is no oracle for what exists in another tenant.
async fn like_unknown<T, F, Fut>(d: &Duel<'_>, code: Code, what: &str, foreign: &str, unknown: &str, call: F)
where
    T: fmt::Debug,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let theirs = match call(foreign.to_owned()).await {
        Ok(answer) => panic!("{d}: {what} with the victim's {foreign} succeeded: {answer:?}"),
        Err(status) => status,
    };
    assert_eq!(theirs.code(), code, "{d}: {what} with the victim's {foreign}: {theirs:?}");
    let nobody = match call(unknown.to_owned()).await {
        Ok(answer) => panic!("{d}: {what} with the unknown {unknown} succeeded: {answer:?}"),
        Err(status) => status,
    };
    let shape = |s: &Status, id: &str| {
        (s.code(), s.message().replace(id, "<id>"), String::from_utf8_lossy(s.details()).replace(id, "<id>"))
    };
    assert_eq!(
        shape(&theirs, foreign),
        shape(&nobody, unknown),
        "{d}: {what}: the victim's id answers unlike an unknown one"
    );
}

async fn not_found<T, F, Fut>(d: &Duel<'_>, what: &str, foreign: &str, call: F)
where
    T: fmt::Debug,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    like_unknown(d, Code::NotFound, what, foreign, &unknown_id(foreign), call).await;
}

/// The answer names none of the victim's resources.
fn reveals_nothing(d: &Duel<'_>, what: &str, answer: &impl fmt::Debug) {
    let text = format!("{answer:?}");
    for marker in d.victim.markers() {
        assert!(!text.contains(marker), "{d}: {what} revealed the victim's {marker}: {text}");
    }
}

fn ok<T>(d: &Duel<'_>, what: &str, result: Result<Response<T>, Status>) -> T {
    result.unwrap_or_else(|status| panic!("{d}: {what} failed: {status:?}")).into_inner()
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}

// TenantService

async fn get_tenant(d: &Duel<'_>) {
    let v = d.victim;
    let call = |id: String| {
        let (mut c, r) = (d.app.tenants(), d.req(GetTenantRequest { tenant_id: id }));
        async move { c.get_tenant(r).await }
    };
    not_found(d, "GetTenant by id", &v.id, call).await;
    let unknown_slug = "q".repeat(v.slug.len());
    like_unknown(d, Code::NotFound, "GetTenant by slug", &v.slug, &unknown_slug, call).await;
}

async fn update_tenant(d: &Duel<'_>) {
    not_found(d, "UpdateTenant", &d.victim.id, |id| {
        let tenant = Tenant {
            id,
            display_name: "taken over".into(),
            labels: [("owner".to_owned(), "attacker".to_owned())].into(),
            ..Default::default()
        };
        let request = UpdateTenantRequest { tenant: Some(tenant), update_mask: mask(&["display_name", "labels"]) };
        let (mut c, r) = (d.app.tenants(), d.req(request));
        async move { c.update_tenant(r).await }
    })
    .await;
}

async fn list_plans(d: &Duel<'_>) {
    let plans = ok(d, "ListPlans", d.app.tenants().list_plans(d.req(ListPlansRequest::default())).await);
    assert!(!plans.plans.is_empty(), "{d}: the catalogue is listed");
    reveals_nothing(d, "ListPlans", &plans);
}

// AuthService: sessions

async fn logout(d: &Duel<'_>) {
    let token = d.victim.refresh_token.lock().unwrap().clone();
    let theirs = d.app.auth().logout(d.req(LogoutRequest { refresh_token: token.clone() })).await;
    // Logging out is idempotent and says nothing about which tokens exist.
    ok(d, "Logout with the victim's refresh token", theirs);
    let rotated = d.app.auth().refresh_token(RefreshTokenRequest { refresh_token: token }).await;
    let rotated = rotated.unwrap_or_else(|s| panic!("{d}: the victim's session was ended: {s:?}")).into_inner();
    assert_eq!(rotated.tenant_id, d.victim.id);
    *d.victim.refresh_token.lock().unwrap() = rotated.refresh_token;
}

async fn who_am_i(d: &Duel<'_>) {
    let me = ok(d, "WhoAmI", d.app.auth().who_am_i(d.req(WhoAmIRequest {})).await);
    assert_eq!(me.tenant_id, d.attacker.id, "{d}");
    reveals_nothing(d, "WhoAmI", &me);
}

async fn introspect_token(d: &Duel<'_>) {
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

async fn create_user(d: &Duel<'_>) {
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

async fn get_user(d: &Duel<'_>) {
    for user in [&d.victim.user.id, &d.victim.owner.id] {
        not_found(d, "GetUser", user, |id| {
            let (mut c, r) = (d.app.auth(), d.req(GetUserRequest { user_id: id }));
            async move { c.get_user(r).await }
        })
        .await;
    }
}

async fn list_users(d: &Duel<'_>) {
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

async fn update_user(d: &Duel<'_>) {
    not_found(d, "UpdateUser", &d.victim.user.id, |id| {
        let user = User { id, display_name: "pwned".into(), state: UserState::Disabled as i32, ..Default::default() };
        let request = UpdateUserRequest { user: Some(user), update_mask: mask(&["display_name", "state"]) };
        let (mut c, r) = (d.app.auth(), d.req(request));
        async move { c.update_user(r).await }
    })
    .await;
}

async fn delete_user(d: &Duel<'_>) {
    not_found(d, "DeleteUser", &d.victim.user.id, |id| {
        let (mut c, r) = (d.app.auth(), d.req(DeleteUserRequest { user_id: id }));
        async move { c.delete_user(r).await }
    })
    .await;
}

async fn change_password(d: &Duel<'_>) {
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

async fn victim_password_still_works(d: &Duel<'_>) {
    let v = d.victim;
    let login = d.app.login(&v.slug, &v.user.email, PASSWORD).await;
    let login = login.unwrap_or_else(|s| panic!("{d}: the victim's user lost their password: {s:?}"));
    assert_eq!(login.user.unwrap().id, v.user.id);
}

// AuthService: API keys

async fn create_api_key(d: &Duel<'_>) {
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

async fn list_api_keys(d: &Duel<'_>) {
    let request = ListApiKeysRequest { page_size: 1000, show_inactive: true, ..Default::default() };
    let keys = ok(d, "ListApiKeys", d.app.auth().list_api_keys(d.req(request)).await);
    reveals_nothing(d, "ListApiKeys", &keys);
}

async fn revoke_api_key(d: &Duel<'_>) {
    let v = d.victim;
    not_found(d, "RevokeApiKey", &v.api_key.id, |id| {
        let (mut c, r) = (d.app.auth(), d.req(tenantry::proto::tenantry::v1::RevokeApiKeyRequest { api_key_id: id }));
        async move { c.revoke_api_key(r).await }
    })
    .await;
    let me = d.app.auth().who_am_i(bearer(WhoAmIRequest {}, &v.api_key_secret)).await;
    assert_eq!(me.unwrap_or_else(|s| panic!("{d}: the victim's key was revoked: {s:?}")).into_inner().tenant_id, v.id);
}

// AuthService: roles and audit

async fn create_role(d: &Duel<'_>) {
    let v = d.victim;
    let request = CreateRoleRequest {
        name: v.role.name.clone(),
        description: String::new(),
        permissions: vec!["users:read".into()],
    };
    let role = ok(d, "CreateRole with the victim's role name", d.app.auth().create_role(d.req(request)).await);
    assert_ne!(role.role.unwrap().id, v.role.id, "{d}");
}

async fn list_roles(d: &Duel<'_>) {
    let roles = ok(
        d,
        "ListRoles",
        d.app.auth().list_roles(d.req(ListRolesRequest { page_size: 1000, ..Default::default() })).await,
    );
    reveals_nothing(d, "ListRoles", &roles);
}

async fn update_role(d: &Duel<'_>) {
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

async fn delete_role(d: &Duel<'_>) {
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

async fn assign_role(d: &Duel<'_>) {
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

async fn unassign_role(d: &Duel<'_>) {
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

async fn list_audit_events(d: &Duel<'_>) {
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

// UsageService

async fn record_usage(d: &Duel<'_>) {
    // Another payload under the victim's event id: in a shared id space this
    // would be a duplicate or ALREADY_EXISTS; per tenant it is a new event.
    let event = UsageEvent {
        event_id: d.victim.event_id.clone(),
        metric: PROBE_METRIC.into(),
        quantity: 1.0,
        ..Default::default()
    };
    let recorded = d.app.usage().record_usage(d.req(RecordUsageRequest { events: vec![event] })).await;
    let recorded = ok(d, "RecordUsage with the victim's event id", recorded);
    assert_eq!((recorded.accepted_count, recorded.duplicate_count), (1, 0), "{d}");
}

fn usage_request(metrics: Vec<String>) -> GetUsageRequest {
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86_400);
    GetUsageRequest {
        metrics,
        start_time: Some((now - day).into()),
        end_time: Some((now + day).into()),
        granularity: 0,
    }
}

async fn get_usage(d: &Duel<'_>) {
    let v = d.victim;
    for metrics in [vec![v.metric.clone()], Vec::new()] {
        let what = format!("GetUsage of {metrics:?}");
        let usage = ok(d, &what, d.app.usage().get_usage(d.req(usage_request(metrics))).await);
        for series in &usage.series {
            assert!(
                series.metric != v.metric || series.total == 0.0,
                "{d}: {what} shows the victim's usage: {series:?}"
            );
        }
    }
}

async fn get_quota(d: &Duel<'_>) {
    let quota = ok(d, "GetQuota", d.app.usage().get_quota(d.req(GetQuotaRequest {})).await);
    assert_eq!(quota.plan_id, "enterprise", "{d}");
    reveals_nothing(d, "GetQuota", &quota);
}

// JobsService

async fn enqueue_job(d: &Duel<'_>) {
    let v = d.victim;
    let request = EnqueueJobRequest {
        kind: v.kind.clone(),
        queue: format!("{QUEUE}-probe"),
        unique_key: v.unique_key.clone(),
        ..Default::default()
    };
    let enqueued =
        ok(d, "EnqueueJob with the victim's kind and unique key", d.jobs().enqueue_job(d.req(request)).await);
    assert!(!enqueued.duplicate, "{d}: the victim's unique key blocked the attacker's job: {enqueued:?}");
    reveals_nothing(d, "EnqueueJob", &enqueued);
    assert_eq!(enqueued.job.unwrap().tenant_id, d.attacker.id, "{d}");
}

fn victim_jobs<'a>(d: &'a Duel<'a>) -> [&'a str; 3] {
    let v = d.victim;
    [v.available_job.id.as_str(), v.running_job.id.as_str(), v.cancelled_job.id.as_str()]
}

async fn get_job(d: &Duel<'_>) {
    for job in victim_jobs(d) {
        not_found(d, "GetJob", job, |id| {
            let (mut c, r) = (d.jobs(), d.req(GetJobRequest { job_id: id }));
            async move { c.get_job(r).await }
        })
        .await;
    }
}

async fn list_jobs(d: &Duel<'_>) {
    let v = d.victim;
    let filters = [
        ListJobsRequest { page_size: 1000, ..Default::default() },
        ListJobsRequest { kind: v.kind.clone(), ..Default::default() },
        ListJobsRequest { queue: QUEUE.into(), ..Default::default() },
    ];
    for filter in filters {
        let what = format!("ListJobs {filter:?}");
        let jobs = ok(d, &what, d.jobs().list_jobs(d.req(filter)).await);
        reveals_nothing(d, &what, &jobs);
    }
}

async fn cancel_job(d: &Duel<'_>) {
    for job in victim_jobs(d) {
        not_found(d, "CancelJob", job, |id| {
            let (mut c, r) = (d.jobs(), d.req(CancelJobRequest { job_id: id }));
            async move { c.cancel_job(r).await }
        })
        .await;
    }
}

async fn retry_job(d: &Duel<'_>) {
    for job in victim_jobs(d) {
        not_found(d, "RetryJob", job, |id| {
            let (mut c, r) = (d.jobs(), d.req(RetryJobRequest { job_id: id }));
            async move { c.retry_job(r).await }
        })
        .await;
    }
}

async fn watch_job(d: &Duel<'_>) {
    for job in victim_jobs(d) {
        not_found(d, "WatchJob", job, |id| {
            let (mut c, r) = (d.jobs(), d.req(WatchJobRequest { job_id: id }));
            async move { c.watch_job(r).await }
        })
        .await;
    }
}

async fn lease_jobs(d: &Duel<'_>) {
    let v = d.victim;
    let request = LeaseJobsRequest {
        kinds: vec![v.kind.clone()],
        queue: QUEUE.into(),
        max_jobs: 100,
        worker_id: format!("{}-thief", d.attacker.slug),
        ..Default::default()
    };
    let leased = ok(d, "LeaseJobs of the victim's kind", d.jobs().lease_jobs(d.req(request)).await);
    assert!(leased.jobs.is_empty(), "{d}: leased {leased:?}");
}

async fn heartbeat_job(d: &Duel<'_>) {
    let attempt = d.victim.running_attempt;
    not_found(d, "HeartbeatJob", &d.victim.running_job.id, |id| {
        let lease = Some(prost_types::Duration { seconds: 5, nanos: 0 });
        let (mut c, r) = (d.jobs(), d.req(HeartbeatJobRequest { job_id: id, attempt, lease_duration: lease }));
        async move { c.heartbeat_job(r).await }
    })
    .await;
}

async fn complete_job(d: &Duel<'_>) {
    let attempt = d.victim.running_attempt;
    not_found(d, "CompleteJob", &d.victim.running_job.id, |id| {
        let (mut c, r) = (d.jobs(), d.req(CompleteJobRequest { job_id: id, attempt, result: None }));
        async move { c.complete_job(r).await }
    })
    .await;
}

async fn fail_job(d: &Duel<'_>) {
    let attempt = d.victim.running_attempt;
    not_found(d, "FailJob", &d.victim.running_job.id, |id| {
        let request = FailJobRequest {
            job_id: id,
            attempt,
            error_message: "sabotage".into(),
            discard: true,
            ..Default::default()
        };
        let (mut c, r) = (d.jobs(), d.req(request));
        async move { c.fail_job(r).await }
    })
    .await;
}

// ScalingService

async fn get_scaling_policy(d: &Duel<'_>) {
    let policy = ok(d, "GetScalingPolicy", d.scaling().get_scaling_policy(d.req(GetScalingPolicyRequest {})).await);
    reveals_nothing(d, "GetScalingPolicy", &policy);
}

async fn update_scaling_policy(d: &Duel<'_>) {
    let policy = ScalingPolicy {
        evaluation_interval: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        ..Default::default()
    };
    let request = UpdateScalingPolicyRequest { policy: Some(policy), update_mask: mask(&["evaluation_interval"]) };
    let updated = ok(d, "UpdateScalingPolicy", d.scaling().update_scaling_policy(d.req(request)).await);
    reveals_nothing(d, "UpdateScalingPolicy", &updated);
}

async fn get_scaling_status(d: &Duel<'_>) {
    let status = ok(d, "GetScalingStatus", d.scaling().get_scaling_status(d.req(GetScalingStatusRequest {})).await);
    reveals_nothing(d, "GetScalingStatus", &status);
}

async fn list_scaling_decisions(d: &Duel<'_>) {
    let request = ListScalingDecisionsRequest { page_size: 1000, ..Default::default() };
    let decisions = ok(d, "ListScalingDecisions", d.scaling().list_scaling_decisions(d.req(request)).await);
    reveals_nothing(d, "ListScalingDecisions", &decisions);
}

async fn simulate_scaling(d: &Duel<'_>) {
    let sample = SimulationSample {
        sample_time: Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 }),
        metrics: vec![MetricValue { signal: ScalingSignal::RequestRate as i32, value: 10.0 }],
    };
    let request = SimulateScalingRequest { policy: None, initial_replicas: 2, samples: vec![sample] };
    let simulated = ok(d, "SimulateScaling", d.scaling().simulate_scaling(d.req(request)).await);
    reveals_nothing(d, "SimulateScaling", &simulated);
}
