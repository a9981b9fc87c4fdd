//! The attacks on TenantService, UsageService, JobsService and
//! ScalingService, each against the victim's real resources (see
//! [`super::cases`]).

use tenantry::proto::tenantry::v1::{
    CancelJobRequest, CompleteJobRequest, EnqueueJobRequest, EnqueueJobsRequest, FailJobRequest, GetJobRequest,
    GetQuotaRequest, GetScalingPolicyRequest, GetScalingStatusRequest, GetTenantRequest, GetUsageRequest,
    HeartbeatJobRequest, LeaseJobsRequest, ListJobsRequest, ListPlansRequest, ListScalingDecisionsRequest, MetricValue,
    RecordUsageRequest, RetryJobRequest, ScalingPolicy, ScalingSignal, SimulateScalingRequest, SimulationSample,
    Tenant, UpdateScalingPolicyRequest, UpdateTenantRequest, UsageEvent, WatchJobRequest,
};
use tonic::Code;

use super::{
    cases::{Duel, like_unknown, mask, not_found, ok, reveals_nothing},
    estate::{PROBE_METRIC, QUEUE},
};

// TenantService

pub(super) async fn get_tenant(d: &Duel<'_>) {
    let v = d.victim;
    let call = |id: String| {
        let (mut c, r) = (d.app.tenants(), d.req(GetTenantRequest { tenant_id: id }));
        async move { c.get_tenant(r).await }
    };
    not_found(d, "GetTenant by id", &v.id, call).await;
    let unknown_slug = "q".repeat(v.slug.len());
    like_unknown(d, Code::NotFound, "GetTenant by slug", &v.slug, &unknown_slug, call).await;
}

