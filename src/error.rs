//! The restricted set of errors the API returns, and their one mapping to
//! `tonic::Status` (with `google.rpc` rich details) and to HTTP status codes.
//!
//! Every module has its own `thiserror` enum and converts into [`ApiError`] at
//! the edge. Internal errors are logged here with their context and leave the
//! process as an opaque message with the request id, never as their text.

mod database;

use std::time::Duration;

pub use self::database::{DATABASE_RETRY_AFTER, DatabaseFault, fault_of, is_retryable_conflict};
use tonic::{Code, Status, metadata::MetadataMap};
use tonic_types::{ErrorDetails, StatusExt};

pub use crate::ratelimit::RateHeaders;

/// The limit or quota a RESOURCE_EXHAUSTED refusal is about, sent as a
/// `google.rpc.QuotaFailure` violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaViolation {
    /// What is limited: `tenants/<id>/requests_per_second`, `…/monthly_request_quota`.
    pub subject: String,
    /// Which limit, in words a developer can act on.
    pub description: String,
}

/// The `ErrorInfo.domain` of every error Tenantry returns.
pub const ERROR_DOMAIN: &str = "tenantry.v1";

/// Why a call was refused, sent as `google.rpc.ErrorInfo.reason` (and the
/// label of `tenantry_auth_failures_total`): a closed set clients can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The email or password (or the current password) is wrong.
    CredentialsInvalid,
    /// The worker's lease on the job expired or moved to a newer attempt.
    JobLeaseLost,
    /// The job is not in a state that allows the call.
    JobState,
    /// The change would leave the tenant without an owner.
    LastOwner,
    /// The principal lacks the permission the method requires.
    PermissionMissing,
    /// The method (or the change) is for platform admins.
    PlatformAdminRequired,
    /// Built-in roles cannot be changed.
    RoleBuiltIn,
    /// The tenant has as many custom roles as allowed.
    RoleLimit,
    /// The tenant is deleted.
    TenantDeleted,
    /// The credential belongs to another tenant than `x-tenant-id` names.
    TenantMismatch,
    /// The tenant is suspended.
    TenantSuspended,
    /// No credential was sent.
    CredentialMissing,
    /// The credential is not of a known form.
    CredentialMalformed,
    /// The API key is unknown, expired or revoked.
    ApiKeyInvalid,
    /// The access token is invalid, expired or its user is disabled.
    AccessTokenInvalid,
}

impl Reason {
    /// The reason as sent on the wire (`TENANT_SUSPENDED`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CredentialsInvalid => "CREDENTIALS_INVALID",
            Reason::JobLeaseLost => "JOB_LEASE_LOST",
            Reason::JobState => "JOB_STATE",
            Reason::LastOwner => "LAST_OWNER",
            Reason::PermissionMissing => "PERMISSION_MISSING",
            Reason::PlatformAdminRequired => "PLATFORM_ADMIN_REQUIRED",
            Reason::RoleBuiltIn => "ROLE_BUILT_IN",
            Reason::RoleLimit => "ROLE_LIMIT",
            Reason::TenantDeleted => "TENANT_DELETED",
            Reason::TenantMismatch => "TENANT_MISMATCH",
            Reason::TenantSuspended => "TENANT_SUSPENDED",
            Reason::CredentialMissing => "CREDENTIAL_MISSING",
            Reason::CredentialMalformed => "CREDENTIAL_MALFORMED",
            Reason::ApiKeyInvalid => "API_KEY_INVALID",
            Reason::AccessTokenInvalid => "ACCESS_TOKEN_INVALID",
        }
    }
}

