//! Users in the tenant's schema. Emails are stored lower-cased and unique
//! among live users; a deleted user keeps its row (so audit references
//! resolve) with `deleted_at` set, and is gone for the API. Every function
//! takes the tenant's connection ([`crate::tenancy::TenantTx`]) first.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{IdentityError, invalid, roles};
use crate::{ids, pagination::Cursor};

/// Whether a user may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    Active,
    Disabled,
}

impl UserState {
    fn from_db(text: &str) -> UserState {
        if text == "active" { UserState::Active } else { UserState::Disabled }
    }

    /// The stored form.
    pub fn as_db(self) -> &'static str {
        match self {
            UserState::Active => "active",
            UserState::Disabled => "disabled",
        }
    }
}

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub state: UserState,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    email: String,
    display_name: String,
    state: String,
    roles: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: row.id,
            email: row.email,
            display_name: row.display_name,
            state: UserState::from_db(&row.state),
            roles: row.roles,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_login_at: row.last_login_at,
        }
    }
}

const SELECT: &str = "SELECT u.id, u.email, u.display_name, u.state, u.created_at, u.updated_at, u.last_login_at,
       coalesce(array(SELECT r.role_id FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role_id), '{}') AS roles
  FROM users u";

/// A checked, lower-cased email address.
pub fn parse_email(field: &'static str, text: &str) -> Result<String, IdentityError> {
    let email = text.trim().to_lowercase();
    let valid = (3..=254).contains(&email.len())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if valid { Ok(email) } else { Err(invalid(field, "must be an email address")) }
}

/// A checked display name: at most 200 characters, no control characters.
pub fn parse_display_name(field: &'static str, text: &str) -> Result<String, IdentityError> {
    let name = text.trim();
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(invalid(field, "must be at most 200 characters without control characters"));
    }
    Ok(name.to_owned())
}

fn email_taken(error: sqlx::Error) -> IdentityError {
    match &error {
        sqlx::Error::Database(db) if db.constraint() == Some("users_live_email") => {
            IdentityError::AlreadyExists("a user with this email exists in the tenant")
        }
        _ => error.into(),
    }
}

