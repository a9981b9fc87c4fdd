//! Example request bodies for the OpenAPI document and `/docs`, one per RPC
//! that takes a body, written next to each other so they read as a set.
//!
//! Keyed by the RPC's full name (`tenantry.v1.TenantService.CreateTenant`).
//! Each example is the HTTP body only, in the JSON mapping (lowerCamelCase):
//! path fields and query parameters (`updateMask`) are not in it. The
//! `/docs` try-it-out form is prefilled from it. Tests check that every
//! route with a body has one, that it parses as the body message with no
//! unknown field, and that it sets every REQUIRED field of that message, so
//! an example cannot drift from the contract unnoticed.

use serde_json::{Value, json};

/// The example body of `rpc` (full name), if one is written.
pub fn request_body(rpc: &str) -> Option<Value> {
    let method = rpc.strip_prefix("tenantry.v1.")?;
    let example = match method {
        // TenantService
        "TenantService.CreateTenant" => json!({
            "slug": "acme",
            "displayName": "Acme Corporation",
            "planId": "free",
            "labels": {"region": "eu"},
        }),
        "TenantService.UpdateTenant" => json!({"displayName": "Acme Corp.", "labels": {"region": "eu"}}),
        "TenantService.SuspendTenant" => json!({"reason": "payment overdue"}),
        "TenantService.ResumeTenant" => json!({}),
        "TenantService.UpsertPlan" => json!({
            "displayName": "Pro",
            "requestsPerSecond": 100,
            "burst": 200,
            "monthlyRequestQuota": "10000000",
            "maxConcurrentJobs": 20,
            "minReplicas": 1,
            "maxReplicas": 10,
        }),
        // AuthService
        "AuthService.Login" => {
            json!({"tenant": "acme", "email": "ada@acme.example", "password": "correct horse battery"})
        }
        "AuthService.RefreshToken" | "AuthService.Logout" => {
            json!({"refreshToken": "<the refresh token of the last Login or RefreshToken>"})
        }
        "AuthService.IntrospectToken" => json!({"token": "<an access token or an API key>"}),
        "AuthService.CreateUser" => json!({
            "email": "ada@acme.example",
            "displayName": "Ada Lovelace",
            "password": "correct horse battery",
            "roles": ["member"],
        }),
        "AuthService.UpdateUser" => json!({"displayName": "Ada King", "state": "USER_STATE_ACTIVE"}),
        "AuthService.ChangePassword" => {
            json!({"currentPassword": "correct horse battery", "newPassword": "staple battery horse correct"})
        }
        "AuthService.CreateApiKey" => json!({"name": "ci-deploy", "scopes": ["jobs:read", "jobs:write"]}),
        "AuthService.RevokeApiKey" => json!({}),
        "AuthService.CreateRole" => json!({
            "name": "Billing manager",
            "description": "Reads usage and quotas.",
            "permissions": ["usage:read"],
        }),
        "AuthService.UpdateRole" => json!({"description": "Reads usage, quotas and the audit log.",
            "permissions": ["usage:read", "audit:read"]}),
        "AuthService.AssignRole" => json!({"roleId": "admin"}),
        // UsageService
        "UsageService.RecordUsage" => json!({"events": [{
            "eventId": "3f1c2a9e-5b7d-4e8a-9c0f-1a2b3c4d5e6f",
            "metric": "emails.sent",
            "quantity": 12,
            "dimensions": {"campaign": "spring"},
        }]}),
        // JobsService
        "JobsService.EnqueueJob" => json!({
            "kind": "email.send",
            "payload": {"to": "ada@acme.example", "template": "welcome"},
            "queue": "default",
            "delay": "30s",
            "uniqueKey": "welcome-ada",
        }),
        "JobsService.EnqueueJobs" => json!({"requests": [
            {"kind": "email.send", "payload": {"to": "ada@acme.example", "template": "welcome"},
             "uniqueKey": "welcome-ada"},
            {"kind": "email.send", "payload": {"to": "grace@acme.example", "template": "welcome"},
             "uniqueKey": "welcome-grace"},
        ]}),
        "JobsService.CancelJob" | "JobsService.RetryJob" => json!({}),
        "JobsService.LeaseJobs" => json!({
            "kinds": ["email.send"],
            "queue": "default",
            "maxJobs": 5,
            "leaseDuration": "30s",
            "waitDuration": "2s",
            "workerId": "host-1/pid-4242",
        }),
        "JobsService.HeartbeatJob" => json!({"attempt": 1, "leaseDuration": "30s"}),
        "JobsService.CompleteJob" => json!({"attempt": 1, "result": {"messageId": "m-4711"}}),
        "JobsService.FailJob" => json!({"attempt": 1, "errorMessage": "SMTP server unavailable", "retryAfter": "60s"}),
        // ScalingService
        "ScalingService.UpdateScalingPolicy" => json!({
            "minReplicas": 1,
            "maxReplicas": 4,
            "metrics": [{"signal": "SCALING_SIGNAL_REQUEST_RATE", "targetValue": 50}],
        }),
        "ScalingService.SimulateScaling" => json!({
            "initialReplicas": 1,
            "samples": [
                {"sampleTime": "2026-05-01T12:00:00Z",
                 "metrics": [{"signal": "SCALING_SIGNAL_REQUEST_RATE", "value": 40}]},
                {"sampleTime": "2026-05-01T12:00:15Z",
                 "metrics": [{"signal": "SCALING_SIGNAL_REQUEST_RATE", "value": 180}]},
            ],
        }),
        _ => return None,
    };
    Some(example)
}
