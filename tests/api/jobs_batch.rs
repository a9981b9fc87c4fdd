//! EnqueueJobs end to end: a batch is stored in one transaction and answered
//! item by item in order; unique keys match live jobs and earlier items as
//! if the items were enqueued one by one; an invalid item or an oversized
//! batch is refused naming the field, with nothing written; the jobs belong
//! to the caller's tenant only; the REST binding works.

use http::Method;
use tenantry::{
    jobs::convert::json_to_struct,
    proto::tenantry::v1::{
        EnqueueJobRequest, EnqueueJobsRequest, EnqueueJobsResponse, GetJobRequest, JobState, ListJobsRequest,
    },
    tenancy::TenantId,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    harness::{TestApp, http_client::send},
    jobs::{in_tenant, insert_tenant, jobs},
};

fn item(kind: &str, unique_key: &str) -> EnqueueJobRequest {
    EnqueueJobRequest { kind: kind.into(), unique_key: unique_key.into(), ..Default::default() }
}

fn batch(items: Vec<EnqueueJobRequest>) -> EnqueueJobsRequest {
    EnqueueJobsRequest { requests: items }
}

async fn enqueue_jobs(app: &TestApp, tenant: &TenantId, items: Vec<EnqueueJobRequest>) -> EnqueueJobsResponse {
    jobs(app).enqueue_jobs(in_tenant(app, tenant, batch(items))).await.unwrap().into_inner()
}

async fn refused(app: &TestApp, tenant: &TenantId, items: Vec<EnqueueJobRequest>) -> (Code, String) {
    let status = jobs(app).enqueue_jobs(in_tenant(app, tenant, batch(items))).await.unwrap_err();
    let field =
        status.get_error_details().bad_request().map(|b| b.field_violations[0].field.clone()).unwrap_or_default();
    (status.code(), field)
}

async fn stored_jobs(app: &TestApp, tenant: &TenantId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM platform.jobs WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn ids(response: &EnqueueJobsResponse) -> Vec<String> {
    response.results.iter().map(|r| r.job.as_ref().unwrap().id.clone()).collect()
}

#[tokio::test]
async fn a_batch_is_stored_and_answered_item_by_item_in_order() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let items: Vec<EnqueueJobRequest> = (0..5)
        .map(|i| EnqueueJobRequest {
            payload: Some(json_to_struct(&serde_json::json!({"n": i}))),
            priority: i,
            ..item(if i % 2 == 0 { "email.send" } else { "report.build" }, "")
        })
        .collect();
    let response = enqueue_jobs(&app, &acme, items).await;
    assert_eq!(response.results.len(), 5);
    for (i, result) in response.results.iter().enumerate() {
        let job = result.job.as_ref().unwrap();
        assert!(!result.duplicate);
        assert_eq!(job.priority, i as i32, "answers come in the request's order");
        assert_eq!(job.kind, if i % 2 == 0 { "email.send" } else { "report.build" });
        assert_eq!(job.tenant_id, acme.as_str());
        assert_eq!(job.queue, "default");
        assert_eq!(job.state(), JobState::Available);
        assert_eq!(job.max_attempts, 10);
    }
    let third = jobs(&app)
        .get_job(in_tenant(&app, &acme, GetJobRequest { job_id: ids(&response)[2].clone() }))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(tenantry::jobs::convert::struct_to_json(third.payload.as_ref().unwrap()), serde_json::json!({"n": 2}));
    assert_eq!(stored_jobs(&app, &acme).await, 5);
}

#[tokio::test]
async fn unique_keys_in_a_batch_match_live_jobs_and_earlier_items() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let existing = jobs(&app)
        .enqueue_job(in_tenant(&app, &acme, item("invoice.send", "inv-1")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();

    let response = enqueue_jobs(
        &app,
        &acme,
        vec![
            item("invoice.send", "inv-1"), // held by the live job
            item("invoice.send", "inv-2"), // new
            item("invoice.send", "inv-2"), // held by the item before
            item("invoice.send", ""),      // no key: always new
            item("receipt.send", "inv-2"), // same key, another kind: new
            item("invoice.send", "inv-2"), // still the second item's
        ],
    )
    .await;
    let duplicate: Vec<bool> = response.results.iter().map(|r| r.duplicate).collect();
    assert_eq!(duplicate, [true, false, true, false, false, true]);
    let ids = ids(&response);
    assert_eq!(ids[0], existing.id);
    assert_eq!(ids[2], ids[1]);
    assert_eq!(ids[5], ids[1]);
    assert_ne!(ids[4], ids[1]);
    assert_eq!(response.results[2].job.as_ref().unwrap().unique_key, "inv-2");
    assert_eq!(stored_jobs(&app, &acme).await, 1 + 3);

    // Sent again, every keyed item is a duplicate of the jobs now live.
    let again = enqueue_jobs(&app, &acme, vec![item("invoice.send", "inv-2"), item("receipt.send", "inv-2")]).await;
    assert!(again.results.iter().all(|r| r.duplicate));
    assert_eq!(self::ids(&again), [ids[1].clone(), ids[4].clone()]);
}

#[tokio::test]
async fn concurrent_batches_with_overlapping_keys_create_one_job_per_key() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let calls: Vec<_> = (0..8)
        .map(|call| {
            let mut client = jobs(&app);
            // Each batch names the 40 keys in its own order.
            let items = (0..40).map(|k| item("sync.run", &format!("key-{}", (k * 7 + call * 13) % 40))).collect();
            let request = in_tenant(&app, &acme, batch(items));
            tokio::spawn(async move { client.enqueue_jobs(request).await.unwrap().into_inner() })
        })
        .collect();
    let mut created = 0;
    for call in calls {
        created += call.await.unwrap().results.iter().filter(|r| !r.duplicate).count();
    }
    assert_eq!(created, 40);
    assert_eq!(stored_jobs(&app, &acme).await, 40);
}

