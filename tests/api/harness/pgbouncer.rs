//! PgBouncer in transaction pooling mode in front of the test PostgreSQL,
//! one per test process (Debian's `pgbouncer`), so the tenancy tests also
//! prove that nothing depends on session state. Cleaned up by the watchdog
//! after the process exits.

use std::{net::TcpListener, os::unix::fs::PermissionsExt, path::PathBuf, process::Command, time::Duration};

use sqlx::postgres::PgConnectOptions;
use tokio::sync::OnceCell;

use super::{postgres, watchdog};

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

fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
}

async fn start() -> Bouncer {
    let upstream: PgConnectOptions = postgres::admin_options().await;
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "tenantry-pgbouncer-{}-{}",
        std::process::id(),
        tenantry::ids::random_token(6)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let host = match upstream.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => upstream.get_host().to_owned(),
    };
    let user = upstream.get_username().to_owned();
    let config = format!(
        "[databases]\n* = host={host} port={upstream_port} user={user}\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = transaction\n\
         max_client_conn = 1000\ndefault_pool_size = 10\n\
         ignore_startup_parameters = extra_float_digits,options\n\
         logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
        upstream_port = upstream.get_port(),
        dir = dir.display(),
    );
    std::fs::write(dir.join("pgbouncer.ini"), config).unwrap();
    std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
    let mut command = Command::new("pgbouncer");
    command.arg("-d").arg(dir.join("pgbouncer.ini"));
    // PgBouncer refuses to run as root; it switches user itself with -u.
    if std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false) {
        let (uid, gid) = postgres_user().expect("a postgres system user to run pgbouncer as");
        for file in ["pgbouncer.ini", "users.txt"] {
            std::os::unix::fs::chown(dir.join(file), Some(uid), Some(gid)).unwrap();
        }
        command.args(["-u", "postgres"]);
    }
    let status = command.status().expect("pgbouncer is installed (apt-get install pgbouncer)");
    assert!(
        status.success(),
        "pgbouncer failed to start: {}",
        std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
    );
    watchdog::clean_up_after_exit(&dir.join("pgbouncer.pid"), &dir);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Bouncer { port };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pgbouncer did not start listening on {port}");
}

/// Options to reach `database` through PgBouncer. Prepared statements are
/// not cached: PgBouncer 1.18 cannot keep them across transactions.
pub async fn options(database: &str) -> PgConnectOptions {
    let upstream = postgres::admin_options().await;
    let bouncer = bouncer().await;
    let mut options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(bouncer.port)
        .username(upstream.get_username())
        .database(database)
        .statement_cache_capacity(0);
    if let Ok(url) = std::env::var("DATABASE_URL")
        && let Ok(parsed) = url.parse::<url_password::Url>()
        && let Some(password) = parsed.password()
    {
        options = options.password(password);
    }
    options
}

mod url_password {
    //! Just enough URL parsing to carry a password through.
    pub struct Url(Option<String>);
    impl std::str::FromStr for Url {
        type Err = ();
        fn from_str(url: &str) -> Result<Self, ()> {
            let rest = url.split_once("://").ok_or(())?.1;
            let userinfo = rest.split_once('@').map(|(u, _)| u).unwrap_or("");
            Ok(Url(userinfo.split_once(':').map(|(_, p)| p.to_owned())))
        }
    }
    impl Url {
        pub fn password(&self) -> Option<&str> {
            self.0.as_deref()
        }
    }
}
