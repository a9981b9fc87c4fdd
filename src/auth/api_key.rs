//! API keys: `tnty_<public id>_<secret>`.
//!
//! The public id (16 alphanumerics) finds the key's row; the secret (43
//! alphanumerics, > 256 bits) is shown once and stored only as its SHA-256.
//! A fast hash is right here: the secret is random, not a password, so there
//! is nothing to brute-force. Hashes are compared in constant time.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::{AuthError, Principal};
use crate::ids;

/// The first part of every Tenantry API key, so scanners can spot leaks.
pub const KEY_PREFIX: &str = "tnty";
const PUBLIC_ID_LEN: usize = 16;
const SECRET_LEN: usize = 43;

/// A key's parts, as parsed from the presented string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// Finds the key's row; not secret.
    pub public_id: &'a str,
    /// Proves possession; compared by hash.
    pub secret: &'a str,
}

/// Whether a bearer token is shaped like an API key rather than a JWT.
pub fn looks_like_api_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX) && token.as_bytes().get(KEY_PREFIX.len()) == Some(&b'_')
}

/// Splits a key into its parts, checking every length and character.
pub fn parse(key: &str) -> Result<ParsedKey<'_>, AuthError> {
    let malformed = AuthError::Malformed("API keys look like tnty_<16 characters>_<43 characters>");
    let mut parts = key.split('_');
    let (Some(KEY_PREFIX), Some(public_id), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    let alnum = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !alnum(public_id, PUBLIC_ID_LEN) || !alnum(secret, SECRET_LEN) {
        return Err(malformed);
    }
    Ok(ParsedKey { public_id, secret })
}

/// A freshly generated key: the full string to show once, and what to store.
pub struct NewKey {
    /// `tnty_<public id>_<secret>`; never stored.
    pub full: String,
    /// The row's lookup id.
    pub public_id: String,
    /// SHA-256 of the secret.
    pub secret_hash: Vec<u8>,
}

/// Generates a key from the CSPRNG.
pub fn generate() -> NewKey {
    let public_id = ids::random_token(PUBLIC_ID_LEN);
    let secret = ids::random_token(SECRET_LEN);
    NewKey { full: format!("{KEY_PREFIX}_{public_id}_{secret}"), secret_hash: hash_secret(&secret), public_id }
}

/// SHA-256 of a key's secret.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Whether `secret` hashes to `stored`, in constant time.
pub fn secret_matches(secret: &str, stored: &[u8]) -> bool {
    hash_secret(secret).ct_eq(stored).into()
}

/// Platform-admin API keys, stored in `platform.admin_api_keys`.
#[derive(Debug, Clone)]
pub struct AdminKeys {
    pool: PgPool,
}

/// An unrevoked platform-admin key, as verification needs it (and as the
/// identity cache keeps it; a trigger announces revocations).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminKey {
    pub id: String,
    pub public_id: String,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl AdminKey {
    /// The principal of `secret` presented for `key` (a public id that
    /// matched no row is `None`): the hash is compared even then, so timing
    /// does not reveal which public ids exist; expiry is checked on every use.
    pub fn verify(key: Option<&AdminKey>, secret: &str) -> Result<Principal, AuthError> {
        let stored = key.map_or(&[0u8; 32][..], |k| &k.secret_hash);
        let matches = secret_matches(secret, stored);
        match key {
            Some(key) if matches && key.expires_at.is_none_or(|at| at > Utc::now()) => {
                Ok(Principal::PlatformAdmin { key_id: key.id.clone(), name: key.name.clone() })
            }
            _ => Err(AuthError::InvalidApiKey),
        }
    }
}

impl AdminKeys {
    /// The store over a pool.
    pub fn new(pool: PgPool) -> Self {
        AdminKeys { pool }
    }

    /// Creates a platform-admin key and returns `(key id, full key)`; the full
    /// key exists only in the return value.
    pub async fn create(&self, name: &str) -> Result<(String, String), sqlx::Error> {
        let key = generate();
        let id = ids::new_id("key");
        sqlx::query("INSERT INTO platform.admin_api_keys (id, public_id, secret_hash, name) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(&key.public_id)
            .bind(&key.secret_hash)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok((id, key.full))
    }

    /// The principal of a presented platform-admin key, read from the
    /// database (the server's hot path goes through the identity cache).
    pub async fn authenticate(&self, key: &str) -> Result<Principal, AuthError> {
        let parsed = parse(key)?;
        AdminKey::verify(self.load(parsed.public_id).await?.as_ref(), parsed.secret)
    }

    /// The unrevoked key with this public id, if any.
    pub async fn load(&self, public_id: &str) -> Result<Option<AdminKey>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, public_id, name, secret_hash, expires_at FROM platform.admin_api_keys
             WHERE public_id = $1 AND revoked_at IS NULL",
        )
        .bind(public_id)
        .fetch_optional(&self.pool)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let key = generate();
        let parsed = parse(&key.full).unwrap();
        assert_eq!(parsed.public_id, key.public_id);
        assert!(secret_matches(parsed.secret, &key.secret_hash));
        assert!(!secret_matches("x", &key.secret_hash));
        assert!(looks_like_api_key(&key.full));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "tnty",
            "tnty_",
            "tnty_short_short",
            "tnty_abcdefghijklmnop_tooshort",
            "xxxx_abcdefghijklmnop_0123456789012345678901234567890123456789012",
            "tnty_abcdefghijklmnop_0123456789012345678901234567890123456789012_extra",
            "tnty_abcdefghijklmno!_0123456789012345678901234567890123456789012",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
