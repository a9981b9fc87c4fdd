//! Integration tests: one binary, real PostgreSQL and Redis, the real server
//! on port 0, generated tonic clients. See `harness` for how each test gets
//! its own database.

mod harness;

mod auth_keyring;
mod auth_keys;
mod auth_roles;
mod auth_security;
mod auth_sessions;
mod auth_users;

mod caches;

mod cli;
mod contract;
mod contract_rest;
mod credentials;
mod dev_mode;
mod faults;
mod fleet;
mod health;
mod isolation;
mod isolation_matrix;
mod isolation_proptest;
mod jobs;
mod jobs_batch;
mod jobs_crash;
mod jobs_nodes;
mod limits;
mod observability;
mod rate_limits;
mod rest;
mod scaling;
mod shipped_config;
mod tenant_context;
mod tenant_migrations;
mod tenants;
mod usage;
mod usage_jobs;
