//! Login throttling, two ways.
//!
//! - Per tenant and email (known or not, so the answer reveals nothing):
//!   durable, in the tenant's `login_attempts`. An attempt is *reserved*
//!   (counted, committed) before the password is evaluated, so at most
//!   [`DAILY_GUESSES`] guesses per account per day are ever evaluated, across
//!   restarts and nodes, concurrency included. After [`FREE_FAILURES`]
//!   consecutive failures the account is locked for a doubling delay (1 s,
//!   2 s, 4 s … at most 15 min); a success clears the counters.
//! - Per client address: an in-memory token bucket per node (burst and
//!   rate are configurable), bounding one address's spraying across accounts.
//!
//! Both answer RESOURCE_EXHAUSTED with RetryInfo.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::IdentityError;

/// Most password guesses evaluated per account per day.
pub const DAILY_GUESSES: i32 = 100;
/// Consecutive failures before the account starts locking.
pub const FREE_FAILURES: i32 = 4;
/// Longest lock after failures.
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);

/// Reserves one login attempt for `email`, or says how long to wait. The
/// row lock serialises concurrent attempts on one account.
pub async fn reserve(conn: &mut PgConnection, email: &str) -> Result<(), IdentityError> {
    sqlx::query("INSERT INTO login_attempts (email, window_start) VALUES ($1, now()) ON CONFLICT DO NOTHING")
        .bind(email)
        .execute(&mut *conn)
        .await?;
    let (window_start, attempts, locked_until, now): (DateTime<Utc>, i32, Option<DateTime<Utc>>, DateTime<Utc>) =
        sqlx::query_as(
            "SELECT window_start, attempts, locked_until, now() FROM login_attempts WHERE email = $1 FOR UPDATE",
        )
        .bind(email)
        .fetch_one(&mut *conn)
        .await?;
    if let Some(until) = locked_until.filter(|until| *until > now) {
        return Err(IdentityError::Throttled(retry_after(until, now)));
    }
    let day = chrono::Duration::days(1);
    let (window_start, attempts) = if window_start + day <= now { (now, 0) } else { (window_start, attempts) };
    if attempts >= DAILY_GUESSES {
        return Err(IdentityError::Throttled(retry_after(window_start + day, now)));
    }
    sqlx::query("UPDATE login_attempts SET window_start = $2, attempts = $3 WHERE email = $1")
        .bind(email)
        .bind(window_start)
        .bind(attempts + 1)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn retry_after(until: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (until - now).to_std().unwrap_or_default().max(Duration::from_secs(1))
}

/// Records a wrong password (or unknown user), locking after repeated ones.
pub async fn record_failure(conn: &mut PgConnection, email: &str) -> Result<(), IdentityError> {
    sqlx::query(
        "UPDATE login_attempts SET failures = failures + 1,
           locked_until = CASE WHEN failures + 1 > $2
             THEN now() + least(make_interval(secs => power(2.0::float8, least(failures - $2, 20)::float8)), $3)
             ELSE locked_until END
         WHERE email = $1",
    )
    .bind(email)
    .bind(FREE_FAILURES)
    .bind(MAX_LOCK)
    .execute(conn)
    .await?;
    Ok(())
}

/// Clears the counters after a successful login.
pub async fn record_success(conn: &mut PgConnection, email: &str) -> Result<(), IdentityError> {
    sqlx::query("DELETE FROM login_attempts WHERE email = $1").bind(email).execute(conn).await?;
    Ok(())
}

/// Forgets day windows that ended long ago (bounded table size).
pub async fn prune(conn: &mut PgConnection) -> Result<(), IdentityError> {
    sqlx::query("DELETE FROM login_attempts WHERE window_start < now() - interval '2 days'").execute(conn).await?;
    Ok(())
}

/// Login attempts per client address, a token bucket per address per node.
#[derive(Clone)]
pub struct AddressLimiter {
    burst: f64,
    per_second: f64,
    buckets: Arc<Mutex<HashMap<IpAddr, (f64, Instant)>>>,
}

impl AddressLimiter {
    /// `burst` attempts at once, refilled at `per_minute`.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        AddressLimiter { burst: f64::from(burst), per_second: f64::from(per_minute) / 60.0, buckets: Arc::default() }
    }

    /// Takes one attempt for `address`, or says how long to wait.
    pub fn check(&self, address: IpAddr) -> Result<(), IdentityError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            let full = self.burst / self.per_second;
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() < full);
        }
        let (tokens, at) = buckets.entry(address).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.per_second;
            Err(IdentityError::Throttled(Duration::from_secs_f64(wait.max(1.0))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_burst_then_waits() {
        let limiter = AddressLimiter::new(3, 60);
        let address: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(limiter.check(address).is_ok());
        }
        assert!(matches!(limiter.check(address), Err(IdentityError::Throttled(_))));
        assert!(limiter.check([10, 0, 0, 2].into()).is_ok());
    }
}
