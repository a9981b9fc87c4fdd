//! The `tenantry` binary: its allocator and how the process holds memory (transparent huge
//! pages off, freed memory purged); everything else lives in the library, see [`tenantry::cli`].

use std::time::Duration;

/// mimalloc, not glibc's malloc: see the `mimalloc` entry in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's own collection (in the library `mimalloc` links): frees
    /// what the calling thread holds unused and purges, process-wide, the
    /// freed memory whose purge delay has passed.
    fn mi_collect(force: bool);
}

/// Turns transparent huge pages off for this process (and the PostgreSQL
/// `serve --dev` starts, which inherits it). With them on, khugepaged
/// collapsed the pages mimalloc had returned back into resident 2 MiB pages
/// while the server sat idle: RSS climbed from 104 to 115 MiB in a minute
/// without a call, and started at 45 MB instead of 28 (docs/reliability.md,
/// "RSS").
#[cfg(target_os = "linux")]
fn no_transparent_huge_pages() {
    // SAFETY: integer arguments only; it sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        eprintln!("warning: cannot turn transparent huge pages off: {}", std::io::Error::last_os_error());
    }
}

#[cfg(not(target_os = "linux"))]
fn no_transparent_huge_pages() {}

/// How often freed memory is handed back to the kernel.
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// mimalloc returns freed pages to the kernel only when the allocator is
/// next used after a short delay, so a server that goes quiet after a burst
/// (a flood of streams) would keep the burst's memory resident for good.
/// A thread of its own asks for the purge once a second: docs/reliability.md,
/// "RSS", has the measurement.
fn purge_freed_memory() {
    let started = std::thread::Builder::new().name("mi-collect".into()).spawn(|| {
        loop {
            std::thread::sleep(PURGE_EVERY);
            // SAFETY: takes no pointers and only releases memory no
            // allocation holds; mimalloc allows it from any thread.
            unsafe { mi_collect(false) };
        }
    });
    if let Err(error) = started {
        eprintln!("warning: cannot start the memory purge thread: {error}");
    }
}

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    purge_freed_memory();
    tenantry::cli::run()
}
