//! ScalingService end to end: policies bounded by the plan, evaluation by
//! the periodic job from the tenant's job backlog, stored decisions, and the
//! simulator.

use std::time::Duration;

use tenantry::proto::tenantry::v1::{
    GetScalingPolicyRequest, GetScalingStatusRequest, ListScalingDecisionsRequest, MetricTarget, MetricValue,
    ScalingLimitingRule, ScalingPolicy, ScalingSignal, SimulateScalingRequest, SimulationSample,
    UpdateScalingPolicyRequest, scaling_service_client::ScalingServiceClient,
};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

use crate::{
    harness::{TestApp, eventually},
    jobs::{in_tenant, insert_tenant},
};

fn scaling(app: &TestApp) -> ScalingServiceClient<Channel> {
    ScalingServiceClient::new(app.channel.clone())
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}

#[tokio::test]
async fn a_tenant_starts_with_a_default_policy_inside_its_plan() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "enterprise").await; // replicas 2..=50
    let policy = scaling(&app)
        .get_scaling_policy(in_tenant(&app, &acme, GetScalingPolicyRequest {}))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!((policy.min_replicas, policy.max_replicas), (2, 50));
    assert_eq!(policy.scale_down.unwrap().stabilization_window.unwrap().seconds, 300);
    assert!(policy.update_time.is_none());
}

#[tokio::test]
async fn a_policy_update_applies_the_mask_and_stays_within_the_plan() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await; // replicas 1..=10
    let mut client = scaling(&app);
    let update = ScalingPolicy {
        max_replicas: 8,
        min_replicas: 7, // not in the mask: ignored
        metrics: vec![MetricTarget { signal: ScalingSignal::JobBacklog as i32, target_value: 10.0 }],
        ..Default::default()
    };
    let request = UpdateScalingPolicyRequest { policy: Some(update), update_mask: mask(&["max_replicas", "metrics"]) };
    let policy =
        client.update_scaling_policy(in_tenant(&app, &acme, request)).await.unwrap().into_inner().policy.unwrap();
    assert_eq!((policy.min_replicas, policy.max_replicas), (1, 8));
    assert_eq!(policy.metrics.len(), 1);
    assert!(policy.update_time.is_some());
    let read = client.get_scaling_policy(in_tenant(&app, &acme, GetScalingPolicyRequest {})).await.unwrap();
    assert_eq!(read.into_inner().policy.unwrap(), policy);

    let cases = [
        (ScalingPolicy { max_replicas: 11, ..Default::default() }, &["max_replicas"][..], "policy.max_replicas"),
        (ScalingPolicy { min_replicas: 0, ..Default::default() }, &["min_replicas"][..], "policy.min_replicas"),
        (
            ScalingPolicy {
                metrics: vec![MetricTarget { signal: ScalingSignal::RequestRate as i32, target_value: 0.0 }],
                ..Default::default()
            },
            &["metrics"][..],
            "policy.metrics[0].target_value",
        ),
        (ScalingPolicy::default(), &["nonsense"][..], "update_mask"),
    ];
    for (update, paths, field) in cases {
        let request = UpdateScalingPolicyRequest { policy: Some(update), update_mask: mask(paths) };
        let status = client.update_scaling_policy(in_tenant(&app, &acme, request)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(status.get_error_details().bad_request().unwrap().field_violations[0].field, field);
    }
}

