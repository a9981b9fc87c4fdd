//! PostgreSQL stopped under writes, the polite way (`pg_ctl -m fast`) and
//! as a crash would (`-m immediate`), then started again: every write the
//! server acknowledged is there afterwards, every call during the outage is
//! UNAVAILABLE (a code clients retry), and writes succeed again within a
//! second of PostgreSQL's return.

use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tenantry::{
    db::embedded::{EmbeddedPostgres, locate_binaries},
    proto::tenantry::v1::{EnqueueJobRequest, jobs_service_client::JobsServiceClient},
};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{Tally, server_errors};
use crate::harness::{
    TestApp, TestDatabase,
    postgres::private_cluster,
    tenants::{TenantHandle, upsert_plan},
};

/// Writers calling at once.
const WRITERS: usize = 4;
/// How long PostgreSQL stays down each time.
const OUTAGE: Duration = Duration::from_secs(2);

/// One call a writer made.
struct Call {
    ended: Instant,
    code: Code,
    /// The job's id when the write was acknowledged.
    job: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_writes_loses_no_acknowledged_write_and_answers_unavailable() {
    let (cluster, _dir) = private_cluster("faults-pg").await;
    let app = TestApp::builder()
        .database(TestDatabase::on_cluster(&cluster).await)
        .configure(|c| c.no_workers = true)
        .spawn()
        .await;
    upsert_plan(&app.channel, &app.admin_key, "faults-roomy", 100_000, 100_000, 0).await;
    let tenant = app.create_tenant_on("outage", "faults-roomy").await;

    let calls = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            tokio::spawn(write_until(app.channel.clone(), tenant.clone(), writer, calls.clone(), stop.clone()))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut outages = Vec::new();
    for mode in ["fast", "immediate"] {
        let down = Instant::now();
        pg_ctl_stop(&cluster, mode);
        tokio::time::sleep(OUTAGE).await;
        cluster.restart().await.expect("start PostgreSQL again");
        let back = Instant::now();
        outages.push((mode, down, back));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.cancel();
    for writer in writers {
        writer.await.expect("writer");
    }

    let calls = std::mem::take(&mut *calls.lock().unwrap());
    let mut tally = Tally::default();
    calls.iter().for_each(|c| tally.add(c.code));
    eprintln!("writes: {tally:?}");
    let failed: Vec<Code> = calls.iter().map(|c| c.code).filter(|c| *c != Code::Ok).collect();
    assert!(!failed.is_empty(), "the outages were seen by the writers");
    assert!(failed.iter().all(|c| *c == Code::Unavailable), "every failure is UNAVAILABLE: {tally:?}");
    for (mode, down, back) in &outages {
        let first = calls.iter().filter(|c| c.code == Code::Ok && c.ended >= *back).map(|c| c.ended).min();
        let first = first.expect("writes succeed again").duration_since(*back);
        let refused = calls.iter().filter(|c| c.ended > *down && c.ended < *back && c.code != Code::Ok).count();
        eprintln!(
            "-m {mode}: {refused} refused while down; first success {} ms after PostgreSQL was back",
            first.as_millis()
        );
        assert!(first <= Duration::from_secs(1), "-m {mode}: first success {first:?} after return");
    }

    let acknowledged: Vec<String> = calls.iter().filter_map(|c| c.job.clone()).collect();
    let present: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.jobs WHERE id = ANY($1)")
        .bind(&acknowledged)
        .fetch_one(&app.pool)
        .await
        .expect("count the acknowledged writes");
    assert_eq!(present as usize, acknowledged.len(), "every acknowledged write survived both outages");
    let errors = server_errors(&app).await;
    assert!(errors.is_empty(), "{errors:#?}");
    app.stop().await;
    cluster.stop().await.ok();
}

/// Enqueues jobs one after another until `stop`, recording every call.
async fn write_until(
    channel: tonic::transport::Channel,
    tenant: TenantHandle,
    writer: usize,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: CancellationToken,
) {
    let mut client = JobsServiceClient::new(channel);
    let mut n = 0;
    while !stop.is_cancelled() {
        n += 1;
        let request = EnqueueJobRequest { kind: format!("faults.write.{writer}.{n}"), ..Default::default() };
        let mut request = tenant.as_admin(request);
        request.set_timeout(Duration::from_secs(5));
        let (code, job) = match client.enqueue_job(request).await {
            Ok(response) => (Code::Ok, response.into_inner().job.map(|j| j.id)),
            Err(status) => (status.code(), None),
        };
        let failed = code != Code::Ok;
        calls.lock().unwrap().push(Call { ended: Instant::now(), code, job });
        // Refusals are immediate: pause a little, as a client honouring RetryInfo would.
        tokio::time::sleep(Duration::from_millis(if failed { 20 } else { 5 })).await;
    }
}

/// Stops the cluster with `pg_ctl -m <mode>`, as the cluster's owner.
fn pg_ctl_stop(cluster: &EmbeddedPostgres, mode: &str) {
    let bin = locate_binaries().expect("PostgreSQL binaries");
    let owner = std::fs::metadata(cluster.data_dir()).expect("data dir");
    let mut command = std::process::Command::new(bin.join("pg_ctl"));
    command.arg("-D").arg(cluster.data_dir()).args(["-m", mode, "-w", "-t", "60", "stop"]);
    if owner.uid() != own_uid() {
        command.uid(owner.uid()).gid(owner.gid());
    }
    let output = command.output().expect("run pg_ctl");
    assert!(output.status.success(), "pg_ctl stop -m {mode}: {}", String::from_utf8_lossy(&output.stderr));
}

/// This process's uid (the owner of `/proc/self`).
fn own_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}
