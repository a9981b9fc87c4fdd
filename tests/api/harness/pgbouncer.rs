//! PgBouncer in transaction pooling mode in front of the test PostgreSQL,
//! one per test process, so the tenancy tests also prove that nothing
//! depends on session state. Cleaned up by the watchdog after the process
//! exits.
//!
//! It must be PgBouncer 1.21 or newer: from 1.21 on, `max_prepared_statements`
//! carries sqlx's named prepared statements across transactions, so the real
//! server runs through it unchanged. The binary is `$PGBOUNCER` if set, else
//! the one `.ci/pgbouncer` builds under [`PRIVATE_PREFIX`], else `pgbouncer`
//! on PATH. Without one the PgBouncer variants are skipped with one line
//! saying why and how to get one; with `TENANTRY_REQUIRE_PGBOUNCER` set (CI)
//! they fail instead, so no run reports coverage that never ran.

use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{Once, OnceLock},
    time::Duration,
};

use sqlx::postgres::PgConnectOptions;
use tokio::sync::OnceCell;

use super::{postgres, watchdog};

/// Where `.ci/pgbouncer` installs PgBouncer when the system's is too old.
pub const PRIVATE_PREFIX: &str = "/usr/local/lib/tenantry-pgbouncer";

/// The oldest PgBouncer that carries prepared statements in transaction mode.
const MINIMUM: (u32, u32) = (1, 21);

/// Where PgBouncer listens.
pub struct Bouncer {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

static BOUNCER: OnceCell<Bouncer> = OnceCell::const_new();

/// The shared PgBouncer, started on first use.
pub async fn bouncer() -> &'static Bouncer {
    BOUNCER.get_or_init(start).await
}

/// The binary to run: `$PGBOUNCER`, the private build, or the one on PATH.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PGBOUNCER") {
        return PathBuf::from(path);
    }
    let private = Path::new(PRIVATE_PREFIX).join("bin/pgbouncer");
    if private.exists() { private } else { PathBuf::from("pgbouncer") }
}

/// `major.minor` from the first line of `pgbouncer --version` ("PgBouncer 1.24.1").
fn version(binary: &Path) -> Option<(u32, u32)> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let number = text.lines().next()?.split_whitespace().nth(1)?;
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// A usable binary, or why there is none and how to get one.
fn usable_binary() -> &'static Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let binary = binary();
        let how = format!(
            "run `sudo .ci/pgbouncer` (builds PgBouncer from Debian's next suite into {PRIVATE_PREFIX}; \
             the tests find it there), install PgBouncer >= 1.21 from your distribution, \
             or point PGBOUNCER at such a binary"
        );
        match version(&binary) {
            None => Err(format!("no PgBouncer at `{}` (needs >= 1.21): {how}", binary.display())),
            Some(found) if found < MINIMUM => Err(format!(
                "PgBouncer {}.{} at `{}` cannot carry prepared statements in transaction pooling mode \
                 (needs >= 1.21, `max_prepared_statements`): {how}",
                found.0,
                found.1,
                binary.display()
            )),
            Some(_) => Ok(binary),
        }
    })
}

/// Whether the PgBouncer variants run here. Without a PgBouncer >= 1.21
/// they are skipped, saying so once on stderr, unless
/// `TENANTRY_REQUIRE_PGBOUNCER` is set (`.ci/run` sets it): then its absence
/// fails them, so CI never reports coverage that did not run.
pub fn available() -> bool {
    static SAID: Once = Once::new();
    match usable_binary() {
        Ok(_) => true,
        Err(why) if std::env::var_os("TENANTRY_REQUIRE_PGBOUNCER").is_some() => {
            panic!("TENANTRY_REQUIRE_PGBOUNCER is set but {why}")
        }
        Err(why) => {
            // Written to the process's stderr, not with `eprintln!`, which
            // the test harness captures (and shows only for failing tests).
            SAID.call_once(|| {
                use std::io::Write;
                drop(writeln!(std::io::stderr(), "skipping the tests through PgBouncer: {why}"));
            });
            false
        }
    }
}

/// The binary, for a test that [`available`] let through.
fn checked_binary() -> PathBuf {
    match usable_binary() {
        Ok(binary) => binary.clone(),
        Err(why) => panic!("{why}"),
    }
}

fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
}

/// The `pgbouncer.ini` block of docs/tenancy.md.
pub fn documented_block() -> &'static str {
    const DOC: &str = include_str!("../../../docs/tenancy.md");
    let marker = DOC.find("<!-- pgbouncer.ini:").expect("docs/tenancy.md has the pgbouncer.ini block");
    let start = DOC[marker..].find("```ini\n").expect("an ini fence") + marker + "```ini\n".len();
    let end = DOC[start..].find("```").expect("the fence closes") + start;
    &DOC[start..end]
}

