//! One `db` span per PostgreSQL statement, made from the event sqlx emits
//! when a statement ends (target `sqlx::query`, with its text and elapsed
//! time): sqlx has no spans of its own, and wrapping every executor would
//! miss the statements that do not go through ours.
//!
//! The span's parent is the tenant transaction open in the call (see
//! [`TRANSACTION`]) or else the span current where the statement ran. A
//! statement outside any traced span (background tasks, the health probe)
//! makes no span: a root span per probe would drown the calls. Only the
//! statement text is recorded, whose values are bind parameters (`$1`),
//! never the values themselves.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use opentelemetry::{
    KeyValue,
    trace::{Span as _, SpanKind, TraceContextExt, Tracer},
};
use opentelemetry_sdk::trace::SdkTracer;
use tracing::{
    Event, Level, Metadata, Subscriber,
    dispatcher::WeakDispatch,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    filter::{FilterFn, filter_fn},
    layer::{Context, Layer},
    registry::LookupSpan,
};

use super::CHILD_SPANS;

/// The name of a tenant transaction's span (`tenancy::tx`); the statements
/// run while it is open in a call become its children.
pub const TRANSACTION: &str = "db.transaction";

/// The longest statement text a span carries.
const MAX_STATEMENT: usize = 2048;

/// What this layer must see: sqlx's statement events, and the spans that
/// may parent them.
pub(super) fn filter() -> FilterFn<impl Fn(&Metadata<'_>) -> bool> {
    filter_fn(|metadata| {
        if metadata.is_span() {
            metadata.target() == CHILD_SPANS || *metadata.level() <= Level::INFO
        } else {
            metadata.target() == "sqlx::query"
        }
    })
}

/// The layer; see the module docs.
pub(super) struct StatementSpans {
    tracer: SdkTracer,
    /// The installed subscriber, to read spans' OpenTelemetry contexts.
    /// Set by `telemetry::init` once installed (`Layer::on_register_dispatch`
    /// does not reach a layer wrapped in an `Option`).
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl StatementSpans {
    /// The layer, and where to put the subscriber once it is installed.
    pub(super) fn new(tracer: SdkTracer) -> (Self, Arc<OnceLock<WeakDispatch>>) {
        let dispatch = Arc::new(OnceLock::new());
        (StatementSpans { tracer, dispatch: dispatch.clone() }, dispatch)
    }
}

/// Kept in a span's extensions while a tenant transaction opened inside it
/// is open.
struct OpenTransaction(span::Id);

/// Kept in a transaction span's extensions: the span it registered in.
struct RegisteredIn(span::Id);

impl<S> Layer<S> for StatementSpans
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != TRANSACTION {
            return;
        }
        let parent =
            if attrs.is_contextual() { ctx.lookup_current() } else { attrs.parent().and_then(|p| ctx.span(p)) };
        let (Some(parent), Some(this)) = (parent, ctx.span(id)) else { return };
        parent.extensions_mut().replace(OpenTransaction(id.clone()));
        this.extensions_mut().insert(RegisteredIn(parent.id()));
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let Some(this) = ctx.span(&id) else { return };
        let Some(parent) = this.extensions().get::<RegisteredIn>().map(|r| r.0.clone()) else { return };
        if let Some(parent) = ctx.span(&parent) {
            let mut extensions = parent.extensions_mut();
            if extensions.get_mut::<OpenTransaction>().is_some_and(|open| open.0 == id) {
                extensions.remove::<OpenTransaction>();
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let Some(current) = ctx.event_span(event) else { return };
        let parent = current.scope().find_map(|span| span.extensions().get::<OpenTransaction>().map(|o| o.0.clone()));
        let parent = parent.unwrap_or_else(|| current.id());
        drop(current);
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else { return };
        let Some(parent) = tracing_opentelemetry::get_otel_context(&parent, &dispatch) else { return };
        if !parent.span().span_context().is_sampled() {
            return;
        }
        let mut statement = Statement::default();
        event.record(&mut statement);
        let text = if statement.text.trim().is_empty() { statement.summary } else { statement.text };
        let text = text.trim();
        let operation = text.split_whitespace().next().unwrap_or("SQL").to_ascii_uppercase();
        let collection = collection(&operation, text);
        let name = match &collection {
            Some(table) => format!("{operation} {table}"),
            None => operation.clone(),
        };
        let end = SystemTime::now();
        let start = end.checked_sub(Duration::from_secs_f64(statement.elapsed_secs.max(0.0))).unwrap_or(end);
        let mut cut = text.len().min(MAX_STATEMENT);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(
                [
                    KeyValue::new("db.system", "postgresql"),
                    KeyValue::new("db.operation.name", operation),
                    KeyValue::new("db.query.text", text[..cut].to_owned()),
                    KeyValue::new("db.response.returned_rows", statement.rows_returned as i64),
                ]
                .into_iter()
                .chain(collection.map(|table| KeyValue::new("db.collection.name", table))),
            )
            .start_with_context(&self.tracer, &parent);
        span.end_with_timestamp(end);
    }
}

/// The table a simple statement works on (`platform.tenants` for
/// `SELECT … FROM platform.tenants …`), for the span's name; `None` when it
/// is not a plain name (a subquery, a function call).
fn collection(operation: &str, text: &str) -> Option<String> {
    let keyword = match operation {
        "SELECT" | "DELETE" => "FROM",
        "INSERT" => "INTO",
        "UPDATE" => return text.split_whitespace().nth(1).filter(|t| is_name(t)).map(str::to_owned),
        _ => return None,
    };
    let mut words = text.split_whitespace();
    words.find(|w| w.eq_ignore_ascii_case(keyword))?;
    words.next().filter(|t| is_name(t)).map(str::to_owned)
}

fn is_name(token: &str) -> bool {
    !token.is_empty() && token.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '"'))
}

/// The fields of sqlx's statement event.
#[derive(Default)]
struct Statement {
    summary: String,
    text: String,
    rows_returned: u64,
    elapsed_secs: f64,
}

impl Visit for Statement {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => value.clone_into(&mut self.summary),
            "db.statement" => value.clone_into(&mut self.text),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "rows_returned" {
            self.rows_returned = value;
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `summary` arrives as a `String` through `record_debug` in some
        // tracing versions; keep it when it does.
        if field.name() == "summary" && self.summary.is_empty() {
            self.summary = format!("{value:?}").trim_matches('"').to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_table_names_the_statement_and_anything_else_does_not() {
        let table = |sql: &str| collection(&sql.split_whitespace().next().unwrap().to_ascii_uppercase(), sql);
        assert_eq!(table("SELECT id, slug FROM platform.tenants WHERE id = $1").as_deref(), Some("platform.tenants"));
        assert_eq!(table("insert into usage_events (id) values ($1)").as_deref(), Some("usage_events"));
        assert_eq!(table("UPDATE platform.jobs j SET state = $1").as_deref(), Some("platform.jobs"));
        assert_eq!(table("DELETE FROM refresh_tokens WHERE family = $1").as_deref(), Some("refresh_tokens"));
        assert_eq!(table("SELECT set_config('search_path', $1, true)"), None);
        assert_eq!(table("SELECT * FROM (SELECT 1) x"), None);
        assert_eq!(table("WITH ins AS (INSERT INTO platform.jobs VALUES ($1)) SELECT 1"), None);
        assert_eq!(table("COMMIT"), None);
    }
}
