//! Random operation sequences across three tenants, against one real server:
//! each operation is made with one tenant's API key and often targets a
//! resource of another tenant. A model predicts every answer (cross-tenant
//! ids are NOT_FOUND, naming another tenant is PERMISSION_DENIED) and, after
//! the sequence, every tenant's observable state exactly, so nothing of one
//! tenant is ever returned to, or changed by, another.
//!
//! # Layout
//!
//! - this file: the operations, their strategies, and the runner (one
//!   server for all cases; fresh tenants per case; `PROPTEST_CASES` sets
//!   how many sequences run, 20 by default).
//! - [`model`]: the per-tenant model; making an operation on the server and
//!   checking its answer against the model.
//! - [`check`]: the final comparison of every tenant's state with its model.

/// Returns an error message from the enclosing function unless `$cond` holds.
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

mod check;
mod model;

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config, TestCaseError, TestRunner},
};

use self::model::World;
use crate::harness::TestApp;

/// Tenants per sequence.
pub const TENANTS: usize = 3;

/// One call, made with tenant `by`'s credential. `of` is the tenant whose
/// resource it targets (`by` itself or another); an [`Index`] picks one of
/// that tenant's resources of the kind, deleted ones included.
#[derive(Debug, Clone)]
pub enum Op {
    CreateUser {
        by: usize,
        email: u8,
    },
    UpdateUser {
        by: usize,
        of: usize,
        user: Index,
        name: u8,
        disable: bool,
    },
    DeleteUser {
        by: usize,
        of: usize,
        user: Index,
    },
    GetUser {
        by: usize,
        of: usize,
        user: Index,
    },
    CreateRole {
        by: usize,
        name: u8,
    },
    /// A user and a role (custom, or the built-in `viewer`) of `of`.
    AssignRole {
        by: usize,
        of: usize,
        user: Index,
        role: Index,
    },
    DeleteRole {
        by: usize,
        of: usize,
        role: Index,
    },
    CreateApiKey {
        by: usize,
    },
    /// Among `of`'s keys; `by`'s own credential is never picked, another
    /// tenant's may be.
    RevokeApiKey {
        by: usize,
        of: usize,
        key: Index,
    },
    EnqueueJob {
        by: usize,
        unique: Option<u8>,
    },
    CancelJob {
        by: usize,
        of: usize,
        job: Index,
    },
    /// Event ids come from a small set shared by all tenants, so the same id
    /// is often recorded by several tenants.
    RecordUsage {
        by: usize,
        event: u8,
        metric: u8,
        quantity: u8,
    },
    /// ListUsers with `x-tenant-id` naming tenant `named` (by id or slug).
    NameTenant {
        by: usize,
        named: usize,
        by_slug: bool,
    },
}

impl Op {
    /// Whether the call targets or names another tenant than the caller's.
    fn crosses_tenants(&self) -> bool {
        match *self {
            Op::UpdateUser { by, of, .. }
            | Op::DeleteUser { by, of, .. }
            | Op::GetUser { by, of, .. }
            | Op::AssignRole { by, of, .. }
            | Op::DeleteRole { by, of, .. }
            | Op::RevokeApiKey { by, of, .. }
            | Op::CancelJob { by, of, .. } => by != of,
            Op::NameTenant { by, named, .. } => by != named,
            Op::CreateUser { .. }
            | Op::CreateRole { .. }
            | Op::CreateApiKey { .. }
            | Op::EnqueueJob { .. }
            | Op::RecordUsage { .. } => false,
        }
    }
}

/// `(by, of)`: the caller, and the owner of the target: another tenant half
/// of the time (shrinking towards the caller's own).
fn caller_and_target() -> impl Strategy<Value = (usize, usize)> {
    (0..TENANTS, prop_oneof![Just(0), 1..TENANTS]).prop_map(|(by, offset)| (by, (by + offset) % TENANTS))
}

fn op() -> impl Strategy<Value = Op> {
    let tenant = 0..TENANTS;
    prop_oneof![
        3 => (tenant.clone(), 0..4u8).prop_map(|(by, email)| Op::CreateUser { by, email }),
        2 => (caller_and_target(), any::<Index>(), 0..3u8, any::<bool>())
            .prop_map(|((by, of), user, name, disable)| Op::UpdateUser { by, of, user, name, disable }),
        1 => (caller_and_target(), any::<Index>()).prop_map(|((by, of), user)| Op::DeleteUser { by, of, user }),
        1 => (caller_and_target(), any::<Index>()).prop_map(|((by, of), user)| Op::GetUser { by, of, user }),
        2 => (tenant.clone(), 0..3u8).prop_map(|(by, name)| Op::CreateRole { by, name }),
        2 => (caller_and_target(), any::<Index>(), any::<Index>())
            .prop_map(|((by, of), user, role)| Op::AssignRole { by, of, user, role }),
        1 => (caller_and_target(), any::<Index>()).prop_map(|((by, of), role)| Op::DeleteRole { by, of, role }),
        1 => tenant.clone().prop_map(|by| Op::CreateApiKey { by }),
        1 => (caller_and_target(), any::<Index>()).prop_map(|((by, of), key)| Op::RevokeApiKey { by, of, key }),
        2 => (tenant.clone(), proptest::option::of(0..2u8)).prop_map(|(by, unique)| Op::EnqueueJob { by, unique }),
        1 => (caller_and_target(), any::<Index>()).prop_map(|((by, of), job)| Op::CancelJob { by, of, job }),
        2 => (tenant.clone(), 0..3u8, 0..2u8, 0..2u8)
            .prop_map(|(by, event, metric, quantity)| Op::RecordUsage { by, event, metric, quantity }),
        1 => (tenant, 0..TENANTS, any::<bool>()).prop_map(|(by, named, by_slug)| Op::NameTenant { by, named, by_slug }),
    ]
}

/// How many sequences to run: `PROPTEST_CASES`, else 20.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

#[test]
fn random_operation_sequences_across_three_tenants_never_reach_another_tenant() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let app = runtime.block_on(TestApp::builder().spawn());
    let config = Config {
        cases: cases(),
        // Tests leave nothing behind; a failure prints its minimal sequence.
        failure_persistence: None,
        // Every shrinking step provisions three tenants: bound the search.
        max_shrink_iters: 300,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let (sequence, operations, crossing) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let started = Instant::now();
    let result = runner.run(&proptest::collection::vec(op(), 1..=20), |ops| {
        let n = sequence.fetch_add(1, Ordering::Relaxed);
        operations.fetch_add(ops.len(), Ordering::Relaxed);
        crossing.fetch_add(ops.iter().filter(|op| op.crosses_tenants()).count(), Ordering::Relaxed);
        runtime.block_on(async {
            let mut world = World::provision(&app, n).await;
            for (step, op) in ops.iter().enumerate() {
                world.apply(&app, op).await.map_err(|e| TestCaseError::fail(format!("step {step}, {op:?}: {e}")))?;
            }
            world.check(&app).await.map_err(|e| TestCaseError::fail(format!("after {} steps: {e}", ops.len())))
        })
    });
    let (sequences, operations, crossing) = (sequence.into_inner(), operations.into_inner(), crossing.into_inner());
    println!("{sequences} sequences, {operations} operations ({crossing} across tenants) in {:?}", started.elapsed());
    if let Err(failure) = result {
        panic!("{failure}");
    }
    runtime.block_on(app.stop());
}