#[tokio::test]
async fn the_periodic_evaluation_scales_a_tenant_on_its_job_backlog() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "enterprise").await; // replicas 2..=50
    let mut client = scaling(&app);
    let update = ScalingPolicy {
        metrics: vec![MetricTarget { signal: ScalingSignal::JobBacklog as i32, target_value: 10.0 }],
        evaluation_interval: Some(prost_types::Duration { seconds: 5, nanos: 0 }),
        ..Default::default()
    };
    let request =
        UpdateScalingPolicyRequest { policy: Some(update), update_mask: mask(&["metrics", "evaluation_interval"]) };
    client.update_scaling_policy(in_tenant(&app, &acme, request)).await.unwrap();
    // 45 due jobs nobody leases: ceil(45 / 10) = 5 replicas.
    sqlx::query(
        "INSERT INTO platform.jobs (id, tenant_id, kind, queue, state, max_attempts, timeout_ms)
         SELECT 'job_' || lpad(to_hex(g), 24, '0'), $1, 'report.build', 'default', 'available', 10, 60000
           FROM generate_series(1, 45) g",
    )
    .bind(acme.as_str())
    .execute(&app.pool)
    .await
    .unwrap();

    let scaled = eventually(Duration::from_secs(30), || {
        let mut client = client.clone();
        let request = in_tenant(&app, &acme, GetScalingStatusRequest {});
        async move {
            let status = client.get_scaling_status(request).await.unwrap().into_inner().status.unwrap();
            status.current_replicas == 5
        }
    })
    .await;
    assert!(scaled, "the tenant was scaled to 5 replicas");
    let status =
        client.get_scaling_status(in_tenant(&app, &acme, GetScalingStatusRequest {})).await.unwrap().into_inner();
    let status = status.status.unwrap();
    let last = status.last_decision.unwrap();
    assert_eq!((last.current_replicas, last.desired_replicas, last.raw_recommendation), (2, 5, 5));
    assert!(last.id.starts_with("sdc_"));
    assert!(last.explanation.contains("job_backlog 45 over target 10 per replica proposes 5"), "{}", last.explanation);
    assert!(status.last_scale_time.is_some());
    assert_eq!(status.current_metrics, vec![MetricValue { signal: ScalingSignal::JobBacklog as i32, value: 45.0 }]);

    let changes = client
        .list_scaling_decisions(in_tenant(
            &app,
            &acme,
            ListScalingDecisionsRequest { changes_only: true, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changes.decisions.len(), 1);
    assert_eq!(changes.decisions[0].id, last.id);

    // The job counts its evaluations by direction and limiting rule.
    let (status, metrics) = app.http_get("/metrics").await;
    assert_eq!(status, 200);
    let up = metrics
        .lines()
        .find(|line| line.starts_with("tenantry_scaling_decisions_total{direction=\"up\",rule=\"none\"}"))
        .unwrap_or_else(|| panic!("the scale-up is counted: {metrics}"));
    let count: f64 = up.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a sample value");
    assert!(count >= 1.0, "{up}");
}

fn sample(seconds: i64, request_rate: f64) -> SimulationSample {
    SimulationSample {
        sample_time: Some(prost_types::Timestamp { seconds: 1_800_000_000 + seconds, nanos: 0 }),
        metrics: vec![MetricValue { signal: ScalingSignal::RequestRate as i32, value: request_rate }],
    }
}

#[tokio::test]
async fn a_simulation_replays_a_series_into_explained_decisions() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let policy = ScalingPolicy {
        min_replicas: 1,
        max_replicas: 20,
        metrics: vec![MetricTarget { signal: ScalingSignal::RequestRate as i32, target_value: 50.0 }],
        ..Default::default()
    };
    // A spike to 1000 rps from 2 replicas, then quiet.
    let samples = vec![sample(0, 100.0), sample(15, 1000.0), sample(30, 1000.0), sample(45, 0.0), sample(400, 0.0)];
    let request = SimulateScalingRequest { policy: Some(policy), initial_replicas: 2, samples };
    let decisions =
        scaling(&app).simulate_scaling(in_tenant(&app, &acme, request)).await.unwrap().into_inner().decisions;
    let path: Vec<(u32, u32, i32)> =
        decisions.iter().map(|d| (d.current_replicas, d.desired_replicas, d.limiting_rule)).collect();
    assert_eq!(
        path,
        [
            (2, 2, ScalingLimitingRule::None as i32),
            // raw 20; +4 pods or +100% from 2: 6.
            (2, 6, ScalingLimitingRule::ScaleUpPolicy as i32),
            // 15 s later the period restarts: +100% of 6 = 12.
            (6, 12, ScalingLimitingRule::ScaleUpPolicy as i32),
            // Load gone, but 20 was recommended within the 300 s window.
            (12, 12, ScalingLimitingRule::Stabilization as i32),
            // Window passed: down to the minimum.
            (12, 1, ScalingLimitingRule::MinReplicas as i32),
        ]
    );
    assert!(decisions.iter().all(|d| d.id.is_empty() && !d.explanation.is_empty()));
    let stored = scaling(&app)
        .list_scaling_decisions(in_tenant(&app, &acme, ListScalingDecisionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(stored.decisions.iter().all(|d| d.evaluate_time.unwrap().seconds < 1_800_000_000));
}

#[tokio::test]
async fn a_simulation_refuses_samples_out_of_order() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let request = SimulateScalingRequest { samples: vec![sample(10, 1.0), sample(5, 1.0)], ..Default::default() };
    let status = scaling(&app).simulate_scaling(in_tenant(&app, &acme, request)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.get_error_details().bad_request().unwrap().field_violations[0].field, "samples[1].sample_time");
    let empty = SimulateScalingRequest::default();
    let status = scaling(&app).simulate_scaling(in_tenant(&app, &acme, empty)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

/// Transactions committed in the test's database so far.
async fn commits(pool: &sqlx::PgPool) -> i64 {
    // Stats reach pg_stat_database when backends report them; read fresh.
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(pool).await.unwrap();
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The idle-cost bench: 10,000 idle tenants on the default settings (health
/// probe every 2 s, scaling job every 5 s, workers polling every second):
/// none is evaluated and no decision is stored, and the PostgreSQL
/// transactions a second, everything included, are measured and printed.
/// Before, each was evaluated and stored a decision every 15 s (the issue
/// measured 390 transactions/s with 1,021 tenants).
#[tokio::test]
async fn ten_thousand_idle_tenants_are_not_evaluated_and_their_idle_cost_is_measured() {
    const WINDOW: Duration = Duration::from_secs(30);
    let app = TestApp::builder().configure(|c| c.health_interval = Duration::from_secs(2)).spawn().await;
    sqlx::query(
        "INSERT INTO platform.tenants (id, slug, display_name, plan_id)
         SELECT 'ten_' || lpad(to_hex(g), 24, '0'), 'idle-' || g, 'Idle', 'free' FROM generate_series(1, 10000) g",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // One run of the scaling job finds no tenant to evaluate.
    let due = tenantry::scaling::store::tenants_due(&app.pool, 100_000).await.unwrap();
    assert!(due.is_empty(), "{} idle tenants would be evaluated", due.len());
    // Settle (start-up work, the first periodic runs), then measure. A
    // backend reports its commits to pg_stat_database up to 10 s after
    // them when it goes idle (PostgreSQL's PGSTAT_IDLE_INTERVAL), so the
    // settling outlasts that: start-up commits are not counted as idle cost.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = commits(&app.pool).await;
    tokio::time::sleep(WINDOW).await;
    let after = commits(&app.pool).await;
    // The two reads above are transactions too; they are not the server's.
    let per_second = (after - before - 2) as f64 / WINDOW.as_secs_f64();
    println!("idle cost with 10,000 tenants: {per_second:.2} transactions/s ({} in {WINDOW:?})", after - before - 2);
    // Issue 14's budget is 5 transactions/s. Alone this measures 2.0, and
    // 2.1 with three CPU hogs beside it (docs/scaling.md). It is a rate over
    // a window of wall time, so it is reported, not asserted: performance is
    // measured alone, not by timed assertions. What makes it cheap is
    // asserted: no idle tenant is evaluated (above) and no decision is
    // stored (below).
    eprintln!("idle cost budget: 5 transactions/s; measured {per_second:.2}");
    let decisions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM platform.scaling_decisions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(decisions, 0, "idle tenants store no decisions");
}

/// A steady tenant stores its first decision and then none until something
/// changes; old decisions are pruned, each tenant's newest kept.
#[tokio::test]
async fn decisions_are_stored_on_change_and_pruned_after_the_retention() {
    use tenantry::scaling::store::{self, Evaluation};
    // Evaluated here only, not by the periodic job as well.
    let app = TestApp::builder().workers(|w| w.scaling_interval = Duration::ZERO).spawn().await;
    let acme = insert_tenant(&app, "steady", "enterprise").await; // replicas 2..=50
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.scaling_decisions WHERE tenant_id = $1")
        .bind(acme.as_str())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM platform.scaling_decisions WHERE tenant_id = $1")
            .bind(acme.as_str())
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let make_due = || async {
        sqlx::query(
            "UPDATE platform.scaling_state SET last_evaluated_at = now() - interval '1 hour' WHERE tenant_id = $1",
        )
        .bind(acme.as_str())
        .execute(&app.pool)
        .await
        .unwrap();
    };
    assert!(matches!(store::evaluate(&app.pool, &acme).await.unwrap(), Evaluation::Stored(_)), "the first is stored");
    for _ in 0..3 {
        make_due().await;
        let evaluation = store::evaluate(&app.pool, &acme).await.unwrap();
        assert!(matches!(evaluation, Evaluation::Unchanged(_)), "{evaluation:?}");
    }
    assert_eq!(count().await, 1, "a steady tenant adds no rows");
    // A backlog changes the recommendation: stored.
    sqlx::query(
        "INSERT INTO platform.jobs (id, tenant_id, kind, queue, state, max_attempts, timeout_ms)
         SELECT 'job_' || lpad(to_hex(g), 24, '0'), $1, 'report.build', 'default', 'available', 10, 60000
           FROM generate_series(1, 450) g",
    )
    .bind(acme.as_str())
    .execute(&app.pool)
    .await
    .unwrap();
    make_due().await;
    let changed = store::evaluate(&app.pool, &acme).await.unwrap().stored().expect("a change is stored");
    assert_eq!((changed.decision.current, changed.decision.desired), (2, 5));
    assert_eq!(count().await, 2);

    // Retention: age both rows past it; only the newest survives a prune.
    sqlx::query(
        "UPDATE platform.scaling_decisions SET evaluated_at = evaluated_at - interval '8 days' WHERE tenant_id = $1",
    )
    .bind(acme.as_str())
    .execute(&app.pool)
    .await
    .unwrap();
    let pruned = store::prune_decisions(&app.pool, Duration::from_secs(7 * 24 * 3600), 10_000).await.unwrap();
    assert_eq!(pruned, 1);
    let kept: Vec<String> = sqlx::query_scalar("SELECT id FROM platform.scaling_decisions WHERE tenant_id = $1")
        .bind(acme.as_str())
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(kept, vec![changed.id], "the newest decision still stands and is kept");
}