#[tokio::test]
async fn a_batch_of_more_than_1000_jobs_or_none_is_refused() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let too_many = (0..1001).map(|_| item("email.send", "")).collect();
    assert_eq!(refused(&app, &acme, too_many).await, (Code::InvalidArgument, "requests".to_owned()));
    assert_eq!(refused(&app, &acme, Vec::new()).await, (Code::InvalidArgument, "requests".to_owned()));
    assert_eq!(stored_jobs(&app, &acme).await, 0);

    let most = enqueue_jobs(&app, &acme, (0..1000).map(|_| item("email.send", "")).collect()).await;
    assert_eq!(most.results.len(), 1000);
    assert_eq!(stored_jobs(&app, &acme).await, 1000);
}

#[tokio::test]
async fn an_invalid_item_is_named_by_its_index_and_nothing_is_written() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let ok = || item("email.send", "");
    let cases: Vec<(Vec<EnqueueJobRequest>, &str)> = vec![
        (vec![ok(), ok(), item("bad kind!", "")], "requests[2].kind"),
        (vec![ok(), EnqueueJobRequest { queue: "tenantry".into(), ..ok() }], "requests[1].queue"),
        (vec![item("", "")], "requests[0].kind"),
        (vec![ok(), item("tenantry.tenant.purge", "")], "requests[1].kind"),
        (vec![ok(), ok(), ok(), EnqueueJobRequest { max_attempts: -1, ..ok() }], "requests[3].max_attempts"),
        (vec![ok(), item("email.send", &"k".repeat(300))], "requests[1].unique_key"),
    ];
    for (items, field) in cases {
        assert_eq!(refused(&app, &acme, items).await, (Code::InvalidArgument, field.to_owned()));
    }
    assert_eq!(stored_jobs(&app, &acme).await, 0);
}

#[tokio::test]
async fn another_tenant_cannot_see_or_collide_with_a_batchs_jobs() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let other = insert_tenant(&app, "other", "pro").await;
    let response = enqueue_jobs(&app, &acme, vec![item("email.send", "welcome"), item("email.send", "")]).await;
    for id in ids(&response) {
        let status = jobs(&app).get_job(in_tenant(&app, &other, GetJobRequest { job_id: id })).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    let listed = jobs(&app).list_jobs(in_tenant(&app, &other, ListJobsRequest::default())).await.unwrap().into_inner();
    assert!(listed.jobs.is_empty());
    // The same key in another tenant is another job.
    let theirs = enqueue_jobs(&app, &other, vec![item("email.send", "welcome")]).await;
    assert!(!theirs.results[0].duplicate);
    assert_ne!(ids(&theirs)[0], ids(&response)[0]);
    assert_eq!(theirs.results[0].job.as_ref().unwrap().tenant_id, other.as_str());
}

#[tokio::test]
async fn a_batch_can_be_enqueued_over_rest() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let admin = format!("Bearer {}", app.admin_key);
    let headers = [("authorization", admin.as_str()), ("x-tenant-id", acme.as_str())];
    let body = r#"{"requests": [
        {"kind": "email.send", "payload": {"to": "ada@acme.example"}, "uniqueKey": "welcome-ada"},
        {"kind": "email.send", "uniqueKey": "welcome-ada"},
        {"kind": "report.build", "delay": "3600s"}
    ]}"#;
    let response = send(app.http_addr, Method::POST, "/v1/jobs:batchEnqueue", &headers, Some(body)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let json = response.json();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["job"]["payload"]["to"], "ada@acme.example");
    assert_eq!(results[1]["duplicate"], true);
    assert_eq!(results[1]["job"]["id"], results[0]["job"]["id"]);
    assert_eq!(results[2]["job"]["state"], "JOB_STATE_SCHEDULED");
    assert_eq!(stored_jobs(&app, &acme).await, 2);

    let bad = r#"{"requests": [{"kind": "email.send"}, {"kind": "no spaces"}]}"#;
    let response = send(app.http_addr, Method::POST, "/v1/jobs:batchEnqueue", &headers, Some(bad)).await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.json()["details"][0]["fieldViolations"][0]["field"], "requests[1].kind");
    assert_eq!(stored_jobs(&app, &acme).await, 2);
}
