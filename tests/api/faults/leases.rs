//! Expired external leases on a node without built-in workers
//! (`serve --no-workers`): the node still rescues them, and the stale
//! attempt's heartbeat, completion and failure are refused afterwards.

use std::time::Duration;

use tenantry::proto::tenantry::v1::{
    CompleteJobRequest, EnqueueJobRequest, FailJobRequest, GetJobRequest, HeartbeatJobRequest, JobState,
    LeaseJobsRequest, jobs_service_client::JobsServiceClient,
};
use tonic::Code;

use crate::harness::{TestApp, eventually};

#[tokio::test]
async fn a_node_without_workers_rescues_an_expired_external_lease_and_fences_the_stale_attempt() {
    let app = TestApp::builder()
        .configure(|c| c.no_workers = true)
        .workers(|w| w.rescue_interval = Duration::from_millis(500))
        .spawn()
        .await;
    let tenant = app.create_tenant("leased").await;
    let mut jobs = JobsServiceClient::new(app.channel.clone());
    let enqueue = EnqueueJobRequest { kind: "faults.external".into(), ..Default::default() };
    let job = jobs.enqueue_job(tenant.as_admin(enqueue)).await.unwrap().into_inner().job.unwrap();
    let lease = LeaseJobsRequest {
        kinds: vec!["faults.external".into()],
        max_jobs: 1,
        worker_id: "vanishing-worker".into(),
        lease_duration: Some(prost_types::Duration { seconds: 5, nanos: 0 }),
        ..Default::default()
    };
    let leased = jobs.lease_jobs(tenant.as_admin(lease)).await.unwrap().into_inner();
    assert_eq!(leased.jobs.len(), 1);
    assert_eq!(leased.jobs[0].attempt, 1);

    // The worker vanishes. Nothing else runs workers: this node must rescue the job.
    let reader = jobs.clone();
    let get = || {
        let mut jobs = reader.clone();
        let request = tenant.as_admin(GetJobRequest { job_id: job.id.clone() });
        async move { jobs.get_job(request).await.unwrap().into_inner().job.unwrap() }
    };
    let rescued = eventually(Duration::from_secs(15), || async {
        let job = get().await;
        job.state() != JobState::Running && job.errors.iter().any(|e| e.message == "lease expired")
    })
    .await;
    let after = get().await;
    assert!(rescued, "the expired lease was rescued within 15 s: {after:?}");
    assert!(matches!(after.state(), JobState::Retryable | JobState::Available), "{after:?}");

    let id = job.id.clone();
    let beat = HeartbeatJobRequest { job_id: id.clone(), attempt: 1, lease_duration: None };
    let status = jobs.heartbeat_job(tenant.as_admin(beat)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "stale heartbeat: {status:?}");
    let complete = CompleteJobRequest { job_id: id.clone(), attempt: 1, result: None };
    let status = jobs.complete_job(tenant.as_admin(complete)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "stale completion: {status:?}");
    let fail = FailJobRequest { job_id: id.clone(), attempt: 1, error_message: "late".into(), ..Default::default() };
    let status = jobs.fail_job(tenant.as_admin(fail)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "stale failure: {status:?}");
    let unchanged = get().await;
    assert_eq!(
        (unchanged.state(), unchanged.attempt),
        (after.state(), after.attempt),
        "the stale attempt changed nothing"
    );
}
