//! A tenant holding one real resource of every kind an RPC can name (a
//! second user bound to a custom role, a full-scope API key, a live session,
//! a running, an available and a cancelled job, a usage event, a scaling
//! decision), and a [`Snapshot`] of everything it can observe about itself,
//! so an attack can be shown to have changed nothing.

use std::{sync::Mutex, time::Duration};

use tenantry::{
    identity::roles::CATALOGUE,
    proto::tenantry::v1::{
        ApiKey, AuditEvent, CancelJobRequest, CompleteJobRequest, CreateApiKeyRequest, CreateRoleRequest,
        CreateUserRequest, EnqueueJobRequest, GetScalingPolicyRequest, GetTenantRequest, GetUsageRequest, Granularity,
        Job, JobState, LeaseJobsRequest, ListApiKeysRequest, ListAuditEventsRequest, ListJobsRequest, ListRolesRequest,
        ListScalingDecisionsRequest, ListUsersRequest, RecordUsageRequest, RefreshTokenRequest, Role, ScalingPolicy,
        Tenant, UsageEvent, UsageSeries, User, WhoAmIRequest, jobs_service_client::JobsServiceClient,
        scaling_service_client::ScalingServiceClient,
    },
    tenancy::TenantId,
};
use tonic::transport::Channel;

use crate::harness::{
    TestApp,
    identity::{PASSWORD, bearer},
};

/// The queue every estate's jobs live in (the built-in workers never lease it).
pub const QUEUE: &str = "iso";
/// A metric no estate records itself: an attacker's event must never show here.
pub const PROBE_METRIC: &str = "iso.probe";

/// A tenant and its resources, all created through the API.
pub struct Estate {
    pub id: String,
    pub slug: String,
    pub owner: User,
    pub owner_token: String,
    /// The owner's current refresh token (rotated when a check uses it).
    pub refresh_token: Mutex<String>,
    /// A second user, holding [`Estate::role`].
    pub user: User,
    pub role: Role,
    /// An API key holding every tenant permission, and its secret.
    pub api_key: ApiKey,
    pub api_key_secret: String,
    /// The kind of the estate's jobs (`iso.<slug>`).
    pub kind: String,
    /// The unique key of [`Estate::available_job`].
    pub unique_key: String,
    pub available_job: Job,
    /// Leased by the estate's own worker for 10 minutes, with this attempt.
    pub running_job: Job,
    pub running_attempt: i32,
    pub cancelled_job: Job,
    /// The metric, event id and quantity of the estate's usage event.
    pub metric: String,
    pub event_id: String,
    pub decision_id: String,
}

/// Everything an estate's owner can observe about the tenant's durable state
/// (the parts that only the tenant's own actions change).
#[derive(Debug)]
pub struct Snapshot {
    tenant: Tenant,
    users: Vec<User>,
    roles: Vec<Role>,
    /// `last_used_time` cleared: it trails any use of a key by a flush interval.
    api_keys: Vec<ApiKey>,
    jobs: Vec<Job>,
    usage: Vec<UsageSeries>,
    scaling_policy: Option<ScalingPolicy>,
    audit_events: Vec<AuditEvent>,
}

impl Snapshot {
    /// The parts that differ from `later`, each with both versions.
    pub fn differences(&self, later: &Snapshot) -> Vec<String> {
        fn part<T: PartialEq + std::fmt::Debug>(name: &str, a: &T, b: &T, out: &mut Vec<String>) {
            if a != b {
                out.push(format!("{name}: before {a:?}\n  after {b:?}"));
            }
        }
        let mut out = Vec::new();
        part("tenant", &self.tenant, &later.tenant, &mut out);
        part("users", &self.users, &later.users, &mut out);
        part("roles", &self.roles, &later.roles, &mut out);
        part("api_keys", &self.api_keys, &later.api_keys, &mut out);
        part("jobs", &self.jobs, &later.jobs, &mut out);
        part("usage", &self.usage, &later.usage, &mut out);
        part("scaling_policy", &self.scaling_policy, &later.scaling_policy, &mut out);
        part("audit_events", &self.audit_events, &later.audit_events, &mut out);
        out
    }
}

fn hour() -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: 3600, nanos: 0 })
}

fn jobs(app: &TestApp) -> JobsServiceClient<Channel> {
    JobsServiceClient::new(app.channel.clone())
}

fn scaling(app: &TestApp) -> ScalingServiceClient<Channel> {
    ScalingServiceClient::new(app.channel.clone())
}

