//! Identity and access: users and password login, RS256 access tokens with a
//! rotating key ring, refresh-token families, tenant API keys, roles and
//! permissions, and the tenant audit log. The AuthService handlers sit on
//! top; the authenticate guard uses [`Authenticator`].
//!
//! # Layout
//!
//! - this file: [`IdentityConfig`], [`IdentityError`] and its mapping to [`ApiError`].
//! - [`keys`]: the signing key ring from PEM, JWKS, `tenantry keys generate`.
//! - [`tokens`]: access-token claims, issuing, and the cached verifier.
//! - [`passwords`]: the password policy and argon2id off the executor.
//! - [`throttle`]: login throttling per tenant+email (durable) and per address.
//! - [`roles`]: the permission catalogue, built-in roles, custom roles.
//! - [`users`]: users in the tenant schema.
//! - [`refresh`]: refresh-token families and rotation.
//! - [`api_keys`]: tenant API keys, the platform index, the verified-key cache.
//! - [`access`]: what a user may do now, cached and invalidated by NOTIFY.
//! - [`authenticator`]: credential → principal, for the authenticate guard.
//! - [`audit`]: writing and listing audit events.
//! - [`service`]: the AuthService gRPC handlers.

pub mod access;
pub mod api_keys;
pub mod audit;
pub mod authenticator;
pub mod keys;
pub mod passwords;
pub mod refresh;
pub mod roles;
pub mod service;
pub mod throttle;
pub mod tokens;
pub mod users;

use std::{path::PathBuf, time::Duration};

use clap::Args;

pub use self::authenticator::Authenticator;
use crate::{
    config::{ConfigError, Secret, parse_duration},
    error::ApiError,
};

/// Identity settings of `tenantry serve`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Identity")]
pub struct IdentityConfig {
    /// PEM file with the key ring: the RSA private key that signs access
    /// tokens first, then any verification-only keys (public or private).
    #[arg(long, env = "TENANTRY_JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,
    /// The key ring itself, as PEM text (wins over the file).
    #[arg(long, env = "TENANTRY_JWT_PRIVATE_KEY", hide_env_values = true)]
    pub jwt_private_key: Option<Secret>,
    /// PEM files of public keys still accepted for verification (key rotation);
    /// comma-separated in the environment.
    #[arg(long = "jwt-verification-key-file", env = "TENANTRY_JWT_VERIFICATION_KEY_FILES", value_delimiter = ',')]
    pub jwt_verification_key_files: Vec<PathBuf>,
    /// The `iss` claim of issued tokens, and the only one accepted.
    #[arg(long, env = "TENANTRY_JWT_ISSUER", default_value = "tenantry")]
    pub jwt_issuer: String,
    /// The `aud` claim of issued tokens, and the only one accepted.
    #[arg(long, env = "TENANTRY_JWT_AUDIENCE", default_value = "tenantry-api")]
    pub jwt_audience: String,
    /// Lifetime of access tokens.
    #[arg(long, env = "TENANTRY_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,
    /// Lifetime of a login session (its refresh-token family), at most.
    #[arg(long, env = "TENANTRY_REFRESH_TOKEN_TTL", default_value = "30d", value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,
    /// Password hashes computed at once (each takes about 19 MiB).
    #[arg(long, env = "TENANTRY_PASSWORD_HASH_CONCURRENCY", default_value_t = 4)]
    pub password_hash_concurrency: usize,
    /// Login attempts per client address: burst size.
    #[arg(long, env = "TENANTRY_LOGIN_ADDRESS_BURST", default_value_t = 30)]
    pub login_address_burst: u32,
    /// Login attempts per client address: sustained attempts per minute.
    #[arg(long, env = "TENANTRY_LOGIN_ADDRESS_PER_MINUTE", default_value_t = 30)]
    pub login_address_per_minute: u32,
    /// Take the client address from `x-forwarded-for` (only behind a proxy
    /// that sets it; otherwise clients could pick their own address).
    #[arg(long, env = "TENANTRY_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// How often API keys' `last_used_at` is written (batched).
    #[arg(long, env = "TENANTRY_API_KEY_LAST_USED_FLUSH", default_value = "60s", value_parser = parse_duration)]
    pub last_used_flush: Duration,
    /// Sign with a key generated at start when none is configured. For tests
    /// only: tokens die with the process and other nodes cannot verify them.
    #[arg(skip)]
    pub ephemeral_signing_key: bool,
}

impl IdentityConfig {
    /// Checks the settings, naming the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, problem: &str| Err(ConfigError::Invalid { setting, problem: problem.into() });
        if !(Duration::from_secs(30)..=Duration::from_secs(24 * 3600)).contains(&self.access_token_ttl) {
            return invalid("--access-token-ttl", "must be between 30s and 24h");
        }
        if self.refresh_token_ttl < self.access_token_ttl {
            return invalid("--refresh-token-ttl", "must be at least the access-token lifetime");
        }
        if self.password_hash_concurrency == 0 {
            return invalid("--password-hash-concurrency", "must be at least 1");
        }
        if self.login_address_burst == 0 || self.login_address_per_minute == 0 {
            return invalid("--login-address-burst", "login limits must be at least 1");
        }
        if self.jwt_issuer.is_empty() || self.jwt_audience.is_empty() {
            return invalid("--jwt-issuer", "issuer and audience must not be empty");
        }
        if self.last_used_flush < Duration::from_millis(50) {
            return invalid("--api-key-last-used-flush", "must be at least 50ms");
        }
        Ok(())
    }
}

/// What can go wrong in identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity store unavailable")]
    Store(#[from] sqlx::Error),
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    AlreadyExists(&'static str),
    #[error("{message}")]
    Precondition { reason: crate::error::Reason, message: String },
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("too many attempts; retry later")]
    Throttled(Duration),
    #[error("internal: {0}")]
    Internal(String),
}

/// Shorthand for an invalid field.
pub fn invalid(field: &'static str, problem: impl Into<String>) -> IdentityError {
    IdentityError::Invalid { field, problem: problem.into() }
}

impl From<IdentityError> for ApiError {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::Invalid { field, problem } => ApiError::invalid(field, problem),
            IdentityError::NotFound(resource) => ApiError::NotFound { resource: resource.into() },
            IdentityError::AlreadyExists(message) => ApiError::AlreadyExists { message: message.into() },
            IdentityError::Precondition { reason, message } => ApiError::FailedPrecondition { reason, message },
            IdentityError::Denied(message) => {
                ApiError::PermissionDenied { reason: crate::error::Reason::PermissionMissing, message }
            }
            IdentityError::Unauthenticated(message) => {
                ApiError::Unauthenticated { reason: crate::error::Reason::CredentialsInvalid, message: message.into() }
            }
            IdentityError::Throttled(retry_after) => {
                ApiError::exhausted("too many login attempts; retry later", Some(retry_after))
            }
            IdentityError::Store(error) => error.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<IdentityError> for tonic::Status {
    fn from(error: IdentityError) -> Self {
        ApiError::from(error).into()
    }
}
