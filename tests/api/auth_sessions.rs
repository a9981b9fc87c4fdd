//! Login, refresh-token rotation and replay, logout, and login throttling.

use std::time::Duration;

use tenantry::proto::tenantry::v1::{
    ListAuditEventsRequest, LogoutRequest, RefreshTokenRequest, SuspendTenantRequest, WhoAmIRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{
    TestApp,
    identity::{PASSWORD, bearer},
};

#[tokio::test]
async fn an_owner_logs_in_and_the_access_token_identifies_them() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let login = app.login("acme", "OWNER@acme.test", PASSWORD).await.unwrap();
    assert_eq!(login.token_type, "Bearer");
    assert_eq!(login.expires_in, 900);
    assert_eq!(login.tenant_id, tenant.id);
    assert!(login.refresh_token.starts_with("rt."));
    let me = app.auth().who_am_i(bearer(WhoAmIRequest {}, &login.access_token)).await.unwrap().into_inner();
    let principal = me.principal.unwrap();
    assert_eq!(principal.id, tenant.owner.id);
    assert_eq!(principal.tenant_id, tenant.id);
    assert_eq!(me.tenant_slug, "acme");
    assert_eq!(me.roles, vec!["owner".to_owned()]);
    assert!(me.permissions.contains(&"users:create".to_owned()));
    assert!(!me.permissions.contains(&"tenants:create".to_owned()));
}

#[tokio::test]
async fn unknown_users_wrong_passwords_and_unknown_tenants_get_the_same_answer() {
    let app = TestApp::builder().spawn().await;
    app.tenant_with_owner("acme").await;
    let answers = [
        app.login("acme", "nobody@acme.test", PASSWORD).await.unwrap_err(),
        app.login("acme", "owner@acme.test", "wrong password here").await.unwrap_err(),
        app.login("no-such-tenant", "owner@acme.test", PASSWORD).await.unwrap_err(),
    ];
    for status in &answers {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), answers[0].message());
    }
}

#[tokio::test]
async fn a_refresh_rotates_the_token_and_the_old_one_stops_working() {
    let app = TestApp::builder().spawn().await;
    app.tenant_with_owner("acme").await;
    let login = app.login("acme", "owner@acme.test", PASSWORD).await.unwrap();
    let refreshed = app
        .auth()
        .refresh_token(RefreshTokenRequest { refresh_token: login.refresh_token.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(refreshed.refresh_token, login.refresh_token);
    assert_eq!(refreshed.refresh_expire_time, login.refresh_expire_time, "the session keeps its end");
    app.auth().who_am_i(bearer(WhoAmIRequest {}, &refreshed.access_token)).await.unwrap();
    let next = app.auth().refresh_token(RefreshTokenRequest { refresh_token: refreshed.refresh_token.clone() }).await;
    assert!(next.is_ok(), "{next:?}");
}

#[tokio::test]
async fn a_replayed_refresh_token_revokes_its_whole_family_and_is_audited() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let login = app.login("acme", "owner@acme.test", PASSWORD).await.unwrap();
    let first = login.refresh_token.clone();
    let successor = app
        .auth()
        .refresh_token(RefreshTokenRequest { refresh_token: first.clone() })
        .await
        .unwrap()
        .into_inner()
        .refresh_token;
    let replay = app.auth().refresh_token(RefreshTokenRequest { refresh_token: first }).await.unwrap_err();
    assert_eq!(replay.code(), Code::Unauthenticated);
    let after = app.auth().refresh_token(RefreshTokenRequest { refresh_token: successor }).await.unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated, "the successor died with its family");
    let events = app
        .auth()
        .list_audit_events(bearer(
            ListAuditEventsRequest { event_type: "auth.refresh.reused".into(), ..Default::default() },
            &tenant.owner_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].target_id, tenant.owner.id);
}

