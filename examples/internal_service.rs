//! An internal service calling Tenantry with the Rust client (feature
//! `client`, on by default): copy this file as a starting point.
//!
//! It connects with an API key (a platform-admin key acts in the tenant named
//! by `TENANTRY_TENANT`), asks who it is, enqueues a job idempotently (a
//! `unique_key` makes the enqueue safe to retry), lists the tenant's jobs page
//! by page, records usage, and shows how to read the rich error details.
//!
//! ```sh
//! TENANTRY_ADDR=http://127.0.0.1:50051 TENANTRY_API_KEY=... TENANTRY_TENANT=acme \
//!     cargo run --example internal_service
//! ```

use std::{error::Error, time::Duration};

use tenantry::client::{
    Client, Credentials, PasswordLogin, RetryPolicy, StatusExt,
    v1::{EnqueueJobRequest, ListJobsRequest, RecordUsageRequest, UsageEvent, WhoAmIRequest},
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let addr = std::env::var("TENANTRY_ADDR").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    // An API key, or a user's login (refreshed before its access token expires).
    let credentials = match std::env::var("TENANTRY_API_KEY") {
        Ok(key) => Credentials::api_key(key),
        Err(_) => Credentials::Login(
            PasswordLogin::new(
                std::env::var("TENANTRY_TENANT")?,
                std::env::var("TENANTRY_EMAIL")?,
                std::env::var("TENANTRY_PASSWORD")?,
            )
            .into(),
        ),
    };
    let mut builder = Client::builder(addr).credentials(credentials).retry(RetryPolicy::default());
    if let Ok(tenant) = std::env::var("TENANTRY_TENANT") {
        builder = builder.tenant(tenant);
    }
    let client = builder.connect().await?;

    let me = client.auth().who_am_i(WhoAmIRequest {}).await?.into_inner();
    println!("calling as {:?} in tenant {}", me.principal.map(|p| p.display_name), me.tenant_id);

    // Keyed by an id of our own, so the client may retry it and a second run finds the same job.
    let order = std::env::var("ORDER_ID").unwrap_or_else(|_| "order-42".into());
    let enqueued = client
        .jobs()
        .enqueue_job(EnqueueJobRequest {
            kind: "invoice.render".into(),
            unique_key: format!("invoice-{order}"),
            max_attempts: 5,
            ..Default::default()
        })
        .await?
        .into_inner();
    let job = enqueued.job.ok_or("the server returned no job")?;
    println!("job {} ({}duplicate)", job.id, if enqueued.duplicate { "" } else { "not a " });

    // Every page of the tenant's jobs.
    let mut request = ListJobsRequest { page_size: 50, ..Default::default() };
    let mut total = 0;
    loop {
        let page = client.jobs().list_jobs(request.clone()).await?.into_inner();
        total += page.jobs.len();
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    println!("{total} jobs in the tenant");

    // Usage events carry their own id: recording is idempotent, so retried safely.
    let event = UsageEvent {
        event_id: format!("render-{order}"),
        metric: "invoices.rendered".into(),
        quantity: 1.0,
        ..Default::default()
    };
    client.usage().record_usage(RecordUsageRequest { events: vec![event] }).await?;
    if let Some(limit) = client.rate_limit() {
        println!("rate limit: {} of {} left, full again in {} s", limit.remaining, limit.limit, limit.reset_seconds);
    }

    // Reading the rich error details of a refused call.
    let invalid = client.jobs().enqueue_job(EnqueueJobRequest::default()).await;
    if let Err(status) = invalid {
        println!("refused: {:?} {}", status.code(), status.message());
        if let Some(bad_request) = status.get_details_bad_request() {
            for violation in bad_request.field_violations {
                println!("  field {}: {}", violation.field, violation.description);
            }
        }
        if let Some(info) = status.get_details_error_info() {
            println!("  reason {} ({})", info.reason, info.domain);
        }
        if let Some(delay) = status.get_details_retry_info().and_then(|r| r.retry_delay) {
            println!("  retry after {:?}", delay.max(Duration::ZERO));
        }
    }
    Ok(())
}
