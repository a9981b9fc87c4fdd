//! Database errors, classified once where they cross into [`ApiError`]
//! (DESIGN §10): what the environment or the client caused gets its own
//! code, and only what is left, a bug in Tenantry, is INTERNAL.
//!
//! | cause | code |
//! |---|---|
//! | pool wait timed out, pool closed, connection refused or lost, server shutting down, too many connections | UNAVAILABLE + RetryInfo |
//! | statement timeout or cancel (57014), lock timeout (55P03): the call's deadline | DEADLINE_EXCEEDED |
//! | data exception (class 22: NUL byte, bad encoding, out of range) | INVALID_ARGUMENT |
//! | unique violation (23505) | ALREADY_EXISTS |
//! | serialization failure (40001), deadlock (40P01), after the caller's retries | ABORTED |
//! | anything else | INTERNAL |
//!
//! The real cause is logged here, once, inside the call's span (so with its
//! request id); the client gets a message without SQL, schema or host names.

use std::time::Duration;

use super::ApiError;

/// How long a client should wait before retrying a call the database could
/// not take: long enough for a restart or a pool to drain, short enough that
/// goodput recovers quickly.
pub const DATABASE_RETRY_AFTER: Duration = Duration::from_millis(500);

/// What kind of failure a database error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFault {
    /// The database cannot take the call now; retrying later may work.
    Unavailable,
    /// The call's deadline ended the statement.
    Deadline,
    /// The request carried data the database refuses (class 22).
    BadData,
    /// A unique constraint refused the write.
    Duplicate,
    /// A concurrent transaction won; the transaction may be retried as a whole.
    Conflict,
    /// A bug: a query, a schema or a decoding that should not fail.
    Bug,
}

/// Classifies `error` by the table in the module docs.
pub fn fault_of(error: &sqlx::Error) -> DatabaseFault {
    use sqlx::Error as E;
    match error {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed | E::BeginFailed => {
            DatabaseFault::Unavailable
        }
        E::Database(db) => match db.code().as_deref() {
            Some("57014" | "55P03") => DatabaseFault::Deadline,
            Some("23505") => DatabaseFault::Duplicate,
            Some("40001" | "40P01") => DatabaseFault::Conflict,
            // admin/crash shutdown, cannot connect now, too many connections,
            // out of resources, connection exceptions, failed authentication
            // (a rotated password), the database dropped or not yet created.
            Some(code)
                if code.starts_with("57P")
                    || code.starts_with("53")
                    || code.starts_with("08")
                    || code.starts_with("28")
                    || code == "3D000" =>
            {
                DatabaseFault::Unavailable
            }
            Some(code) if code.starts_with("22") => DatabaseFault::BadData,
            _ => DatabaseFault::Bug,
        },
        _ => DatabaseFault::Bug,
    }
}

/// Whether the whole transaction may simply be run again.
pub fn is_retryable_conflict(error: &sqlx::Error) -> bool {
    fault_of(error) == DatabaseFault::Conflict
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match fault_of(&error) {
            DatabaseFault::Unavailable => {
                tracing::warn!(cause = %error, "database unavailable");
                ApiError::Unavailable {
                    message: "the database is unavailable; retry with backoff".into(),
                    retry_after: Some(DATABASE_RETRY_AFTER),
                }
            }
            DatabaseFault::Deadline => {
                tracing::info!(cause = %error, "statement stopped at the call's deadline");
                ApiError::DeadlineExceeded
            }
            DatabaseFault::BadData => {
                tracing::info!(cause = %error, "the database refused the request's data");
                let field = match &error {
                    sqlx::Error::Database(db) => db
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .and_then(|pg| pg.column())
                        .map_or_else(|| "request".to_owned(), str::to_owned),
                    _ => "request".to_owned(),
                };
                ApiError::invalid(
                    field,
                    "holds a value the database cannot store (e.g. a NUL byte or an out-of-range number)",
                )
            }
            DatabaseFault::Duplicate => {
                tracing::info!(cause = %error, "unique violation");
                ApiError::AlreadyExists { message: "a resource with these unique values already exists".into() }
            }
            DatabaseFault::Conflict => {
                tracing::warn!(cause = %error, "transaction conflict after retries");
                ApiError::Aborted { message: "a concurrent change conflicted with this call; retry it".into() }
            }
            DatabaseFault::Bug => ApiError::internal(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_connection_trouble_is_unavailable() {
        assert_eq!(fault_of(&sqlx::Error::PoolTimedOut), DatabaseFault::Unavailable);
        assert_eq!(fault_of(&sqlx::Error::PoolClosed), DatabaseFault::Unavailable);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(fault_of(&sqlx::Error::Io(refused)), DatabaseFault::Unavailable);
        let status = tonic::Status::from(ApiError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("pool"), "{}", status.message());
    }

    #[test]
    fn bugs_stay_internal_and_opaque() {
        let error = sqlx::Error::ColumnNotFound("secret_column".into());
        assert_eq!(fault_of(&error), DatabaseFault::Bug);
        let status = tonic::Status::from(ApiError::from(error));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("secret_column"));
    }
}