/// An error as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is invalid; `field` is its path (`tenant.slug`).
    #[error("{field}: {description}")]
    InvalidArgument { field: String, description: String },
    /// The credential is missing, malformed, unknown, expired or revoked.
    #[error("{message}")]
    Unauthenticated { reason: Reason, message: String },
    /// The caller is known but may not do this.
    #[error("{message}")]
    PermissionDenied { reason: Reason, message: String },
    /// The resource does not exist (or belongs to another tenant).
    #[error("{resource} not found")]
    NotFound { resource: String },
    /// The resource already exists.
    #[error("{message}")]
    AlreadyExists { message: String },
    /// The system is not in a state that allows the call.
    #[error("{message}")]
    FailedPrecondition { reason: Reason, message: String },
    /// A rate limit or quota is exhausted; retry after `retry_after`. The
    /// violation becomes a `QuotaFailure` detail, the rate state the
    /// `x-ratelimit-*` and `retry-after` metadata.
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after: Option<Duration>,
        violation: Option<QuotaViolation>,
        /// Boxed: refusals are rare, and every `Result<_, ApiError>` pays
        /// for the largest variant.
        rate: Option<Box<RateHeaders>>,
    },
    /// The server is overloaded or a dependency is down; retry with backoff.
    #[error("{message}")]
    Unavailable { message: String, retry_after: Option<Duration> },
    /// The call's deadline passed before it finished.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// A concurrent change won (serialization failure or deadlock, still
    /// failing after bounded retries); the whole call may be retried.
    #[error("{message}")]
    Aborted { message: String },
    /// The request is not a gRPC call at all (wrong HTTP method or content
    /// type): answered with this HTTP status, as the gRPC spec asks.
    #[error("{message}")]
    Protocol { status: http::StatusCode, message: String },
    /// The method exists in the contract but is not served by this build.
    #[error("{method} is not implemented by this server yet")]
    Unimplemented { method: String },
    /// Anything else: logged with context, returned opaque.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// An invalid field, named by its path in the request message.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument { field: field.into(), description: description.into() }
    }

    /// A limit or quota refusal with only a retry delay.
    pub fn exhausted(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        ApiError::ResourceExhausted { message: message.into(), retry_after, violation: None, rate: None }
    }

    /// Wraps any error as an internal one.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError::Internal(error.into())
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument { .. } | ApiError::Protocol { .. } => Code::InvalidArgument,
            ApiError::Unauthenticated { .. } => Code::Unauthenticated,
            ApiError::PermissionDenied { .. } => Code::PermissionDenied,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::AlreadyExists { .. } => Code::AlreadyExists,
            ApiError::FailedPrecondition { .. } => Code::FailedPrecondition,
            ApiError::ResourceExhausted { .. } => Code::ResourceExhausted,
            ApiError::Unavailable { .. } => Code::Unavailable,
            ApiError::DeadlineExceeded => Code::DeadlineExceeded,
            ApiError::Aborted { .. } => Code::Aborted,
            ApiError::Unimplemented { .. } => Code::Unimplemented,
            ApiError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let code = error.code();
        match error {
            ApiError::InvalidArgument { field, description } => {
                let message = format!("invalid {field}: {description}");
                let details = ErrorDetails::with_bad_request_violation(field, description);
                Status::with_error_details(code, message, details)
            }
            ApiError::Unauthenticated { reason, message }
            | ApiError::PermissionDenied { reason, message }
            | ApiError::FailedPrecondition { reason, message } => {
                let details = ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, []);
                Status::with_error_details(code, message, details)
            }
            ApiError::ResourceExhausted { message, retry_after, violation, rate } => {
                let mut details = ErrorDetails::new();
                if let Some(delay) = retry_after {
                    details.set_retry_info(Some(delay));
                }
                if let Some(violation) = violation {
                    details.add_quota_failure_violation(violation.subject, violation.description);
                }
                let mut metadata = MetadataMap::new();
                if let Some(rate) = rate {
                    rate.write_metadata(&mut metadata);
                }
                if let Some(delay) = retry_after {
                    metadata.insert("retry-after", retry_after_seconds(delay).into());
                }
                Status::with_error_details_and_metadata(code, message, details, metadata)
            }
            ApiError::Unavailable { message, retry_after } => match retry_after {
                Some(delay) => Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(delay))),
                None => Status::new(code, message),
            },
            ApiError::Internal(source) => {
                tracing::error!(error = %source, source = ?source, "internal error");
                Status::internal("internal error; the server logged the details under this call's request id")
            }
            other => Status::new(code, other.to_string()),
        }
    }
}

/// `retry-after` in whole seconds, rounded up so a client that waits it out
/// is admitted.
pub fn retry_after_seconds(delay: Duration) -> u64 {
    delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
}

/// The HTTP status the REST side uses for a gRPC code (the grpc-gateway table).
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        Code::Cancelled => S::from_u16(499).unwrap_or(S::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => S::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => S::BAD_REQUEST,
        Code::FailedPrecondition => S::BAD_REQUEST,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        Code::NotFound => S::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => S::CONFLICT,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::Unauthenticated => S::UNAUTHORIZED,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field_in_bad_request_details() {
        let status = Status::from(ApiError::invalid("slug", "must be 3 to 63 characters"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("bad request details").field_violations;
        assert_eq!(violations[0].field, "slug");
    }

    #[test]
    fn internal_errors_do_not_leak_their_text() {
        let status = Status::from(ApiError::internal("relation \"secret_table\" does not exist"));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret_table"));
    }

    #[test]
    fn exhausted_carries_retry_info() {
        let status = Status::from(ApiError::ResourceExhausted {
            message: "rate limit".into(),
            retry_after: Some(Duration::from_millis(1500)),
            violation: Some(QuotaViolation {
                subject: "tenants/x/requests_per_second".into(),
                description: "d".into(),
            }),
            rate: Some(Box::new(RateHeaders {
                limit: 20,
                remaining: 0,
                reset: Duration::from_millis(2100),
                window_seconds: 2,
            })),
        });
        let details = status.get_error_details();
        assert_eq!(details.retry_info().and_then(|r| r.retry_delay), Some(Duration::from_millis(1500)));
        assert_eq!(details.quota_failure().unwrap().violations[0].subject, "tenants/x/requests_per_second");
        assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
        assert_eq!(status.metadata().get("x-ratelimit-limit").unwrap(), "20");
        assert_eq!(status.metadata().get("x-ratelimit-remaining").unwrap(), "0");
        assert_eq!(status.metadata().get("x-ratelimit-reset").unwrap(), "3");
        assert_eq!(status.metadata().get("x-ratelimit-window").unwrap(), "2");
        assert_eq!(http_status(status.code()), http::StatusCode::TOO_MANY_REQUESTS);
    }
}
