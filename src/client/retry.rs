//! The retry policy every Tenantry SDK follows (see `docs/sdks.md`).
//!
//! Only UNAVAILABLE and RESOURCE_EXHAUSTED are retried, and only when
//! repeating the call is harmless: methods without side effects, idempotent
//! methods, and `EnqueueJob` with a `unique_key`. With a `RetryInfo` the
//! client waits at least that long plus up to 20 % jitter; RESOURCE_EXHAUSTED
//! without one (a message too large), or with a delay over
//! `max_retry_info_delay` (a monthly quota), is not retried. Without
//! `RetryInfo`, UNAVAILABLE backs off exponentially with full jitter. A retry
//! never outlives the call's deadline.

use std::time::Duration;

use prost::Message;
use rand::Rng;
use tonic::Code;

use crate::proto::tenantry::v1::EnqueueJobRequest;

/// Whether a method may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads: repeating changes nothing.
    NoSideEffects,
    /// Repeating leaves the same state.
    Idempotent,
    /// Idempotent only when the request carries its key (`EnqueueJob.unique_key`).
    Keyed,
    /// Never repeated by the client.
    NotIdempotent,
}

use Idempotency::{Idempotent as IDEM, NoSideEffects as SAFE, NotIdempotent as NOT};

/// Every method of the contract, `Service/Method`; a test checks the list against the descriptor.
pub const METHODS: &[(&str, Idempotency)] = &[
    ("AuthService/Login", NOT),
    ("AuthService/RefreshToken", NOT), // rotation: a repeat would replay the old token and revoke the family
    ("AuthService/Logout", IDEM),
    ("AuthService/WhoAmI", SAFE),
    ("AuthService/IntrospectToken", SAFE),
    ("AuthService/GetJwks", SAFE),
    ("AuthService/CreateUser", NOT),
    ("AuthService/GetUser", SAFE),
    ("AuthService/ListUsers", SAFE),
    ("AuthService/UpdateUser", IDEM),
    ("AuthService/DeleteUser", IDEM),
    ("AuthService/ChangePassword", NOT),
    ("AuthService/CreateApiKey", NOT),
    ("AuthService/ListApiKeys", SAFE),
    ("AuthService/RevokeApiKey", IDEM),
    ("AuthService/CreateRole", NOT),
    ("AuthService/ListRoles", SAFE),
    ("AuthService/UpdateRole", IDEM),
    ("AuthService/DeleteRole", IDEM),
    ("AuthService/AssignRole", IDEM),
    ("AuthService/UnassignRole", IDEM),
    ("AuthService/ListAuditEvents", SAFE),
    ("JobsService/EnqueueJob", Idempotency::Keyed),
    ("JobsService/EnqueueJobs", NOT), // a repeat would enqueue the items without a unique_key again
    ("JobsService/GetJob", SAFE),
    ("JobsService/ListJobs", SAFE),
    ("JobsService/CancelJob", IDEM),
    ("JobsService/RetryJob", NOT),
    ("JobsService/WatchJob", SAFE),
    ("JobsService/LeaseJobs", NOT), // a lost answer's leases only come back when they expire
    ("JobsService/HeartbeatJob", IDEM),
    ("JobsService/CompleteJob", IDEM), // fenced by the attempt number
    ("JobsService/FailJob", IDEM),     // fenced by the attempt number
    ("ScalingService/GetScalingPolicy", SAFE),
    ("ScalingService/UpdateScalingPolicy", IDEM),
    ("ScalingService/GetScalingStatus", SAFE),
    ("ScalingService/ListScalingDecisions", SAFE),
    ("ScalingService/SimulateScaling", SAFE),
    ("TenantService/CreateTenant", NOT),
    ("TenantService/GetTenant", SAFE),
    ("TenantService/ListTenants", SAFE),
    ("TenantService/UpdateTenant", IDEM),
    ("TenantService/SuspendTenant", IDEM),
    ("TenantService/ResumeTenant", IDEM),
    ("TenantService/DeleteTenant", IDEM),
    ("TenantService/ListPlans", SAFE),
    ("TenantService/UpsertPlan", IDEM),
    ("UsageService/RecordUsage", IDEM), // every event carries its event_id
    ("UsageService/GetUsage", SAFE),
    ("UsageService/GetQuota", SAFE),
];

