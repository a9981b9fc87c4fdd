//! The tenant's audit log (`audit_events`, in the tenant schema): who did
//! what to which object, with what outcome, from which address, in which
//! request. Events are written in the same transaction as the change they
//! describe, so the log never claims a change that rolled back (failed
//! logins and replays commit on their own). Details never hold secrets.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::IdentityError;
use crate::{ids, pagination::Cursor};

/// The outcome of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    fn as_db(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// Who acted, from where, in which call.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// `user`, `api_key`, `platform_admin` or `system`.
    pub kind: &'static str,
    pub id: String,
    pub display_name: String,
    pub client_address: String,
    pub request_id: String,
}

/// One event to write.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub event_type: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    pub outcome: Outcome,
    pub details: serde_json::Value,
}

impl<'a> Event<'a> {
    /// A successful action on a target.
    pub fn success(event_type: &'a str, target_type: &'a str, target_id: &'a str) -> Self {
        Event { event_type, target_type, target_id, outcome: Outcome::Success, details: serde_json::json!({}) }
    }

    /// The same event with details.
    pub fn with(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// The same event with another outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
}

/// Writes an event in the tenant's connection.
pub async fn record(conn: &mut PgConnection, actor: &Actor, event: Event<'_>) -> Result<(), IdentityError> {
    sqlx::query(
        "INSERT INTO audit_events (id, event_type, actor_kind, actor_id, target_type, target_id, outcome,
                                   client_address, request_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(ids::new_id("aev"))
    .bind(event.event_type)
    .bind(actor.kind)
    .bind(&actor.id)
    .bind(event.target_type)
    .bind(event.target_id)
    .bind(event.outcome.as_db())
    .bind(&actor.client_address)
    .bind(&actor.request_id)
    .bind(sqlx::types::Json(&event.details))
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: String,
    pub event_type: String,
    pub actor_kind: String,
    pub actor_id: String,
    pub target_type: String,
    pub target_id: String,
    pub outcome: String,
    pub client_address: String,
    pub request_id: String,
    pub details: sqlx::types::Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// Filters of [`list`].
#[derive(Debug, Default)]
pub struct ListFilter {
    /// An exact type, or a prefix when it ends with `.`.
    pub event_type: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub actor_id: Option<String>,
    pub target_id: Option<String>,
}

/// The order of [`list`], newest first.
pub const LIST_ORDER: &str = "created_at desc, id desc";

/// One page of events, newest first; fetches one extra row for paging.
pub async fn list(
    conn: &mut PgConnection,
    filter: &ListFilter,
    size: i64,
    before: Option<Cursor>,
) -> Result<Vec<StoredEvent>, IdentityError> {
    let (exact, prefix) = match &filter.event_type {
        Some(t) if t.ends_with('.') => {
            (None, Some(format!("{}%", t.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))))
        }
        Some(t) => (Some(t.clone()), None),
        None => (None, None),
    };
    Ok(sqlx::query_as(
        "SELECT id, event_type, actor_kind, actor_id, target_type, target_id, outcome, client_address,
                request_id, details, created_at
           FROM audit_events
          WHERE ($1::text IS NULL OR event_type = $1)
            AND ($2::text IS NULL OR event_type LIKE $2)
            AND ($3::timestamptz IS NULL OR created_at >= $3)
            AND ($4::timestamptz IS NULL OR created_at < $4)
            AND ($5::text IS NULL OR actor_id = $5)
            AND ($6::text IS NULL OR target_id = $6)
            AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8))
          ORDER BY created_at DESC, id DESC LIMIT $9",
    )
    .bind(exact)
    .bind(prefix)
    .bind(filter.start)
    .bind(filter.end)
    .bind(&filter.actor_id)
    .bind(&filter.target_id)
    .bind(before.as_ref().map(|c| c.created_at))
    .bind(before.as_ref().map(|c| c.id.clone()))
    .bind(size + 1)
    .fetch_all(conn)
    .await?)
}

/// A JSON value as a protobuf `Struct` (objects only; others are wrapped).
pub fn to_struct(value: &serde_json::Value) -> prost_types::Struct {
    match to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        other => prost_types::Struct {
            fields: [("value".to_owned(), prost_types::Value { kind: other })].into_iter().collect(),
        },
    }
}

fn to_value(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(items) => Kind::ListValue(prost_types::ListValue { values: items.iter().map(to_value).collect() }),
        J::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The actor of a call, from its context (without the client address,
/// which only the handler's request carries).
pub fn actor_of(ctx: &crate::context::RequestContext) -> Actor {
    use crate::auth::Principal;
    let (kind, id, display_name) = match ctx.principal() {
        Some(Principal::PlatformAdmin { key_id, name }) => ("platform_admin", key_id.clone(), name.clone()),
        Some(Principal::User(p)) => ("user", p.id.clone(), p.display_name.clone()),
        Some(Principal::ApiKey(p)) => ("api_key", p.id.clone(), p.display_name.clone()),
        None => ("anonymous", String::new(), String::new()),
    };
    Actor { kind, id, display_name, client_address: String::new(), request_id: ctx.request_id.to_string() }
}
