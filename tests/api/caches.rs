//! The node caches (tenants, identity, API keys, plans) follow changes made
//! on other nodes: a change committed on one node is enforced on another
//! within a second, through the change feed, not the caches' time to live.

use std::time::{Duration, Instant};

use tenantry::proto::tenantry::v1::{GetQuotaRequest, usage_service_client::UsageServiceClient};
use tonic::Code;

use crate::harness::{TestApp, tenants::upsert_plan};

#[tokio::test]
async fn a_plan_change_made_on_one_node_is_enforced_on_a_second_node_within_one_second() {
    let first = TestApp::builder().spawn().await;
    let second = first.second_node().spawn().await;
    upsert_plan(&first.channel, &first.admin_key, "changing", 1000, 1000, 0).await;
    let tenant = first.create_tenant_on("plan-follower", "changing").await;
    let quota = |app: &TestApp| {
        let request = tenant.as_admin(GetQuotaRequest::default());
        let mut client = UsageServiceClient::new(app.channel.clone());
        async move { client.get_quota(request).await }
    };
    // The second node caches the plan's generous limits.
    for _ in 0..3 {
        let limits = quota(&second).await.expect("admitted").into_inner().rate_limit.expect("rate limit state");
        assert_eq!(limits.requests_per_second, 1000);
    }

    upsert_plan(&first.channel, &first.admin_key, "changing", 1, 1, 0).await;
    let changed = Instant::now();
    let mut enforced = None;
    while changed.elapsed() < Duration::from_secs(3) {
        // Two calls back to back: with a bucket of one, the second is refused
        // once the new plan applies on this node.
        let a = quota(&second).await;
        let b = quota(&second).await;
        let refused = [&a, &b].iter().any(|r| matches!(r, Err(status) if status.code() == Code::ResourceExhausted));
        if refused {
            enforced = Some(changed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let enforced = enforced.expect("the second node never applied the new plan");
    assert!(enforced <= Duration::from_secs(1), "the new plan applied on the second node after {enforced:?}");
}
