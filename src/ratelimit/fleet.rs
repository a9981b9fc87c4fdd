//! Seeing the other nodes, so a node that limits locally among peers says so.
//!
//! Local limits are exact per node: with N API nodes behind a load balancer
//! a tenant gets N times its plan. Nothing else would notice, so each node
//! names itself in PostgreSQL and looks for the others:
//!
//! - every process's session connection (the LISTEN session, always direct
//!   to PostgreSQL, never through a transaction-mode pooler) carries the
//!   `application_name` `tenantry/<role>/<engine>/<node id>`;
//! - [`watch`] reads `pg_stat_activity` for the other `tenantry/…` sessions
//!   of the same database at start and then every minute, and logs at ERROR
//!   while this node limits locally and other API nodes are seen (and at
//!   WARN on a Redis node that sees local peers, whose calls escape the
//!   shared limits).
//!
//! One cheap catalog read a minute per node; no table, no migration.

use std::{fmt, time::Duration};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{RateLimitEngine, Role};

/// The prefix of every Tenantry session's `application_name`.
const PREFIX: &str = "tenantry/";
/// How often peers are looked for after start.
const EVERY: Duration = Duration::from_secs(60);
/// The first looks, shortly after start: peers starting at the same time
/// open their sessions a moment later.
const FIRST_LOOKS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(10)];
/// A warning that still holds is repeated this often.
const REPEAT: Duration = Duration::from_secs(600);

/// What a node tells the others about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// `api` (serves calls, so limits) or `worker`.
    pub role: String,
    /// `local` or `redis`.
    pub engine: String,
    /// Random per process.
    pub node: String,
}

impl NodeIdentity {
    /// This process: `role`, limiting with `engine`, a fresh node id.
    pub fn new(role: Role, engine: RateLimitEngine) -> Self {
        let role = match role {
            Role::Api => "api",
            Role::Worker => "worker",
        };
        let engine = match engine {
            RateLimitEngine::Local => "local",
            RateLimitEngine::Redis => "redis",
        };
        let node = crate::ids::new_id("node");
        NodeIdentity { role: role.to_owned(), engine: engine.to_owned(), node }
    }

    /// Reads an `application_name` written by [`NodeIdentity::application_name`].
    pub fn parse(name: &str) -> Option<Self> {
        let mut parts = name.strip_prefix(PREFIX)?.splitn(3, '/');
        let (role, engine, node) = (parts.next()?, parts.next()?, parts.next()?);
        Some(NodeIdentity { role: role.to_owned(), engine: engine.to_owned(), node: node.to_owned() })
    }

    /// The `application_name` of this node's session connections (< 64 bytes).
    pub fn application_name(&self) -> String {
        self.to_string()
    }

    fn limits_calls(&self) -> bool {
        self.role == "api"
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/{}/{}", self.role, self.engine, self.node)
    }
}

/// The other Tenantry processes with a session open on this database.
pub async fn peers(pool: &PgPool, me: &NodeIdentity) -> Result<Vec<NodeIdentity>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT application_name FROM pg_stat_activity
          WHERE datname = current_database() AND application_name LIKE 'tenantry/%' AND application_name <> $1",
    )
    .bind(me.application_name())
    .fetch_all(pool)
    .await?;
    Ok(names.iter().filter_map(|name| NodeIdentity::parse(name)).collect())
}

/// What a node should say about its peers, if anything.
pub fn verdict(me: &NodeIdentity, peers: &[NodeIdentity]) -> Option<String> {
    if !me.limits_calls() {
        return None;
    }
    let api_peers = peers.iter().filter(|p| p.limits_calls()).count();
    let local_peers = peers.iter().filter(|p| p.limits_calls() && p.engine == "local").count();
    if me.engine == "local" && api_peers > 0 {
        return Some(format!(
            "this node limits rate LOCALLY but {api_peers} other API node(s) share the database: every tenant \
             gets up to {}x its plan. Set REDIS_URL (the Redis engine is then the default), or run one node",
            api_peers + 1
        ));
    }
    if me.engine == "redis" && local_peers > 0 {
        return Some(format!(
            "{local_peers} other API node(s) limit rate locally: their calls are not counted in the shared limits"
        ));
    }
    None
}

/// Looks for peers at start and every minute until `stop`, logging the
/// [`verdict`] when it changes (and every ten minutes while it holds).
pub async fn watch(pool: PgPool, me: NodeIdentity, stop: CancellationToken) {
    let mut said: Option<(String, tokio::time::Instant)> = None;
    let mut waits = FIRST_LOOKS.into_iter().chain(std::iter::repeat(EVERY));
    loop {
        let wait = waits.next().unwrap_or(EVERY);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let peers = match peers(&pool, &me).await {
            Ok(peers) => peers,
            Err(error) => {
                tracing::debug!(%error, "looking for other nodes failed");
                continue;
            }
        };
        let Some(message) = verdict(&me, &peers) else {
            said = None;
            continue;
        };
        let repeat = said.as_ref().is_none_or(|(last, at)| *last != message || at.elapsed() >= REPEAT);
        if repeat {
            if me.engine == "local" {
                tracing::error!(node = %me, peers = peers.len(), "{message}");
            } else {
                tracing::warn!(node = %me, peers = peers.len(), "{message}");
            }
            said = Some((message, tokio::time::Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(role: &str, engine: &str, id: &str) -> NodeIdentity {
        NodeIdentity { role: role.into(), engine: engine.into(), node: id.into() }
    }

    #[test]
    fn the_application_name_round_trips_and_fits() {
        let me = NodeIdentity::new(Role::Api, RateLimitEngine::Local);
        assert!(me.application_name().len() < 64, "{}", me.application_name());
        assert_eq!(NodeIdentity::parse(&me.application_name()), Some(me));
        assert_eq!(NodeIdentity::parse("psql"), None);
    }

    #[test]
    fn a_local_api_node_with_api_peers_is_warned() {
        let me = node("api", "local", "a");
        assert!(verdict(&me, &[]).is_none());
        assert!(verdict(&me, &[node("worker", "local", "w")]).is_none(), "workers do not limit calls");
        let said = verdict(&me, &[node("api", "redis", "b"), node("api", "local", "c")]).unwrap();
        assert!(said.contains("up to 3x"), "{said}");
        let redis = node("api", "redis", "r");
        assert!(verdict(&redis, &[node("api", "redis", "b")]).is_none());
        assert!(verdict(&redis, &[node("api", "local", "c")]).unwrap().contains("1 other API node"));
    }
}
