//! Shutdown with only a WatchJob stream open: the stream is ended at once
//! with UNAVAILABLE (a client retries it on another node), and the server
//! stops within a second instead of waiting out `--drain-timeout`.

use std::time::{Duration, Instant};

use tenantry::proto::tenantry::v1::{
    EnqueueJobRequest, JobState, WatchJobRequest, jobs_service_client::JobsServiceClient,
};
use tonic::Code;

use crate::harness::TestApp;

#[tokio::test]
async fn a_server_with_only_a_watch_stream_open_stops_within_a_second() {
    let app = TestApp::builder()
        .configure(|c| {
            c.no_workers = true;
            c.drain_timeout = Duration::from_secs(10);
        })
        .spawn()
        .await;
    let tenant = app.create_tenant("watched").await;
    let mut jobs = JobsServiceClient::new(app.channel.clone());
    let enqueue = EnqueueJobRequest { kind: "faults.never-run".into(), ..Default::default() };
    let job = jobs.enqueue_job(tenant.as_admin(enqueue)).await.unwrap().into_inner().job.unwrap();
    let mut stream = jobs.watch_job(tenant.as_admin(WatchJobRequest { job_id: job.id })).await.unwrap().into_inner();
    let first = stream.message().await.expect("the first snapshot").expect("a snapshot");
    assert_eq!(first.job.unwrap().state(), JobState::Available, "no worker runs it");
    let watching = tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                ended => return ended.map(drop),
            }
        }
    });

    let started = Instant::now();
    app.stop().await;
    let stopped = started.elapsed();
    let ended = tokio::time::timeout(Duration::from_secs(1), watching).await;
    eprintln!("stopped in {} ms with a watch open", stopped.as_millis());
    assert!(stopped <= Duration::from_secs(1), "shutdown took {stopped:?} with only a watch open");
    let ended = ended.expect("the watch ended with the server").expect("watch task");
    let status = ended.expect_err("the watch ends with a status, not as if the job were final");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
