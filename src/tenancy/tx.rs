//! The one door to tenant data: a transaction whose `search_path` is the
//! tenant's schema, set with `SET LOCAL` semantics (`set_config(.., true)`),
//! so it ends with the transaction and can never leak to the next borrower
//! of a pooled connection (nor through PgBouncer in transaction mode).
//! The call's deadline becomes the transaction's `statement_timeout`.
//!
//! **Round trips.** `BEGIN` and the scoping go in one simple-query message
//! (one round trip), so a read costs two: that one and its statement. A
//! read ends with [`TenantTx::end_read`]: nothing was written, so a rollback
//! is as good as a commit, and sqlx sends it when the connection goes back
//! to the pool, off the call's path. Writes [`commit`](TenantTx::commit).
//! All of it works behind a transaction-mode pooler: nothing outlives the
//! transaction and the scoping statement is not a prepared one.
//!
//! Each transaction is a `db.transaction` span (exported only), the parent of
//! its statements' spans (`telemetry::statements`).

use std::{
    ops::{Deref, DerefMut},
    time::{Duration, Instant},
};

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tracing::Instrument;

use super::TenantId;

/// A call waits at most this for a connection of a full pool (or until its
/// deadline), then gets UNAVAILABLE with a retry hint. Admission control
/// keeps the calls that need a connection near what the pool serves, so a
/// longer wait would only add latency under overload. The pool's own
/// `--db-acquire-timeout` is longer: opening a connection may take longer
/// than waiting for a free one.
pub const CONNECTION_WAIT: Duration = Duration::from_millis(500);

/// A transaction scoped to one tenant's schema.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    /// Open until the commit or the rollback (the drop) ends.
    span: tracing::Span,
}

/// The transaction's span; the name is what `telemetry::statements` looks for.
fn transaction_span() -> tracing::Span {
    crate::telemetry::child_span!(
        "db.transaction",
        otel.kind = "client",
        db.system = "postgresql",
        db.operation.name = "transaction",
        otel.status_code = tracing::field::Empty,
    )
}

impl TenantTx {
    /// Begins a transaction in `tenant`'s schema; statements are cancelled
    /// once `deadline` passes.
    pub async fn begin(pool: &PgPool, tenant: &TenantId, deadline: Instant) -> Result<TenantTx, sqlx::Error> {
        let span = transaction_span();
        let mut remaining = deadline.saturating_duration_since(Instant::now());
        // A full pool means waiting in line: bounded. Otherwise the pool opens
        // a connection, which its own timeout bounds.
        if pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0 {
            remaining = remaining.min(CONNECTION_WAIT);
        }
        let connection =
            tokio::time::timeout(remaining, pool.acquire()).await.map_err(|_| sqlx::Error::PoolTimedOut)??;
        // Both values are made here, not given: the schema name derives from
        // a checked id (`t_ten_[0-9a-z]{24}`) and the timeout is a number.
        let statement = format!(
            "BEGIN; SELECT set_config('search_path', '\"{}\"', true), set_config('statement_timeout', '{}ms', true)",
            tenant.schema(),
            timeout_ms(deadline)
        );
        // sqlx reports no statement event for BEGIN: its span is made here.
        let begin = crate::telemetry::child_span!(
            parent: &span,
            "BEGIN",
            otel.kind = "client",
            db.system = "postgresql",
            db.operation.name = "BEGIN",
        );
        let tx = crate::db::begin_on(connection, Some(statement)).instrument(begin).await?;
        Ok(TenantTx { tx, tenant: tenant.clone(), span })
    }

    /// Scopes an already open transaction (provisioning, which creates the
    /// schema in the same transaction).
    pub async fn scope_existing(
        mut tx: Transaction<'static, Postgres>,
        tenant: &TenantId,
        deadline: Instant,
    ) -> Result<TenantTx, sqlx::Error> {
        let span = transaction_span();
        scope(&mut tx, tenant, deadline).await?;
        Ok(TenantTx { tx, tenant: tenant.clone(), span })
    }

    /// The tenant this transaction is scoped to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Commits; dropping without commit rolls back.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let TenantTx { tx, span, .. } = self;
        let committed = tx.commit().await;
        if committed.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        committed
    }

    /// Ends a transaction that only read: its rollback is sent when the
    /// connection returns to the pool, without a round trip on this call.
    pub fn end_read(self) {
        drop(self);
    }
}

async fn scope(conn: &mut PgConnection, tenant: &TenantId, deadline: Instant) -> Result<(), sqlx::Error> {
    // The schema name derives from a checked id (`t_ten_[0-9a-z]{24}`) and is
    // quoted; it is a value of set_config, never spliced into SQL text.
    let search_path = format!("\"{}\"", tenant.schema());
    let timeout_ms = timeout_ms(deadline);
    // Unnamed (non-persistent): the scoping statement works even through a
    // transaction-mode pooler that cannot keep prepared statements.
    sqlx::query("SELECT set_config('search_path', $1, true), set_config('statement_timeout', $2, true)")
        .persistent(false)
        .bind(search_path)
        .bind(format!("{timeout_ms}ms"))
        .execute(conn)
        .await?;
    Ok(())
}

/// The time left until `deadline`, as `statement_timeout` wants it (0 would
/// mean no timeout).
fn timeout_ms(deadline: Instant) -> u128 {
    deadline.saturating_duration_since(Instant::now()).as_millis().max(1)
}

impl Deref for TenantTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}