impl Estate {
    /// Provisions tenant `slug` with its owner and every resource.
    pub async fn build(app: &TestApp, slug: &str) -> Estate {
        let tenant = app.tenant_with_owner(slug).await;
        let token = tenant.owner_token.clone();
        let session = app.login(slug, &format!("owner@{slug}.test"), PASSWORD).await.expect("owner logs in");
        let mut auth = app.auth();

        let role = CreateRoleRequest {
            name: format!("{slug} operators"),
            description: format!("operators of {slug}"),
            permissions: vec!["jobs:read".into()],
        };
        let role = auth.create_role(bearer(role, &token)).await.expect("create role").into_inner().role.unwrap();
        let user = CreateUserRequest {
            email: format!("user@{slug}.test"),
            display_name: format!("{slug} user"),
            password: PASSWORD.into(),
            roles: vec![role.id.clone()],
        };
        let user = auth.create_user(bearer(user, &token)).await.expect("create user").into_inner().user.unwrap();
        let key = CreateApiKeyRequest {
            name: format!("{slug} automation"),
            scopes: CATALOGUE.iter().map(|(p, _)| (*p).to_owned()).collect(),
            expire_time: None,
        };
        let key = auth.create_api_key(bearer(key, &token)).await.expect("create API key").into_inner();

        let kind = format!("iso.{slug}");
        let unique_key = format!("{slug}-unique");
        let enqueue = |unique_key: &str| EnqueueJobRequest {
            kind: kind.clone(),
            queue: QUEUE.into(),
            unique_key: unique_key.into(),
            timeout: hour(),
            ..Default::default()
        };
        let mut jobs = jobs(app);
        jobs.enqueue_job(bearer(enqueue(""), &token)).await.expect("enqueue the job to lease");
        let lease = LeaseJobsRequest {
            kinds: vec![kind.clone()],
            queue: QUEUE.into(),
            max_jobs: 1,
            lease_duration: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
            worker_id: format!("{slug}-worker"),
            ..Default::default()
        };
        let mut leased = jobs.lease_jobs(bearer(lease, &token)).await.expect("lease").into_inner().jobs;
        assert_eq!(leased.len(), 1, "{slug}'s worker leases its job");
        let leased = leased.remove(0);
        let available =
            jobs.enqueue_job(bearer(enqueue(&unique_key), &token)).await.expect("enqueue").into_inner().job.unwrap();
        let cancelled = jobs.enqueue_job(bearer(enqueue(""), &token)).await.expect("enqueue").into_inner().job.unwrap();
        let cancelled = jobs
            .cancel_job(bearer(CancelJobRequest { job_id: cancelled.id }, &token))
            .await
            .expect("cancel")
            .into_inner()
            .job
            .unwrap();

        let metric = format!("iso.{slug}");
        let event_id = format!("evt-{slug}");
        let event =
            UsageEvent { event_id: event_id.clone(), metric: metric.clone(), quantity: 7.0, ..Default::default() };
        app.usage().record_usage(bearer(RecordUsageRequest { events: vec![event] }, &token)).await.expect("record");

        // A stored decision now, rather than waiting for the periodic evaluation.
        let tenant_id = TenantId::parse(&tenant.id).expect("a tenant id");
        tenantry::scaling::store::evaluate(&app.pool, &tenant_id).await.expect("evaluate scaling");
        let decisions = scaling(app)
            .list_scaling_decisions(bearer(ListScalingDecisionsRequest::default(), &token))
            .await
            .expect("list decisions")
            .into_inner()
            .decisions;

        Estate {
            id: tenant.id,
            slug: tenant.slug,
            owner: tenant.owner,
            owner_token: token,
            refresh_token: Mutex::new(session.refresh_token),
            user,
            role,
            api_key: key.api_key.unwrap(),
            api_key_secret: key.secret,
            kind,
            unique_key,
            available_job: available,
            running_attempt: leased.attempt,
            running_job: leased.job.unwrap(),
            cancelled_job: cancelled,
            metric,
            event_id,
            decision_id: decisions.first().expect("a stored decision").id.clone(),
        }
    }

    /// Every random id of the estate's resources: none may ever appear in
    /// an answer to another tenant.
    pub fn markers(&self) -> Vec<&str> {
        vec![
            &self.id,
            &self.owner.id,
            &self.user.id,
            &self.role.id,
            &self.api_key.id,
            &self.api_key.public_id,
            &self.available_job.id,
            &self.running_job.id,
            &self.cancelled_job.id,
            &self.decision_id,
        ]
    }

