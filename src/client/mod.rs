//! The Rust client for internal services (feature `client`): the generated
//! tonic clients over a [`TenantryChannel`] that adds credentials and the
//! tenant, refreshes logins, retries like the other SDKs and keeps the
//! rate-limit state.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tenantry::client::{Client, Credentials, v1::WhoAmIRequest};
//! let client = Client::builder("http://127.0.0.1:50051")
//!     .credentials(Credentials::api_key(std::env::var("TENANTRY_API_KEY")?))
//!     .tenant("acme")
//!     .connect()
//!     .await?;
//! let me = client.auth().who_am_i(WhoAmIRequest {}).await?.into_inner();
//! # Ok(()) }
//! ```
//!
//! Failed calls are `tonic::Status`; read the rich details with
//! [`StatusExt`] (`get_details_bad_request`, `get_details_error_info`,
//! `get_details_retry_info`, `get_details_quota_failure`).
//!
//! # Layout
//!
//! - [`credentials`]: API keys and password logins with refresh.
//! - [`retry`]: the retry policy and every method's idempotency.
//! - [`channel`]: the tower service under the generated clients.

pub mod channel;
pub mod credentials;
pub mod retry;

use std::sync::{Arc, Mutex};

use http::HeaderValue;
pub use tonic_types::StatusExt;

pub use self::{
    channel::{RateLimit, TenantryChannel},
    credentials::{Credentials, PasswordLogin},
    retry::{Idempotency, RetryPolicy},
};
use crate::proto::tenantry::v1::{
    auth_service_client::AuthServiceClient, jobs_service_client::JobsServiceClient,
    scaling_service_client::ScalingServiceClient, tenant_service_client::TenantServiceClient,
    usage_service_client::UsageServiceClient,
};

/// The generated messages and clients of `tenantry.v1`.
pub use crate::proto::tenantry::v1;

/// A connected Tenantry client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    channel: TenantryChannel,
}

/// Settings for a [`Client`].
pub struct ClientBuilder {
    endpoint: String,
    credentials: Option<Credentials>,
    tenant: Option<String>,
    retry: RetryPolicy,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the endpoint is not a valid URI: {0}")]
    Endpoint(#[source] tonic::transport::Error),
    #[error("cannot connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("the tenant is not a valid header value")]
    Tenant,
}

impl Client {
    /// Settings for a client of `endpoint` (`http://host:50051`).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder { endpoint: endpoint.into(), credentials: None, tenant: None, retry: RetryPolicy::default() }
    }

    /// The same connection and credentials, acting in another tenant.
    pub fn with_tenant(&self, tenant: &str) -> Result<Client, ClientError> {
        let shared = &self.channel.shared;
        let tenant = HeaderValue::try_from(tenant).map_err(|_| ClientError::Tenant)?;
        Ok(Client {
            channel: TenantryChannel {
                shared: Arc::new(channel::Shared {
                    raw: shared.raw.clone(),
                    credentials: shared.credentials.clone(),
                    tenant: Some(tenant),
                    retry: shared.retry.clone(),
                    rate_limit: Mutex::new(None),
                }),
            },
        })
    }

    /// The last rate-limit state the server reported.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.channel.rate_limit()
    }

    /// The channel, for clients of other services on the same connection.
    pub fn channel(&self) -> TenantryChannel {
        self.channel.clone()
    }

    /// AuthService.
    pub fn auth(&self) -> AuthServiceClient<TenantryChannel> {
        AuthServiceClient::new(self.channel())
    }

    /// TenantService.
    pub fn tenants(&self) -> TenantServiceClient<TenantryChannel> {
        TenantServiceClient::new(self.channel())
    }

    /// UsageService.
    pub fn usage(&self) -> UsageServiceClient<TenantryChannel> {
        UsageServiceClient::new(self.channel())
    }

    /// JobsService.
    pub fn jobs(&self) -> JobsServiceClient<TenantryChannel> {
        JobsServiceClient::new(self.channel())
    }

    /// ScalingService.
    pub fn scaling(&self) -> ScalingServiceClient<TenantryChannel> {
        ScalingServiceClient::new(self.channel())
    }
}

impl ClientBuilder {
    /// The credential sent on every call.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The tenant calls act in (`x-tenant-id`, id or slug), for platform admins.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// The retry policy ([`RetryPolicy::none`] turns retries off).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Connects now.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let endpoint =
            tonic::transport::Endpoint::from_shared(self.endpoint).map_err(ClientError::Endpoint)?.tcp_nodelay(true);
        let raw = endpoint.connect().await.map_err(ClientError::Connect)?;
        let tenant = self.tenant.map(HeaderValue::try_from).transpose().map_err(|_| ClientError::Tenant)?;
        Ok(Client {
            channel: TenantryChannel {
                shared: Arc::new(channel::Shared {
                    raw,
                    credentials: self.credentials,
                    tenant,
                    retry: self.retry,
                    rate_limit: Mutex::new(None),
                }),
            },
        })
    }
}