/// The documented configuration with `[databases]` replaced by `database`
/// and each of `settings` replaced (or added) in `[pgbouncer]`; every other
/// line stays as documented.
pub fn documented_config(database: &str, settings: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut section = "";
    let mut done: Vec<&str> = Vec::new();
    for line in documented_block().lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = if trimmed == "[databases]" { "databases" } else { "pgbouncer" };
            out.push_str(trimmed);
            out.push('\n');
            if section == "databases" {
                out.push_str(database);
                out.push('\n');
            }
            continue;
        }
        if section == "databases" || trimmed.is_empty() || trimmed.starts_with(';') {
            continue;
        }
        let key = trimmed.split('=').next().unwrap_or_default().trim();
        match settings.iter().find(|(k, _)| *k == key) {
            Some((k, value)) => {
                out.push_str(&format!("{k} = {value}\n"));
                done.push(k);
            }
            None => {
                out.push_str(trimmed);
                out.push('\n');
            }
        }
    }
    for (key, value) in settings.iter().filter(|(k, _)| !done.contains(k)) {
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

async fn start() -> Bouncer {
    let binary = checked_binary();
    let upstream: PgConnectOptions = postgres::admin_options().await;
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "tenantry-pgbouncer-{}-{}",
        std::process::id(),
        tenantry::ids::random_token(6)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Before starting: the directory goes even if PgBouncer fails to start.
    watchdog::clean_up_after_exit(&dir.join("pgbouncer.pid"), &dir);
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let host = match upstream.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => upstream.get_host().to_owned(),
    };
    let user = upstream.get_username().to_owned();
    // The documented configuration (docs/tenancy.md), with only this
    // instance's addresses, auth and paths put in. server_round_robin: a
    // client's consecutive transactions land on different server
    // connections, so anything that relies on session state (a lock, a
    // setting, a LISTEN) breaks here instead of working by luck.
    let config = documented_config(
        &format!("* = host={host} port={upstream_port} user={user}", upstream_port = upstream.get_port()),
        &[
            ("listen_addr", "127.0.0.1".to_owned()),
            ("listen_port", port.to_string()),
            ("unix_socket_dir", String::new()),
            ("auth_type", "trust".to_owned()),
            ("auth_file", format!("{}/users.txt", dir.display())),
            ("server_round_robin", "1".to_owned()),
            ("logfile", format!("{}/pgbouncer.log", dir.display())),
            ("pidfile", format!("{}/pgbouncer.pid", dir.display())),
        ],
    );
    std::fs::write(dir.join("pgbouncer.ini"), config).unwrap();
    // Clients are trusted; the password (if any) is what PgBouncer logs in
    // to PostgreSQL with.
    let password = password().unwrap_or_default().replace('"', "\"\"");
    std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"{password}\"\n")).unwrap();
    let mut command = Command::new(&binary);
    command.arg("-d").arg(dir.join("pgbouncer.ini"));
    // PgBouncer refuses to run as root; it switches user itself with -u.
    if std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false) {
        let (uid, gid) = postgres_user().expect("a postgres system user to run pgbouncer as");
        for file in ["pgbouncer.ini", "users.txt"] {
            std::os::unix::fs::chown(dir.join(file), Some(uid), Some(gid)).unwrap();
        }
        command.args(["-u", "postgres"]);
    }
    let status = command.status().unwrap_or_else(|e| panic!("cannot run `{}`: {e}", binary.display()));
    assert!(
        status.success(),
        "pgbouncer failed to start: {}",
        std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
    );
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Bouncer { port };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pgbouncer did not start listening on {port}");
}

/// Options to reach `database` through PgBouncer, with sqlx's defaults
/// (prepared statements cached per connection, as in production).
pub async fn options(database: &str) -> PgConnectOptions {
    let upstream = postgres::admin_options().await;
    let bouncer = bouncer().await;
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(bouncer.port)
        .username(upstream.get_username())
        .database(database);
    match password() {
        Some(password) => options.password(&password),
        None => options,
    }
}

/// A `postgres://` URL to `database` through PgBouncer, for child processes.
pub async fn url(database: &str) -> String {
    let upstream = postgres::admin_options().await;
    let bouncer = bouncer().await;
    let user = upstream.get_username();
    let userinfo = match std::env::var("DATABASE_URL").ok().as_deref().and_then(userinfo::password) {
        Some(password) => format!("{user}:{password}"),
        None => user.to_owned(),
    };
    format!("postgres://{userinfo}@127.0.0.1:{}/{database}", bouncer.port)
}

/// The password of `DATABASE_URL`, decoded; `None` for the private cluster.
fn password() -> Option<String> {
    let url = std::env::var("DATABASE_URL").ok()?;
    userinfo::password(&url).map(userinfo::percent_decode)
}

mod userinfo {
    //! Just enough URL parsing to carry a password through.

    /// The password of a `scheme://user:password@host/...` URL, as written.
    pub fn password(url: &str) -> Option<&str> {
        let rest = url.split_once("://")?.1;
        let userinfo = rest.split_once('@')?.0;
        Some(userinfo.split_once(':')?.1)
    }

    /// `%XX` escapes decoded.
    pub fn percent_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