    /// The estate's credentials and resources still work for it: its session
    /// refreshes, its key and its user's password authenticate, and its
    /// worker still holds the lease and completes the running job.
    pub async fn still_works(&self, app: &TestApp) {
        let slug = &self.slug;
        let refresh = RefreshTokenRequest { refresh_token: self.refresh_token.lock().unwrap().clone() };
        app.auth().refresh_token(refresh).await.unwrap_or_else(|s| panic!("{slug}'s session: {s:?}"));
        let me = app.auth().who_am_i(bearer(WhoAmIRequest {}, &self.api_key_secret)).await;
        assert_eq!(me.unwrap_or_else(|s| panic!("{slug}'s key: {s:?}")).into_inner().tenant_id, self.id);
        let login = app.login(slug, &self.user.email, PASSWORD).await;
        login.unwrap_or_else(|s| panic!("{slug}'s user logs in: {s:?}"));
        let done =
            CompleteJobRequest { job_id: self.running_job.id.clone(), attempt: self.running_attempt, result: None };
        let done = jobs(app).complete_job(bearer(done, &self.owner_token)).await;
        let done = done.unwrap_or_else(|s| panic!("{slug}'s worker completes its job: {s:?}")).into_inner();
        assert_eq!(done.job.unwrap().state(), JobState::Completed, "{slug}");
    }

    /// What the estate's owner observes now.
    pub async fn snapshot(&self, app: &TestApp) -> Snapshot {
        let token = &self.owner_token;
        let (mut jobs, mut scaling, mut usage, mut tenants) = (jobs(app), scaling(app), app.usage(), app.tenants());
        let [mut users, mut roles, mut keys, mut audit] = [app.auth(), app.auth(), app.auth(), app.auth()];
        let now = std::time::SystemTime::now();
        let day = Duration::from_secs(86_400);
        let usage_request = GetUsageRequest {
            metrics: vec![self.metric.clone(), PROBE_METRIC.into()],
            start_time: Some((now - day).into()),
            end_time: Some((now + day).into()),
            granularity: Granularity::Month as i32,
        };
        let (tenant, users, roles, keys, listed_jobs, usage, policy, audit) = tokio::join!(
            tenants.get_tenant(bearer(GetTenantRequest { tenant_id: self.id.clone() }, token)),
            users.list_users(bearer(ListUsersRequest { page_size: 1000, ..Default::default() }, token)),
            roles.list_roles(bearer(ListRolesRequest { page_size: 1000, ..Default::default() }, token)),
            keys.list_api_keys(bearer(
                ListApiKeysRequest { page_size: 1000, show_inactive: true, ..Default::default() },
                token
            )),
            jobs.list_jobs(bearer(
                ListJobsRequest { page_size: 1000, queue: QUEUE.into(), ..Default::default() },
                token
            )),
            usage.get_usage(bearer(usage_request, token)),
            scaling.get_scaling_policy(bearer(GetScalingPolicyRequest {}, token)),
            audit.list_audit_events(bearer(ListAuditEventsRequest { page_size: 1000, ..Default::default() }, token)),
        );
        let slug = &self.slug;
        let mut api_keys = keys.unwrap_or_else(|s| panic!("{slug} lists its keys: {s:?}")).into_inner().api_keys;
        for key in &mut api_keys {
            key.last_used_time = None;
        }
        Snapshot {
            tenant: tenant.unwrap_or_else(|s| panic!("{slug} reads itself: {s:?}")).into_inner().tenant.unwrap(),
            users: users.unwrap_or_else(|s| panic!("{slug} lists its users: {s:?}")).into_inner().users,
            roles: roles.unwrap_or_else(|s| panic!("{slug} lists its roles: {s:?}")).into_inner().roles,
            api_keys,
            jobs: listed_jobs.unwrap_or_else(|s| panic!("{slug} lists its jobs: {s:?}")).into_inner().jobs,
            usage: usage.unwrap_or_else(|s| panic!("{slug} reads its usage: {s:?}")).into_inner().series,
            scaling_policy: policy.unwrap_or_else(|s| panic!("{slug} reads its policy: {s:?}")).into_inner().policy,
            audit_events: audit.unwrap_or_else(|s| panic!("{slug} reads its audit: {s:?}")).into_inner().audit_events,
        }
    }
}
