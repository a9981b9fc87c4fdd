//! Passwords: the policy (12 to 256 characters) and argon2id hashing with
//! the OWASP parameters (m = 19456 KiB, t = 2, p = 1).
//!
//! Each hash costs about 19 MiB and tens of milliseconds of CPU, so hashing
//! runs on the blocking pool, never on the async executor, and a semaphore
//! bounds how many run at once: a burst of logins queues instead of
//! exhausting memory. Each hash or verification is an `argon2id` child
//! span of the call (exported only), from its permit to its end.

use std::sync::{Arc, OnceLock};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

use super::{IdentityError, invalid};

/// Shortest accepted password, in characters.
pub const MIN_LENGTH: usize = 12;
/// Longest accepted password, in characters.
pub const MAX_LENGTH: usize = 256;

/// Checks a new password against the policy.
pub fn check_policy(field: &'static str, password: &str) -> Result<(), IdentityError> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(invalid(field, format!("must be at least {MIN_LENGTH} characters")));
    }
    if length > MAX_LENGTH {
        return Err(invalid(field, format!("must be at most {MAX_LENGTH} characters")));
    }
    if password.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(19_456, 2, 1, None).expect("OWASP argon2id parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes and verifies passwords off the executor, a bounded number at once.
#[derive(Clone)]
pub struct PasswordHasherPool {
    permits: Arc<Semaphore>,
    dummy: Arc<OnceLock<String>>,
}

impl PasswordHasherPool {
    /// A pool running at most `concurrency` hashes at once.
    pub fn new(concurrency: usize) -> Self {
        PasswordHasherPool { permits: Arc::new(Semaphore::new(concurrency)), dummy: Arc::default() }
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String, IdentityError> {
        let password = password.to_owned();
        self.run("argon2id.hash", move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
        })
        .await
    }

    /// Whether `password` matches the PHC string `stored`. With `None` a
    /// fixed hash is checked instead, so an unknown user costs the same time
    /// as a known one.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, IdentityError> {
        let known = stored.is_some();
        let stored = match stored {
            Some(stored) => stored.to_owned(),
            None => self.dummy_hash().await?,
        };
        let password = password.to_owned();
        let matches = self
            .run("argon2id.verify", move || {
                let parsed = PasswordHash::new(&stored).map_err(|e| e.to_string())?;
                Ok(argon2().verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn dummy_hash(&self) -> Result<String, IdentityError> {
        if let Some(hash) = self.dummy.get() {
            return Ok(hash.clone());
        }
        let hash = self.hash(&crate::ids::random_token(32)).await?;
        Ok(self.dummy.get_or_init(|| hash).clone())
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, IdentityError> {
        let _permit = self.permits.acquire().await.map_err(|e| IdentityError::Internal(e.to_string()))?;
        let span = crate::telemetry::child_span!("argon2id", otel.name = operation);
        tracing::Instrument::instrument(tokio::task::spawn_blocking(work), span)
            .await
            .map_err(|e| IdentityError::Internal(e.to_string()))?
            .map_err(IdentityError::Internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_bounds_length_in_characters() {
        assert!(check_policy("password", "short").is_err());
        assert!(check_policy("password", "twelve chars").is_ok());
        assert!(check_policy("password", &"é".repeat(256)).is_ok());
        assert!(check_policy("password", &"x".repeat(257)).is_err());
        assert!(check_policy("password", "tab\tinside password").is_err());
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let pool = PasswordHasherPool::new(2);
        let hash = pool.hash("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(pool.verify("correct horse battery", Some(&hash)).await.unwrap());
        assert!(!pool.verify("wrong horse battery", Some(&hash)).await.unwrap());
        assert!(!pool.verify("correct horse battery", None).await.unwrap());
    }
}
