//! The end of a sequence: every tenant, through its own credential, observes
//! exactly what its model holds (users, also one by one; custom roles; API
//! keys; jobs; usage totals), and nothing it observes, its audit log
//! included, names a resource of another tenant.

use tenantry::proto::tenantry::v1::{
    GetUsageRequest, GetUserRequest, JobState, ListApiKeysRequest, ListAuditEventsRequest, ListJobsRequest,
    ListRolesRequest, ListUsersRequest, jobs_service_client::JobsServiceClient,
};
use tonic::Code;

use super::model::{METRICS, Outcome, QUEUE, SeenUser, UserModel, World, answer, refused, seen};
use crate::harness::TestApp;

impl World {
    /// Every tenant observes exactly its model, and nothing of the others.
    pub async fn check(&self, app: &TestApp) -> Outcome {
        for t in 0..self.tenants.len() {
            let seen_state = self.check_tenant(app, t).await.map_err(|e| format!("tenant {t}: {e}"))?;
            for (o, other) in self.tenants.iter().enumerate().filter(|(o, _)| *o != t) {
                for marker in other.markers() {
                    ensure!(!seen_state.contains(marker), "tenant {t} observes tenant {o}'s {marker}: {seen_state}");
                }
            }
        }
        Ok(())
    }

    /// Compares tenant `t`'s state with its model; returns all it observed.
    async fn check_tenant(&self, app: &TestApp, t: usize) -> Outcome<String> {
        let tenant = &self.tenants[t];
        let mut auth = app.auth();
        let users = answer(
            "ListUsers",
            auth.list_users(self.as_tenant(t, ListUsersRequest { page_size: 1000, ..Default::default() })).await,
        )?
        .users;
        let mut observed: Vec<SeenUser> = users.iter().map(seen).collect();
        let mut expected: Vec<SeenUser> = tenant.users.iter().filter(|u| !u.deleted).map(UserModel::seen).collect();
        observed.sort();
        expected.sort();
        ensure!(observed == expected, "users {observed:?}, expected {expected:?}");
        for user in &tenant.users {
            let got = auth.get_user(self.as_tenant(t, GetUserRequest { user_id: user.id.clone() })).await;
            match user.deleted {
                true => refused("GetUser of a deleted user", got, Code::NotFound)?,
                false => ensure!(seen(&answer("GetUser", got)?.user.unwrap()) == user.seen(), "GetUser {user:?}"),
            }
        }

        let roles = answer(
            "ListRoles",
            auth.list_roles(self.as_tenant(t, ListRolesRequest { page_size: 1000, ..Default::default() })).await,
        )?
        .roles;
        let mut observed: Vec<(&str, &str)> =
            roles.iter().filter(|r| !r.built_in).map(|r| (r.id.as_str(), r.name.as_str())).collect();
        let mut expected: Vec<(&str, &str)> =
            tenant.roles.iter().filter(|r| !r.deleted).map(|r| (r.id.as_str(), r.name.as_str())).collect();
        observed.sort();
        expected.sort();
        ensure!(observed == expected, "roles {observed:?}, expected {expected:?}");

        let request = ListApiKeysRequest { page_size: 1000, show_inactive: true, ..Default::default() };
        let keys = answer("ListApiKeys", auth.list_api_keys(self.as_tenant(t, request)).await)?.api_keys;
        let mut observed: Vec<(&str, &str, bool)> =
            keys.iter().map(|k| (k.id.as_str(), k.name.as_str(), k.revoke_time.is_some())).collect();
        let mut expected: Vec<(&str, &str, bool)> =
            tenant.keys.iter().map(|k| (k.id.as_str(), k.name.as_str(), k.revoked)).collect();
        observed.sort();
        expected.sort();
        ensure!(observed == expected, "API keys {observed:?}, expected {expected:?}");

        let request = ListJobsRequest { page_size: 1000, queue: QUEUE.into(), ..Default::default() };
        let listed = answer(
            "ListJobs",
            JobsServiceClient::new(app.channel.clone()).list_jobs(self.as_tenant(t, request)).await,
        )?
        .jobs;
        let mut observed: Vec<(&str, &str, bool)> =
            listed.iter().map(|j| (j.id.as_str(), j.unique_key.as_str(), j.state() == JobState::Cancelled)).collect();
        let mut expected: Vec<(&str, &str, bool)> =
            tenant.jobs.iter().map(|j| (j.id.as_str(), j.unique_key.as_str(), j.cancelled)).collect();
        observed.sort();
        expected.sort();
        ensure!(observed == expected, "jobs {observed:?}, expected {expected:?}");
        ensure!(listed.iter().all(|j| j.tenant_id == tenant.id), "jobs of another tenant: {listed:?}");

        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        let request = GetUsageRequest {
            metrics: METRICS.iter().map(|m| (*m).to_owned()).collect(),
            start_time: Some((now - day).into()),
            end_time: Some((now + day).into()),
            granularity: 0,
        };
        let usage = answer("GetUsage", app.usage().get_usage(self.as_tenant(t, request)).await)?;
        for (m, metric) in METRICS.iter().enumerate() {
            let observed: f64 = usage.series.iter().filter(|s| s.metric == *metric).map(|s| s.total).sum();
            let expected: f64 = tenant.events.values().filter(|(em, _)| *em == m).map(|(_, q)| f64::from(*q)).sum();
            ensure!(observed == expected, "usage of {metric}: {observed}, expected {expected}");
        }

        let request = ListAuditEventsRequest { page_size: 1000, ..Default::default() };
        let audit = answer("ListAuditEvents", auth.list_audit_events(self.as_tenant(t, request)).await)?;
        Ok(format!("{users:?} {roles:?} {keys:?} {listed:?} {usage:?} {audit:?}"))
    }
}