/// Creates an active user holding `role_ids` (already checked to exist).
pub async fn create(
    conn: &mut PgConnection,
    email: &str,
    display_name: &str,
    password_hash: &str,
    role_ids: &[String],
) -> Result<User, IdentityError> {
    let id = ids::new_id("usr");
    sqlx::query("INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(email)
        .bind(display_name)
        .bind(password_hash)
        .execute(&mut *conn)
        .await
        .map_err(email_taken)?;
    for role in role_ids {
        sqlx::query("INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&id)
            .bind(role)
            .execute(&mut *conn)
            .await?;
    }
    get(conn, &id).await?.ok_or(IdentityError::NotFound("user"))
}

/// A live user by id.
pub async fn get(conn: &mut PgConnection, id: &str) -> Result<Option<User>, IdentityError> {
    if !ids::is_id("usr", id) {
        return Ok(None);
    }
    let row: Option<UserRow> = sqlx::query_as(&format!("{SELECT} WHERE u.id = $1 AND u.deleted_at IS NULL"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(User::from))
}

/// A live user by email, with the password hash, for login.
pub async fn find_for_login(conn: &mut PgConnection, email: &str) -> Result<Option<(User, String)>, IdentityError> {
    let row: Option<UserRow> = sqlx::query_as(&format!("{SELECT} WHERE u.email = $1 AND u.deleted_at IS NULL"))
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(user) = row.map(User::from) else { return Ok(None) };
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(&user.id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Some((user, hash)))
}

/// The password hash of a live user.
pub async fn password_hash(conn: &mut PgConnection, id: &str) -> Result<Option<String>, IdentityError> {
    Ok(sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

/// Filters of [`list`].
#[derive(Debug, Default)]
pub struct ListFilter {
    pub state: Option<UserState>,
    pub email: Option<String>,
    pub role_id: Option<String>,
}

/// The order of [`list`], newest first.
pub const LIST_ORDER: &str = "created_at desc, id desc";

/// One page of live users, newest first, after `after` (a backward scan of
/// `users_created (created_at, id)`); fetches one extra row for paging.
pub async fn list(
    conn: &mut PgConnection,
    filter: &ListFilter,
    size: i64,
    after: Option<Cursor>,
) -> Result<Vec<User>, IdentityError> {
    let rows: Vec<UserRow> = sqlx::query_as(&format!(
        "{SELECT} WHERE u.deleted_at IS NULL
            AND ($1::text IS NULL OR u.state = $1)
            AND ($2::text IS NULL OR u.email = $2)
            AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = u.id AND r.role_id = $3))
            AND ($4::timestamptz IS NULL OR (u.created_at, u.id) < ($4, $5))
          ORDER BY u.created_at DESC, u.id DESC LIMIT $6"
    ))
    .bind(filter.state.map(UserState::as_db))
    .bind(&filter.email)
    .bind(&filter.role_id)
    .bind(after.as_ref().map(|c| c.created_at))
    .bind(after.as_ref().map(|c| c.id.clone()))
    .bind(size + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(User::from).collect())
}

/// Changes a live user; `None` leaves a field as it is.
pub async fn update(
    conn: &mut PgConnection,
    id: &str,
    email: Option<&str>,
    display_name: Option<&str>,
    state: Option<UserState>,
) -> Result<User, IdentityError> {
    let updated = sqlx::query(
        "UPDATE users SET email = coalesce($2, email), display_name = coalesce($3, display_name),
                state = coalesce($4, state), updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(email)
    .bind(display_name)
    .bind(state.map(UserState::as_db))
    .execute(&mut *conn)
    .await
    .map_err(email_taken)?;
    if updated.rows_affected() == 0 {
        return Err(IdentityError::NotFound("user"));
    }
    get(conn, id).await?.ok_or(IdentityError::NotFound("user"))
}

/// Marks a live user deleted (and disabled); whether it was live.
pub async fn delete(conn: &mut PgConnection, id: &str) -> Result<bool, IdentityError> {
    let deleted = sqlx::query(
        "UPDATE users SET deleted_at = now(), state = 'disabled', updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1").bind(id).execute(&mut *conn).await?;
    Ok(deleted.rows_affected() > 0)
}

/// Replaces a live user's password hash.
pub async fn set_password(conn: &mut PgConnection, id: &str, hash: &str) -> Result<(), IdentityError> {
    let updated =
        sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .bind(hash)
            .execute(&mut *conn)
            .await?;
    if updated.rows_affected() == 0 {
        return Err(IdentityError::NotFound("user"));
    }
    Ok(())
}

/// Records a successful login.
pub async fn touch_login(conn: &mut PgConnection, id: &str) -> Result<(), IdentityError> {
    sqlx::query("UPDATE users SET last_login_at = now() WHERE id = $1").bind(id).execute(&mut *conn).await?;
    Ok(())
}

/// Binds a role; idempotent.
pub async fn assign(conn: &mut PgConnection, user_id: &str, role_id: &str) -> Result<(), IdentityError> {
    sqlx::query("INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(user_id)
        .bind(role_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Removes a role binding; idempotent.
pub async fn unassign(conn: &mut PgConnection, user_id: &str, role_id: &str) -> Result<(), IdentityError> {
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role_id = $2")
        .bind(user_id)
        .bind(role_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Active, live owners of the tenant, locking their bindings so two calls
/// cannot each remove a different last owner.
pub async fn lock_owners(conn: &mut PgConnection) -> Result<Vec<String>, IdentityError> {
    Ok(sqlx::query_scalar(
        "SELECT u.id FROM users u JOIN user_roles r ON r.user_id = u.id AND r.role_id = $1
          WHERE u.deleted_at IS NULL AND u.state = 'active' ORDER BY u.id FOR UPDATE OF u",
    )
    .bind(roles::OWNER)
    .fetch_all(&mut *conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(parse_email("email", " Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in ["", "ada", "@x", "ada@", "a b@x", "a@b@c"] {
            assert!(parse_email("email", bad).is_err(), "{bad}");
        }
    }
}
