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
    policy::{Access, PolicyTable, TenantScope},
    proto::tenantry::v1::{jobs_service_client::JobsServiceClient, scaling_service_client::ScalingServiceClient},
};
use tonic::{Code, Request, Response, Status, transport::Channel};

use super::{estate::Estate, identity_attacks as identity, workload_attacks as workload};
use crate::harness::{TestApp, identity::bearer};

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
    pub(super) fn req<T>(&self, message: T) -> Request<T> {
        bearer(message, self.credential)
    }
    pub(super) fn jobs(&self) -> JobsServiceClient<Channel> {
        JobsServiceClient::new(self.app.channel.clone())
    }
    pub(super) fn scaling(&self) -> ScalingServiceClient<Channel> {
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
    case!("TenantService/GetTenant", ForeignIds, workload::get_tenant),
    case!("TenantService/UpdateTenant", ForeignIds, workload::update_tenant),
    case!(
        "TenantService/ListPlans",
        NoForeignId("the plan catalogue is platform-wide and holds no tenant's data"),
        workload::list_plans
    ),
    // AuthService: sessions
    case!("AuthService/Logout", ForeignCredential, identity::logout),
    case!("AuthService/WhoAmI", NoForeignId("takes no argument; describes the caller"), identity::who_am_i),
    case!("AuthService/IntrospectToken", ForeignCredential, identity::introspect_token),
    // AuthService: users
    case!("AuthService/CreateUser", Namespaced, identity::create_user),
    case!("AuthService/GetUser", ForeignIds, identity::get_user),
    case!("AuthService/ListUsers", Listing, identity::list_users),
    case!("AuthService/UpdateUser", ForeignIds, identity::update_user),
    case!("AuthService/DeleteUser", ForeignIds, identity::delete_user),
    case!("AuthService/ChangePassword", ForeignIds, identity::change_password, then identity::victim_password_still_works),
    // AuthService: API keys
    case!(
        "AuthService/CreateApiKey",
        NoForeignId("takes a name, scopes and an expiry; key names are not identifiers"),
        identity::create_api_key
    ),
    case!("AuthService/ListApiKeys", Listing, identity::list_api_keys),
    case!("AuthService/RevokeApiKey", ForeignIds, identity::revoke_api_key),
    // AuthService: roles and audit
    case!("AuthService/CreateRole", Namespaced, identity::create_role),
    case!("AuthService/ListRoles", Listing, identity::list_roles),
    case!("AuthService/UpdateRole", ForeignIds, identity::update_role),
    case!("AuthService/DeleteRole", ForeignIds, identity::delete_role),
    case!("AuthService/AssignRole", ForeignIds, identity::assign_role),
    case!("AuthService/UnassignRole", ForeignIds, identity::unassign_role),
    case!("AuthService/ListAuditEvents", Listing, identity::list_audit_events),
    // UsageService
    case!("UsageService/RecordUsage", Namespaced, workload::record_usage),
    case!("UsageService/GetUsage", Listing, workload::get_usage),
    case!(
        "UsageService/GetQuota",
        NoForeignId("takes no argument; reports the caller's plan and counters"),
        workload::get_quota
    ),
    // JobsService
    case!("JobsService/EnqueueJob", Namespaced, workload::enqueue_job),
    // After EnqueueJob: the attacker's own job from it may hold the key.
    case!("JobsService/EnqueueJobs", Namespaced, workload::enqueue_jobs),
    case!("JobsService/GetJob", ForeignIds, workload::get_job),
    case!("JobsService/ListJobs", Listing, workload::list_jobs),
    case!("JobsService/CancelJob", ForeignIds, workload::cancel_job),
    case!("JobsService/RetryJob", ForeignIds, workload::retry_job),
    case!("JobsService/WatchJob", ForeignIds, workload::watch_job),
    case!("JobsService/LeaseJobs", Listing, workload::lease_jobs),
    case!("JobsService/HeartbeatJob", ForeignIds, workload::heartbeat_job),
    case!("JobsService/CompleteJob", ForeignIds, workload::complete_job),
    case!("JobsService/FailJob", ForeignIds, workload::fail_job),
    // ScalingService
    case!(
        "ScalingService/GetScalingPolicy",
        NoForeignId("takes no argument; reads the caller's policy"),
        workload::get_scaling_policy
    ),
    case!(
        "ScalingService/UpdateScalingPolicy",
        NoForeignId("the body is a policy without an id; it changes the caller's own"),
        workload::update_scaling_policy
    ),
    case!(
        "ScalingService/GetScalingStatus",
        NoForeignId("takes no argument; reads the caller's simulated deployment"),
        workload::get_scaling_status
    ),
    case!("ScalingService/ListScalingDecisions", Listing, workload::list_scaling_decisions),
    case!(
        "ScalingService/SimulateScaling",
        NoForeignId("a pure function of the policy and samples in the request"),
        workload::simulate_scaling
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
pub(super) fn unknown_id(like: &str) -> String {
    let (prefix, _) = like.split_once('_').expect("a prefixed id");
    tenantry::ids::new_id(prefix)
}

/// Calls `call` with the victim's `foreign` id and with `unknown`: both must
/// fail with `code`, and alike (message and details, ids aside), so the
/// answer is no oracle for what exists in another tenant.
pub(super) async fn like_unknown<T, F, Fut>(d: &Duel<'_>, code: Code, what: &str, foreign: &str, unknown: &str, call: F)
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

pub(super) async fn not_found<T, F, Fut>(d: &Duel<'_>, what: &str, foreign: &str, call: F)
where
    T: fmt::Debug,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    like_unknown(d, Code::NotFound, what, foreign, &unknown_id(foreign), call).await;
}

/// The answer names none of the victim's resources.
pub(super) fn reveals_nothing(d: &Duel<'_>, what: &str, answer: &impl fmt::Debug) {
    let text = format!("{answer:?}");
    for marker in d.victim.markers() {
        assert!(!text.contains(marker), "{d}: {what} revealed the victim's {marker}: {text}");
    }
}

pub(super) fn ok<T>(d: &Duel<'_>, what: &str, result: Result<Response<T>, Status>) -> T {
    result.unwrap_or_else(|status| panic!("{d}: {what} failed: {status:?}")).into_inner()
}

pub(super) fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}
