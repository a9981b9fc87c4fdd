//! Private PostgreSQL and Redis instances must not outlive the test process,
//! even when it panics or is killed. A detached shell watches our pid and,
//! once we are gone, stops the instance and removes its directory.

use std::{path::Path, process::Stdio};

/// After this process exits, send SIGINT to the pid in `pid_file` (fast
/// shutdown for PostgreSQL, clean exit for Redis), wait for it, remove `dir`.
pub fn clean_up_after_exit(pid_file: &Path, dir: &Path) {
    let script = format!(
        "while [ -d /proc/{me} ]; do sleep 0.5; done; \
         pid=$(head -n1 '{pid_file}' 2>/dev/null); \
         [ -n \"$pid\" ] && kill -INT \"$pid\" 2>/dev/null; \
         for _ in $(seq 1 60); do [ -n \"$pid\" ] && [ -d /proc/$pid ] || break; sleep 0.5; done; \
         rm -rf '{dir}'",
        me = std::process::id(),
        pid_file = pid_file.display(),
        dir = dir.display(),
    );
    let spawned = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    // The watchdog is detached on purpose; we never wait for it.
    drop(spawned.expect("spawn the clean-up watchdog"));
}

use std::os::unix::process::CommandExt;
