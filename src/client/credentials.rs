//! Credentials: how an internal service proves who it is.
//!
//! [`Credentials::api_key`] sends a tenant or platform-admin API key as a
//! bearer token. [`PasswordLogin`] logs a tenant user in on first use,
//! refreshes the access token a margin before it expires (the refresh token
//! rotates on every use), and logs in again when the refresh is refused.
//! Concurrent calls share one refresh.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::{Code, Status, transport::Channel};

use crate::proto::tenantry::v1::{LoginRequest, RefreshTokenRequest, auth_service_client::AuthServiceClient};

/// The credential a [`super::Client`] sends on every call.
#[derive(Clone)]
pub enum Credentials {
    /// A tenant API key or a platform-admin key.
    ApiKey(Arc<str>),
    /// A tenant user's password login, refreshed before expiry.
    Login(Arc<PasswordLogin>),
}

impl Credentials {
    /// An API key credential.
    pub fn api_key(key: impl Into<String>) -> Credentials {
        Credentials::ApiKey(Arc::from(key.into()))
    }

    /// The bearer token to send now; `channel` reaches the server without credentials.
    pub async fn token(&self, channel: &Channel) -> Result<String, Status> {
        match self {
            Credentials::ApiKey(key) => Ok(key.to_string()),
            Credentials::Login(login) => login.token(channel).await,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::ApiKey(_) => f.write_str("ApiKey(<secret>)"),
            Credentials::Login(login) => write!(f, "Login({} in {})", login.request.email, login.request.tenant),
        }
    }
}

/// A tenant user's login with tokens refreshed before they expire.
pub struct PasswordLogin {
    request: LoginRequest,
    margin: Duration,
    // Held across the refresh call so concurrent callers wait for one refresh.
    tokens: tokio::sync::Mutex<Tokens>,
    logins: AtomicU32,
    refreshes: AtomicU32,
}

#[derive(Default)]
struct Tokens {
    access: String,
    refresh: String,
    expires_at: Option<Instant>,
}

impl PasswordLogin {
    /// A login for `email` in `tenant` (id or slug), refreshed 30 s before expiry.
    pub fn new(tenant: impl Into<String>, email: impl Into<String>, password: impl Into<String>) -> PasswordLogin {
        PasswordLogin {
            request: LoginRequest { tenant: tenant.into(), email: email.into(), password: password.into() },
            margin: Duration::from_secs(30),
            tokens: tokio::sync::Mutex::new(Tokens::default()),
            logins: AtomicU32::new(0),
            refreshes: AtomicU32::new(0),
        }
    }

    /// Refresh this long before the access token expires.
    pub fn with_refresh_margin(mut self, margin: Duration) -> PasswordLogin {
        self.margin = margin;
        self
    }

    /// How many logins and refreshes this credential made.
    pub fn counts(&self) -> (u32, u32) {
        (self.logins.load(Ordering::Relaxed), self.refreshes.load(Ordering::Relaxed))
    }

    async fn token(&self, channel: &Channel) -> Result<String, Status> {
        let mut tokens = self.tokens.lock().await;
        if let Some(expires_at) = tokens.expires_at
            && Instant::now() + self.margin < expires_at
        {
            return Ok(tokens.access.clone());
        }
        let mut auth = AuthServiceClient::new(channel.clone());
        if !tokens.refresh.is_empty() {
            let request = RefreshTokenRequest { refresh_token: tokens.refresh.clone() };
            match auth.refresh_token(request).await {
                Ok(response) => {
                    let r = response.into_inner();
                    store(&mut tokens, r.access_token, r.refresh_token, r.expires_in);
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    return Ok(tokens.access.clone());
                }
                // Expired or revoked refresh token: start over with the password.
                Err(status) if status.code() == Code::Unauthenticated => {}
                Err(status) => return Err(status),
            }
        }
        let r = auth.login(self.request.clone()).await?.into_inner();
        store(&mut tokens, r.access_token, r.refresh_token, r.expires_in);
        self.logins.fetch_add(1, Ordering::Relaxed);
        Ok(tokens.access.clone())
    }
}

fn store(tokens: &mut Tokens, access: String, refresh: String, expires_in: i64) {
    tokens.access = access;
    tokens.refresh = refresh;
    tokens.expires_at = Some(Instant::now() + Duration::from_secs(expires_in.max(0) as u64));
}
