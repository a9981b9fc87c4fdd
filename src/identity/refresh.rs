//! Refresh tokens: opaque, `rt.<tenant id>.<43 random alphanumerics>`
//! (over 256 bits of entropy), stored only as SHA-256, grouped in families
//! (one per login). Every refresh marks the token used and issues its
//! successor in the same family; presenting a used token again is a replay:
//! the whole family is revoked (OAuth 2.0 Security BCP). Marking used is one
//! conditional UPDATE, so of many concurrent refreshes with one token exactly
//! one wins; the others see a used token and revoke the family.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::IdentityError;
use crate::{ids, tenancy::TenantId};

const PREFIX: &str = "rt";
const SECRET_LEN: usize = 43;

/// The tenant a refresh token belongs to, if it is shaped like one.
pub fn tenant_of(token: &str) -> Option<TenantId> {
    let mut parts = token.split('.');
    let (Some(PREFIX), Some(tenant), Some(secret), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let secret_ok = secret.len() == SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    secret_ok.then(|| TenantId::parse(tenant)).flatten()
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A refresh token just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub family_id: String,
    pub expires_at: DateTime<Utc>,
}

async fn insert_token(conn: &mut PgConnection, tenant: &TenantId, family_id: &str) -> Result<String, IdentityError> {
    let token = format!("{PREFIX}.{}.{}", tenant.as_str(), ids::random_token(SECRET_LEN));
    sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id) VALUES ($1, $2)")
        .bind(hash(&token))
        .bind(family_id)
        .execute(&mut *conn)
        .await?;
    Ok(token)
}

/// Starts a family (a login session) for `user_id` and issues its first token.
pub async fn start_family(
    conn: &mut PgConnection,
    tenant: &TenantId,
    user_id: &str,
    ttl: Duration,
) -> Result<Issued, IdentityError> {
    let family_id = ids::new_id("ses");
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO refresh_families (id, user_id, expires_at) VALUES ($1, $2, now() + $3) RETURNING expires_at",
    )
    .bind(&family_id)
    .bind(user_id)
    .bind(ttl)
    .fetch_one(&mut *conn)
    .await?;
    let token = insert_token(conn, tenant, &family_id).await?;
    Ok(Issued { token, family_id, expires_at })
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Rotation {
    /// The token was live: here is its successor.
    Rotated { user_id: String, issued: Issued },
    /// The token had been used already: its family is now revoked.
    Replayed { user_id: String, family_id: String },
    /// Unknown, expired or revoked.
    Invalid,
}

/// Consumes `token` and issues its successor, or detects a replay.
pub async fn rotate(conn: &mut PgConnection, tenant: &TenantId, token: &str) -> Result<Rotation, IdentityError> {
    let token_hash = hash(token);
    /// The consumed token's family: id, user, end, revocation.
    type Won = (String, String, DateTime<Utc>, Option<DateTime<Utc>>);
    let won: Option<Won> = sqlx::query_as(
        "UPDATE refresh_tokens t SET used_at = now() FROM refresh_families f
          WHERE t.token_hash = $1 AND t.used_at IS NULL AND f.id = t.family_id
         RETURNING f.id, f.user_id, f.expires_at, f.revoked_at",
    )
    .bind(&token_hash)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((family_id, user_id, expires_at, revoked_at)) = won {
        if revoked_at.is_some() || expires_at <= Utc::now() {
            return Ok(Rotation::Invalid);
        }
        let token = insert_token(conn, tenant, &family_id).await?;
        return Ok(Rotation::Rotated { user_id, issued: Issued { token, family_id, expires_at } });
    }
    let used: Option<(String, String)> = sqlx::query_as(
        "SELECT f.id, f.user_id FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
          WHERE t.token_hash = $1",
    )
    .bind(&token_hash)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((family_id, user_id)) = used else { return Ok(Rotation::Invalid) };
    // Only the call that actually revokes reports the replay, so a burst of
    // replays leaves one audit event, not a hundred.
    if revoke_family(conn, &family_id, "reuse").await? {
        Ok(Rotation::Replayed { user_id, family_id })
    } else {
        Ok(Rotation::Invalid)
    }
}

/// Revokes a family; whether it was live.
pub async fn revoke_family(conn: &mut PgConnection, family_id: &str, reason: &str) -> Result<bool, IdentityError> {
    let revoked = sqlx::query(
        "UPDATE refresh_families SET revoked_at = now(), revoke_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(revoked.rows_affected() > 0)
}

/// The family and user of a token, used or not (for logout).
pub async fn family_of(conn: &mut PgConnection, token: &str) -> Result<Option<(String, String)>, IdentityError> {
    Ok(sqlx::query_as(
        "SELECT f.id, f.user_id FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
          WHERE t.token_hash = $1",
    )
    .bind(hash(token))
    .fetch_optional(&mut *conn)
    .await?)
}

/// Revokes every live family of a user except `keep`; how many.
pub async fn revoke_user_families(
    conn: &mut PgConnection,
    user_id: &str,
    keep: Option<&str>,
    reason: &str,
) -> Result<u64, IdentityError> {
    let revoked = sqlx::query(
        "UPDATE refresh_families SET revoked_at = now(), revoke_reason = $3
          WHERE user_id = $1 AND revoked_at IS NULL AND ($2::text IS NULL OR id <> $2)",
    )
    .bind(user_id)
    .bind(keep)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(revoked.rows_affected())
}

/// Whether a session (family) is live; access tokens carry it as `sid`.
pub async fn family_is_live(conn: &mut PgConnection, family_id: &str) -> Result<bool, IdentityError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM refresh_families WHERE id = $1 AND revoked_at IS NULL AND expires_at > now())",
    )
    .bind(family_id)
    .fetch_one(&mut *conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_name_a_tenant() {
        let tenant = TenantId::generate();
        let token = format!("rt.{}.{}", tenant.as_str(), ids::random_token(SECRET_LEN));
        assert_eq!(tenant_of(&token), Some(tenant.clone()));
        for bad in [
            "",
            "rt",
            &format!("rt.{}.short", tenant.as_str()),
            &format!("xx.{}.{}", tenant.as_str(), ids::random_token(SECRET_LEN)),
            &format!("rt.acme.{}", ids::random_token(SECRET_LEN)),
        ] {
            assert_eq!(tenant_of(bad), None, "{bad}");
        }
    }
}
