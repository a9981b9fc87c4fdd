//! Operations: structured logs without secrets, Prometheus metrics, OTLP
//! traces. Log and trace tests run the real binary as a child process, since
//! a tracing subscriber is global to a process.

pub mod exposition;
mod logs;
mod metrics;
pub mod server_process;
mod traces;