/// `/tenantry.v1.JobsService/GetJob` → `JobsService/GetJob`.
pub fn method_key(path: &str) -> String {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    format!("{}/{method}", service.rsplit('.').next().unwrap_or(service))
}

/// Whether repeating the call at `path` with this encoded request message is harmless.
pub fn may_repeat(path: &str, message: &[u8]) -> bool {
    let key = method_key(path);
    match METHODS.iter().find(|(name, _)| *name == key).map(|(_, kind)| *kind) {
        Some(SAFE | IDEM) => true,
        Some(Idempotency::Keyed) => EnqueueJobRequest::decode(message).is_ok_and(|r| !r.unique_key.is_empty()),
        _ => false,
    }
}

/// How failed calls are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// First backoff ceiling without RetryInfo.
    pub initial_backoff: Duration,
    /// Largest backoff ceiling without RetryInfo.
    pub max_backoff: Duration,
    /// A server-requested delay longer than this is not waited out.
    pub max_retry_info_delay: Duration,
    /// Extra random wait on top of RetryInfo, as a fraction of it.
    pub retry_info_jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_retry_info_delay: Duration::from_secs(30),
            retry_info_jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..RetryPolicy::default() }
    }

    /// How long to wait before attempt `attempt + 1` after a failure with
    /// `code` and the server's `retry_info` delay, or `None` not to retry.
    pub fn delay(&self, code: Code, retry_info: Option<Duration>, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts || !matches!(code, Code::Unavailable | Code::ResourceExhausted) {
            return None;
        }
        let mut rng = rand::rng();
        if let Some(asked) = retry_info {
            if asked > self.max_retry_info_delay {
                return None;
            }
            return Some(asked.mul_f64(1.0 + rng.random_range(0.0..=self.retry_info_jitter)));
        }
        if code == Code::ResourceExhausted {
            return None; // nothing says waiting helps (message too large)
        }
        let ceiling = self.initial_backoff.saturating_mul(1 << (attempt - 1).min(16)).min(self.max_backoff);
        Some(ceiling.mul_f64(rng.random_range(0.0..=1.0)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::policy::PolicyTable;

    #[test]
    fn every_method_of_the_contract_has_an_idempotency_class() {
        let table = PolicyTable::embedded().unwrap();
        let declared: BTreeSet<String> = table
            .iter()
            .filter(|p| p.service.starts_with(crate::proto::PACKAGE))
            .map(|p| format!("{}/{}", p.service.rsplit('.').next().unwrap(), p.method))
            .collect();
        let listed: BTreeSet<String> = METHODS.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(declared, listed);
    }

    #[test]
    fn enqueue_repeats_only_with_its_unique_key() {
        let path = "/tenantry.v1.JobsService/EnqueueJob";
        let keyed = EnqueueJobRequest { kind: "k".into(), unique_key: "order-1".into(), ..Default::default() };
        let unkeyed = EnqueueJobRequest { kind: "k".into(), ..Default::default() };
        assert!(may_repeat(path, &keyed.encode_to_vec()));
        assert!(!may_repeat(path, &unkeyed.encode_to_vec()));
        assert!(!may_repeat("/tenantry.v1.AuthService/Login", &[]));
        assert!(may_repeat("/tenantry.v1.JobsService/GetJob", &[]));
    }

    #[test]
    fn waits_honour_retry_info_with_bounded_jitter_and_back_off_without_it() {
        let policy = RetryPolicy::default();
        for _ in 0..100 {
            let wait = policy.delay(Code::ResourceExhausted, Some(Duration::from_secs(2)), 1).unwrap();
            assert!(wait >= Duration::from_secs(2) && wait <= Duration::from_millis(2400), "{wait:?}");
            let backoff = policy.delay(Code::Unavailable, None, 3).unwrap();
            assert!(backoff <= Duration::from_millis(400), "{backoff:?}");
        }
        assert_eq!(policy.delay(Code::ResourceExhausted, None, 1), None);
        assert_eq!(policy.delay(Code::ResourceExhausted, Some(Duration::from_secs(3600)), 1), None);
        assert_eq!(policy.delay(Code::InvalidArgument, Some(Duration::from_secs(1)), 1), None);
        assert_eq!(policy.delay(Code::Unavailable, None, policy.max_attempts), None);
    }
}
