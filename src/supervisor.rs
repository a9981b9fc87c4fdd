//! The background supervisor: every task a process runs besides its
//! listeners (the change feed, the health probe, the usage flusher, the job
//! workers…) is registered here by name, with a [`Stage`] that says when it
//! stops and a [`Restart`] policy. A task that fails or panics is logged,
//! counted (`tenantry_background_task_failures_total{task}`) and restarted with backoff
//! or left stopped, as its policy says; one task's failure never takes the
//! process down with it.
//!
//! Shutdown goes stage by stage, in the order of [`Stage`]: the workers
//! finish or release their jobs while the flushers still run, the flushers
//! write what they hold while the change feed and the health probe still
//! run, and those go last.

use std::{future::Future, pin::Pin, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// When a task stops at shutdown; stages stop in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Does work that produces state: job workers, the rescuer, housekeeping.
    Work,
    /// Writes what the process collected: usage, API keys' last use.
    Flush,
    /// Keeps the process informed: the change feed, the health probe.
    Observe,
}

/// What happens when a task ends before shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Start it again, after a backoff that grows from 100 ms to 10 s.
    Always,
    /// Leave it stopped (its end is logged).
    Never,
}

/// What a task's body ended with; an error is logged and counted.
pub type TaskResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What a task's body may return: nothing (it ends only when stopped), or a
/// result whose error is logged and counted.
pub trait TaskOutput: Send + 'static {
    /// The output as a [`TaskResult`].
    fn into_result(self) -> TaskResult;
}

impl TaskOutput for () {
    fn into_result(self) -> TaskResult {
        Ok(())
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static> TaskOutput for Result<(), E> {
    fn into_result(self) -> TaskResult {
        self.map_err(Into::into)
    }
}

type TaskFuture = Pin<Box<dyn Future<Output = TaskResult> + Send>>;

/// Makes a task's body; called again for every restart.
type Factory = Box<dyn FnMut(CancellationToken) -> TaskFuture + Send>;

struct Spec {
    name: &'static str,
    stage: Stage,
    restart: Restart,
    factory: Factory,
}

/// The tasks of one process, registered during the build and started by
/// [`Supervisor::start`].
pub struct Supervisor {
    specs: Vec<Spec>,
    metrics: Metrics,
}

/// One stage's started tasks and the token that stops them.
struct StageTasks {
    stage: Stage,
    stop: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// The started tasks; [`Running::shutdown`] stops them stage by stage.
pub struct Running {
    stages: Vec<StageTasks>,
    /// How long one stage may take to stop before its tasks are aborted.
    stage_timeout: Duration,
}

impl Supervisor {
    /// An empty supervisor whose failures are counted in `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Supervisor { specs: Vec::new(), metrics }
    }

    /// Registers a task: `body` is called with the task's stop token each
    /// time the task (re)starts, and must return once the token is cancelled.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, stage: Stage, restart: Restart, mut body: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
    {
        let factory: Factory = Box::new(move |stop| {
            let body = body(stop);
            Box::pin(async move { body.await.into_result() })
        });
        self.specs.push(Spec { name, stage, restart, factory });
    }

    /// The names of the registered tasks, in registration order.
    pub fn task_names(&self) -> Vec<&'static str> {
        self.specs.iter().map(|spec| spec.name).collect()
    }

    /// Starts every task. Each stage gets its own stop token, so shutdown
    /// can stop them in order.
    pub fn start(self, stage_timeout: Duration) -> Running {
        let mut stages: Vec<StageTasks> = [Stage::Work, Stage::Flush, Stage::Observe]
            .into_iter()
            .map(|stage| StageTasks { stage, stop: CancellationToken::new(), tasks: Vec::new() })
            .collect();
        for spec in self.specs {
            let Some(stage) = stages.iter_mut().find(|s| s.stage == spec.stage) else { continue };
            let name = spec.name;
            stage.tasks.push((name, tokio::spawn(supervise(spec, stage.stop.clone(), self.metrics.clone()))));
        }
        Running { stages, stage_timeout }
    }
}

/// Runs one task until its stop token is cancelled, restarting it by policy.
async fn supervise(mut spec: Spec, stop: CancellationToken, metrics: Metrics) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let body = (spec.factory)(stop.clone());
        // Its own tokio task, so a panic is caught here and not in the caller.
        let outcome = tokio::spawn(body).await;
        if stop.is_cancelled() {
            if let Ok(Err(error)) = &outcome {
                tracing::warn!(task = spec.name, %error, "task ended with an error while stopping");
            }
            return;
        }
        match outcome {
            Ok(Ok(())) => tracing::warn!(task = spec.name, "task ended on its own"),
            Ok(Err(error)) => tracing::error!(task = spec.name, %error, "task failed"),
            Err(panic) => tracing::error!(task = spec.name, error = %panic, "task panicked"),
        }
        metrics.record_task_failure(spec.name);
        if spec.restart == Restart::Never {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
        tracing::info!(task = spec.name, "restarting task");
    }
}

impl Running {
    /// Stops the tasks stage by stage (see the module docs), each stage
    /// within the stage timeout; tasks that overrun it are aborted.
    pub async fn shutdown(self) {
        for StageTasks { stage, stop, tasks } in self.stages {
            stop.cancel();
            for (name, mut handle) in tasks {
                match tokio::time::timeout(self.stage_timeout, &mut handle).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::error!(task = name, %error, "task's supervisor failed"),
                    Err(_) => {
                        tracing::warn!(task = name, ?stage, timeout = ?self.stage_timeout, "task did not stop in time; aborting it");
                        handle.abort();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_is_counted_and_restarted_and_stages_stop_in_order() {
        let metrics = Metrics::new();
        let mut supervisor = Supervisor::new(metrics.clone());
        let runs = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let counter = runs.clone();
        supervisor.spawn("flaky", Stage::Work, Restart::Always, move |stop| {
            let runs = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if runs < 2 {
                    return Err("boom");
                }
                stop.cancelled().await;
                Ok(())
            }
        });
        for (name, stage) in [("observer", Stage::Observe), ("flusher", Stage::Flush), ("worker", Stage::Work)] {
            let order = order.clone();
            supervisor.spawn(name, stage, Restart::Never, move |stop| {
                let order = order.clone();
                async move {
                    stop.cancelled().await;
                    order.lock().unwrap().push(name);
                }
            });
        }
        let running = supervisor.start(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "restarted twice after two failures");
        running.shutdown().await;
        assert_eq!(*order.lock().unwrap(), ["worker", "flusher", "observer"]);
        let text = metrics.render();
        assert!(text.contains("tenantry_background_task_failures_total{task=\"flaky\"} 2"), "{text}");
    }
}
