//! The `tenantry` binary: everything lives in the library; see [`tenantry::cli`].

/// mimalloc, not glibc's malloc: see the `mimalloc` entry in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tenantry::cli::run()
}