#[tokio::test]
async fn a_hundred_concurrent_refreshes_with_one_token_yield_exactly_one_successor() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let token = app.login("acme", "owner@acme.test", PASSWORD).await.unwrap().refresh_token;
    let calls = (0..100).map(|_| {
        let mut client = app.auth();
        let token = token.clone();
        async move { client.refresh_token(RefreshTokenRequest { refresh_token: token }).await }
    });
    let results = futures_join_all(calls).await;
    let successes = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(successes, 1, "{:?}", results.iter().filter_map(|r| r.as_ref().err()).next());
    for failure in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(failure.code(), Code::Unauthenticated, "{failure:?}");
    }
    // Two logins (the harness's and ours) and exactly one successor were stored.
    let stored: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"t_{}\".refresh_tokens", tenant.id))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 3);
}

/// Runs futures concurrently (no extra dependency for one helper).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn logout_revokes_the_session_and_is_idempotent() {
    let app = TestApp::builder().spawn().await;
    app.tenant_with_owner("acme").await;
    let login = app.login("acme", "owner@acme.test", PASSWORD).await.unwrap();
    for _ in 0..2 {
        app.auth()
            .logout(bearer(LogoutRequest { refresh_token: login.refresh_token.clone() }, &login.access_token))
            .await
            .unwrap();
    }
    let status =
        app.auth().refresh_token(RefreshTokenRequest { refresh_token: login.refresh_token }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_suspended_tenant_cannot_log_in_and_its_tokens_stop_working() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let login = app.login("acme", "owner@acme.test", PASSWORD).await.unwrap();
    app.tenants()
        .suspend_tenant(app.as_admin(SuspendTenantRequest { tenant_id: tenant.id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let status = app.login("acme", "owner@acme.test", PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = app.auth().who_am_i(bearer(WhoAmIRequest {}, &login.access_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status =
        app.auth().refresh_token(RefreshTokenRequest { refresh_token: login.refresh_token }).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_account_even_for_the_right_one() {
    let app = TestApp::builder().spawn().await;
    app.tenant_with_owner("acme").await;
    for _ in 0..5 {
        let status = app.login("acme", "owner@acme.test", "wrong password here").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let status = app.login("acme", "owner@acme.test", PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = status.get_error_details().retry_info().expect("RetryInfo").retry_delay.expect("a delay");
    assert!(retry >= Duration::from_secs(1), "{retry:?}");
}

#[tokio::test]
async fn at_most_a_hundred_guesses_per_account_and_day_are_evaluated_and_the_count_is_durable() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    // The day's budget is used up (as a previous process, or another node, left it).
    let schema = format!("t_{}", tenant.id);
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".login_attempts (email, window_start, attempts) VALUES ('owner@acme.test', now(), 100)"
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    let status = app.login("acme", "owner@acme.test", PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = status.get_error_details().retry_info().unwrap().retry_delay.unwrap();
    assert!(retry > Duration::from_secs(23 * 3600), "{retry:?}");
    // Other accounts are unaffected.
    let status = app.login("acme", "someone@acme.test", PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn one_client_address_is_throttled_across_accounts() {
    let app = TestApp::builder()
        .configure(|config| {
            config.identity.login_address_burst = 3;
            config.identity.login_address_per_minute = 1;
        })
        .spawn()
        .await;
    app.tenant_with_owner("acme").await; // one login
    for n in 0..2 {
        let status = app.login("acme", &format!("user{n}@acme.test"), PASSWORD).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let status = app.login("acme", "user9@acme.test", PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.get_error_details().retry_info().is_some());
}

#[tokio::test]
async fn logins_and_failed_logins_are_audited_with_the_client_address() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    app.login("acme", "owner@acme.test", "wrong password here").await.unwrap_err();
    let events = app
        .auth()
        .list_audit_events(bearer(
            ListAuditEventsRequest { event_type: "auth.login.".into(), ..Default::default() },
            &tenant.owner_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec!["auth.login.failed", "auth.login.succeeded"], "newest first");
    assert_eq!(events[0].client_address, "127.0.0.1");
    assert!(!events[0].request_id.is_empty());
    let details = events[0].details.as_ref().unwrap();
    assert!(!format!("{details:?}").contains("wrong password"), "no secrets in the audit log");
}