pub(super) async fn update_tenant(d: &Duel<'_>) {
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

pub(super) async fn list_plans(d: &Duel<'_>) {
    let plans = ok(d, "ListPlans", d.app.tenants().list_plans(d.req(ListPlansRequest::default())).await);
    assert!(!plans.plans.is_empty(), "{d}: the catalogue is listed");
    reveals_nothing(d, "ListPlans", &plans);
}

// UsageService

pub(super) async fn record_usage(d: &Duel<'_>) {
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

pub(super) async fn get_usage(d: &Duel<'_>) {
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

pub(super) async fn get_quota(d: &Duel<'_>) {
    let quota = ok(d, "GetQuota", d.app.usage().get_quota(d.req(GetQuotaRequest {})).await);
    assert_eq!(quota.plan_id, "enterprise", "{d}");
    reveals_nothing(d, "GetQuota", &quota);
}

// JobsService

pub(super) async fn enqueue_job(d: &Duel<'_>) {
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

pub(super) async fn enqueue_jobs(d: &Duel<'_>) {
    let v = d.victim;
    let item = || EnqueueJobRequest {
        kind: v.kind.clone(),
        queue: format!("{QUEUE}-probe"),
        unique_key: v.unique_key.clone(),
        ..Default::default()
    };
    let batch = EnqueueJobsRequest { requests: vec![item(), item()] };
    let enqueued =
        ok(d, "EnqueueJobs with the victim's kind and unique key", d.jobs().enqueue_jobs(d.req(batch)).await);
    reveals_nothing(d, "EnqueueJobs", &enqueued);
    let jobs: Vec<_> = enqueued.results.iter().map(|r| r.job.as_ref().unwrap()).collect();
    // The key is held in the attacker's tenant only: by the first item, or
    // by the attacker's own job from the EnqueueJob attack; never the victim's.
    for job in &jobs {
        assert_eq!(job.tenant_id, d.attacker.id, "{d}: {enqueued:?}");
        assert_ne!(job.id, v.available_job.id, "{d}: the victim's job holds the attacker's key");
    }
    assert!(enqueued.results[1].duplicate && jobs[1].id == jobs[0].id, "{d}: {enqueued:?}");
}

fn victim_jobs<'a>(d: &'a Duel<'a>) -> [&'a str; 3] {
    let v = d.victim;
    [v.available_job.id.as_str(), v.running_job.id.as_str(), v.cancelled_job.id.as_str()]
}

pub(super) async fn get_job(d: &Duel<'_>) {
    for job in victim_jobs(d) {
        not_found(d, "GetJob", job, |id| {
            let (mut c, r) = (d.jobs(), d.req(GetJobRequest { job_id: id }));
            async move { c.get_job(r).await }
        })
        .await;
    }
}

pub(super) async fn list_jobs(d: &Duel<'_>) {
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

pub(super) async fn cancel_job(d: &Duel<'_>) {
    for job in victim_jobs(d) {
        not_found(d, "CancelJob", job, |id| {
            let (mut c, r) = (d.jobs(), d.req(CancelJobRequest { job_id: id }));
            async move { c.cancel_job(r).await }
        })
        .await;
    }
}

pub(super) async fn retry_job(d: &Duel<'_>) {
    for job in victim_jobs(d) {
        not_found(d, "RetryJob", job, |id| {
            let (mut c, r) = (d.jobs(), d.req(RetryJobRequest { job_id: id }));
            async move { c.retry_job(r).await }
        })
        .await;
    }
}

pub(super) async fn watch_job(d: &Duel<'_>) {
    for job in victim_jobs(d) {
        not_found(d, "WatchJob", job, |id| {
            let (mut c, r) = (d.jobs(), d.req(WatchJobRequest { job_id: id }));
            async move { c.watch_job(r).await }
        })
        .await;
    }
}

pub(super) async fn lease_jobs(d: &Duel<'_>) {
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

pub(super) async fn heartbeat_job(d: &Duel<'_>) {
    let attempt = d.victim.running_attempt;
    not_found(d, "HeartbeatJob", &d.victim.running_job.id, |id| {
        let lease = Some(prost_types::Duration { seconds: 5, nanos: 0 });
        let (mut c, r) = (d.jobs(), d.req(HeartbeatJobRequest { job_id: id, attempt, lease_duration: lease }));
        async move { c.heartbeat_job(r).await }
    })
    .await;
}

pub(super) async fn complete_job(d: &Duel<'_>) {
    let attempt = d.victim.running_attempt;
    not_found(d, "CompleteJob", &d.victim.running_job.id, |id| {
        let (mut c, r) = (d.jobs(), d.req(CompleteJobRequest { job_id: id, attempt, result: None }));
        async move { c.complete_job(r).await }
    })
    .await;
}

pub(super) async fn fail_job(d: &Duel<'_>) {
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

pub(super) async fn get_scaling_policy(d: &Duel<'_>) {
    let policy = ok(d, "GetScalingPolicy", d.scaling().get_scaling_policy(d.req(GetScalingPolicyRequest {})).await);
    reveals_nothing(d, "GetScalingPolicy", &policy);
}

pub(super) async fn update_scaling_policy(d: &Duel<'_>) {
    let policy = ScalingPolicy {
        evaluation_interval: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        ..Default::default()
    };
    let request = UpdateScalingPolicyRequest { policy: Some(policy), update_mask: mask(&["evaluation_interval"]) };
    let updated = ok(d, "UpdateScalingPolicy", d.scaling().update_scaling_policy(d.req(request)).await);
    reveals_nothing(d, "UpdateScalingPolicy", &updated);
}

pub(super) async fn get_scaling_status(d: &Duel<'_>) {
    let status = ok(d, "GetScalingStatus", d.scaling().get_scaling_status(d.req(GetScalingStatusRequest {})).await);
    reveals_nothing(d, "GetScalingStatus", &status);
}

pub(super) async fn list_scaling_decisions(d: &Duel<'_>) {
    let request = ListScalingDecisionsRequest { page_size: 1000, ..Default::default() };
    let decisions = ok(d, "ListScalingDecisions", d.scaling().list_scaling_decisions(d.req(request)).await);
    reveals_nothing(d, "ListScalingDecisions", &decisions);
}

pub(super) async fn simulate_scaling(d: &Duel<'_>) {
    let sample = SimulationSample {
        sample_time: Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 }),
        metrics: vec![MetricValue { signal: ScalingSignal::RequestRate as i32, value: 10.0 }],
    };
    let request = SimulateScalingRequest { policy: None, initial_replicas: 2, samples: vec![sample] };
    let simulated = ok(d, "SimulateScaling", d.scaling().simulate_scaling(d.req(request)).await);
    reveals_nothing(d, "SimulateScaling", &simulated);
}
