//! A private PostgreSQL cluster run from the machine's own PostgreSQL
//! binaries (`initdb`, `pg_ctl`), listening only on a Unix socket inside its
//! directory. `serve --dev` and the test harness use it when no
//! `DATABASE_URL` is given.
//!
//! PostgreSQL refuses to run as root; when we are root the cluster is run as
//! the `postgres` system user, which owns the cluster's directories. That
//! user must be able to reach them: a checkout in root's home (mode 0700)
//! is not reachable, so there the cluster lives under [`RELOCATED_ROOT`] and
//! the data directory holds a symlink to it (see [`reachable_root`]).

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Output,
};

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio::process::Command;

/// The cluster's superuser.
pub const SUPERUSER: &str = "tenantry";
/// The socket's port number (it names the socket file; no TCP is opened).
const PORT: u16 = 5432;
/// Longest Unix socket path the kernel accepts, less PostgreSQL's file name.
const MAX_SOCKET_DIR: usize = 107 - ".s.PGSQL.5432".len() - 1;

/// Where a root-run cluster goes when the postgres user cannot reach the
/// data directory.
pub const RELOCATED_ROOT: &str = "/var/lib/tenantry-dev";

/// Why the private cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found in PATH or /usr/lib/postgresql/*/bin; \
         install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`, macOS: `brew install postgresql@15`) \
         or set DATABASE_URL to use an existing server"
    )]
    NotInstalled,
    #[error(
        "PostgreSQL refuses to run as root and there is no `postgres` user to run it as; run as a normal user or set DATABASE_URL"
    )]
    NoUnprivilegedUser,
    #[error("the data directory path {0} is too long for a Unix socket; use a shorter --data-dir")]
    PathTooLong(PathBuf),
    #[error(
        "{0} is not reachable by the postgres user and is not empty; move it, or give --data-dir a directory \
         outside a private (0700) home"
    )]
    Unreachable(PathBuf),
    #[error("{action}: {source}")]
    Io { action: String, source: std::io::Error },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("cannot connect to the private cluster: {0}")]
    Connect(#[from] sqlx::Error),
}

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let action = action.into();
    move |source| EmbeddedError::Io { action, source }
}

/// A running private cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    owner: Option<(u32, u32)>,
}

impl EmbeddedPostgres {
    /// Initialises the cluster under `root` if needed and starts it (or
    /// reuses it when it is already running).
    pub async fn start(root: &Path) -> Result<Self, EmbeddedError> {
        let bin_dir = locate_binaries().ok_or(EmbeddedError::NotInstalled)?;
        std::fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
        let root = root.canonicalize().map_err(io(format!("resolving {}", root.display())))?;
        let owner = if running_as_root() {
            Some(system_user("postgres").ok_or(EmbeddedError::NoUnprivilegedUser)?)
        } else {
            None
        };
        let root = match owner {
            Some(owner) => reachable_root(&root, owner)?,
            None => root,
        };
        let data_dir = root.join("data");
        let socket_dir = root.join("run");
        if socket_dir.as_os_str().len() > MAX_SOCKET_DIR {
            return Err(EmbeddedError::PathTooLong(socket_dir));
        }
        for dir in [&data_dir, &socket_dir] {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                    .map_err(io(format!("handing {} to postgres", dir.display())))?;
            }
        }
        let cluster = EmbeddedPostgres { bin_dir, data_dir, socket_dir, owner };
        if !cluster.data_dir.join("PG_VERSION").exists() {
            tracing::info!(dir = %cluster.data_dir.display(), "initialising a private PostgreSQL cluster");
            cluster
                .run(
                    "initdb",
                    &[
                        "-D",
                        &cluster.data_path(),
                        "-U",
                        SUPERUSER,
                        "-A",
                        "trust",
                        "-E",
                        "UTF8",
                        "--locale=C",
                        "--no-sync",
                    ],
                )
                .await?;
        }
        if cluster.is_running().await {
            tracing::info!("reusing the private PostgreSQL cluster that is already running");
            return Ok(cluster);
        }
        let log = cluster.socket_dir.join("postgres.log");
        let options = format!("-k '{}' -c listen_addresses='' -p {PORT} -c fsync=off", cluster.socket_dir.display());
        cluster
            .run(
                "pg_ctl",
                &[
                    "-D",
                    &cluster.data_path(),
                    "-l",
                    &log.display().to_string(),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &options,
                    "start",
                ],
            )
            .await?;
        Ok(cluster)
    }

    /// Options to connect to `database` over the cluster's socket.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new().socket(&self.socket_dir).port(PORT).username(SUPERUSER).database(database)
    }

    /// Creates `database` unless it exists.
    pub async fn ensure_database(&self, database: &str) -> Result<(), EmbeddedError> {
        let mut conn = PgConnection::connect_with(&self.connect_options("postgres")).await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
        if !exists {
            let quoted = format!("\"{}\"", database.replace('"', "\"\""));
            sqlx::query(&format!("CREATE DATABASE {quoted}")).execute(&mut conn).await?;
        }
        conn.close().await?;
        Ok(())
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the postmaster answers `pg_ctl status`.
    pub async fn is_running(&self) -> bool {
        self.run("pg_ctl", &["-D", &self.data_path(), "status"]).await.is_ok()
    }

    /// Stops the cluster (fast shutdown: running queries are cancelled).
    pub async fn stop(&self) -> Result<(), EmbeddedError> {
        self.run("pg_ctl", &["-D", &self.data_path(), "-m", "fast", "-w", "-t", "60", "stop"]).await.map(drop)
    }

    /// Starts a stopped cluster again with its original settings.
    pub async fn restart(&self) -> Result<(), EmbeddedError> {
        let root = self.socket_dir.parent().unwrap_or(&self.socket_dir).to_path_buf();
        Self::start(&root).await.map(drop)
    }

    fn data_path(&self) -> String {
        self.data_dir.display().to_string()
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<Output, EmbeddedError> {
        let mut command = Command::new(self.bin_dir.join(program));
        command.args(args).env("LC_ALL", "C").kill_on_drop(true);
        // Its own process group: a Ctrl-C in the terminal reaches us, and we
        // stop the cluster after draining, not before.
        command.process_group(0);
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        let output = command.output().await.map_err(io(format!("running {program}")))?;
        if output.status.success() {
            return Ok(output);
        }
        let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if detail.is_empty() {
            detail = format!("exit status {}", output.status);
        }
        Err(EmbeddedError::Command { command: program.to_owned(), detail })
    }
}

/// `initdb`'s directory: PATH first, then Debian's versioned directories
/// (newest first).
pub fn locate_binaries() -> Option<PathBuf> {
    locate_binaries_in(std::env::var_os("PATH"), Path::new("/usr/lib/postgresql"))
}

fn locate_binaries_in(path: Option<std::ffi::OsString>, versioned_root: &Path) -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = path.and_then(|path| std::env::split_paths(&path).find(|dir| has_tools(dir))) {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(versioned_root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// `root`, or when `owner` cannot traverse to it, a directory under
/// [`RELOCATED_ROOT`] that `root` becomes a symlink to. The link keeps the
/// data directory the one place to look, and a second start finds the same
/// cluster through it.
fn reachable_root(root: &Path, owner: (u32, u32)) -> Result<PathBuf, EmbeddedError> {
    let parent = root.parent().unwrap_or(root);
    if parent.ancestors().all(|dir| traversable(dir, owner)) {
        return Ok(root.to_path_buf());
    }
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        root.hash(&mut hasher);
        hasher.finish()
    };
    let target = Path::new(RELOCATED_ROOT).join(format!("{hash:016x}"));
    std::fs::create_dir_all(&target).map_err(io(format!("creating {}", target.display())))?;
    std::fs::set_permissions(RELOCATED_ROOT, std::fs::Permissions::from_mode(0o755))
        .map_err(io(format!("opening {RELOCATED_ROOT} to postgres")))?;
    // An empty directory left by a start that could not work is replaced;
    // one with a cluster in it is never touched.
    if root.is_dir() && !root.is_symlink() {
        std::fs::remove_dir(root).map_err(|_| EmbeddedError::Unreachable(root.to_path_buf()))?;
    }
    if !root.is_symlink() {
        std::os::unix::fs::symlink(&target, root).map_err(io(format!(
            "linking {} to {}",
            root.display(),
            target.display()
        )))?;
    }
    tracing::info!(
        data_dir = %root.display(),
        cluster = %target.display(),
        "the postgres user cannot reach the data directory; the private cluster lives where it can"
    );
    root.canonicalize().map_err(io(format!("resolving {}", root.display())))
}

/// Whether `owner` may search `dir` (its execute bit for that user).
fn traversable(dir: &Path, (uid, gid): (u32, u32)) -> bool {
    let Ok(meta) = std::fs::metadata(dir) else { return false };
    let mode = meta.mode();
    if meta.uid() == uid {
        mode & 0o100 != 0
    } else if meta.gid() == gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// The uid and gid of a system user, from `/etc/passwd`.
fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && fields[0] == name).then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_install(root: &Path, version: &str) -> PathBuf {
        let bin = root.join(version).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for tool in ["initdb", "pg_ctl"] {
            std::fs::write(bin.join(tool), "").unwrap();
        }
        bin
    }

    #[test]
    fn the_newest_versioned_install_is_found_when_path_has_none() {
        let root = tempfile::tempdir().unwrap();
        fake_install(root.path(), "13");
        let newest = fake_install(root.path(), "16");
        fake_install(root.path(), "9");
        assert_eq!(locate_binaries_in(None, root.path()), Some(newest));
    }

    #[test]
    fn path_wins_over_versioned_installs() {
        let root = tempfile::tempdir().unwrap();
        fake_install(root.path(), "16");
        let on_path = fake_install(root.path(), "custom");
        let path = std::env::join_paths([on_path.clone()]).unwrap();
        assert_eq!(locate_binaries_in(Some(path), root.path()), Some(on_path));
    }

    #[test]
    fn no_install_gives_an_error_that_says_what_to_install() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(locate_binaries_in(Some("".into()), root.path()), None);
        let message = EmbeddedError::NotInstalled.to_string();
        assert!(message.contains("apt-get install postgresql") && message.contains("DATABASE_URL"), "{message}");
    }
}
