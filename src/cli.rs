//! The `tenantry` command line: one typed configuration per subcommand,
//! parsed by clap from flags with environment fallbacks. `main.rs` only
//! calls [`run`].

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::api_key::AdminKeys,
    config::{self, AppConfig, DatabaseConfig, DevConfig, Role, ServeConfig, TelemetryConfig},
    db, dev,
    jobs::worker::WorkerConfig,
    startup::App,
    telemetry,
    tenancy::{migrate, purge, schema::Direction},
};

mod migrations;

/// Tenantry: tenants, identity, usage, rate limits and jobs over gRPC and REST.
#[derive(Debug, Parser)]
#[command(name = "tenantry", version, about)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryConfig,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up; boxing the large `serve` settings would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gRPC API, REST, health and metrics (and job workers).
    Serve {
        // First: what a newcomer needs (`--dev`, `--data-dir`, the addresses).
        #[command(flatten)]
        dev: DevConfig,
        #[command(flatten)]
        serve: ServeConfig,
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        workers: WorkerConfig,
    },
    /// Run the built-in job workers only, scaled apart from the API.
    Worker {
        /// Address of the HTTP listener (/healthz, /readyz, /metrics).
        #[arg(long, env = "TENANTRY_HTTP_ADDR", default_value = "127.0.0.1:8081", help_heading = "Getting started")]
        http_addr: std::net::SocketAddr,
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        workers: WorkerConfig,
    },
    /// Apply pending platform migrations, then upgrade every tenant schema.
    ///
    /// `migrate new` writes a new migration; `migrate down` reverts.
    #[command(args_conflicts_with_subcommands = true)]
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateCommand>,
        #[command(flatten)]
        database: DatabaseConfig,
        /// Tenant schemas upgraded at once.
        #[arg(long, env = "TENANTRY_MIGRATE_CONCURRENCY", default_value_t = 8)]
        concurrency: usize,
        /// Only report: schemas per version and the lagging tenants.
        #[arg(long)]
        status: bool,
        /// Visit every tenant schema, not only those the ledger shows behind
        /// (rechecks what each one applied).
        #[arg(long)]
        all_schemas: bool,
    },
    /// Tenant maintenance.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Generate and rotate the signing keys of access tokens.
    ///
    /// The key ring is PEM text (in TENANTRY_JWT_PRIVATE_KEY or the
    /// --jwt-private-key-file file): the first block is the signing private
    /// key; every further block, a public or a private key, is
    /// verification-only (published in the JWKS and accepted). To rotate:
    /// append the new key (verify-only), roll out; move it first (signing)
    /// with the old key after it, roll out; after the access-token lifetime
    /// remove the old key, roll out.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Create a platform-admin API key and print only the key on stdout.
    Bootstrap {
        #[command(flatten)]
        database: DatabaseConfig,
        /// A label for the key, kept with it for audit.
        #[arg(long, default_value = "bootstrap")]
        name: String,
    },
}

// Parsed once at start-up, as `Command`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum MigrateCommand {
    /// Write a new timestamped migration: `<version>_<name>.up.sql` and its
    /// `.down.sql`, under migrations/platform (or migrations/tenant).
    New {
        /// What the migration does, in snake_case (e.g. add_invoices).
        name: String,
        /// A tenant migration (applied inside every tenant schema).
        #[arg(long)]
        tenant: bool,
        /// The migrations directory (holding platform/ and tenant/).
        #[arg(long, default_value = "migrations")]
        dir: std::path::PathBuf,
    },
    /// Revert migrations newer than --to, newest first: the platform
    /// schema's, or with --tenant every tenant schema's (in parallel; run
    /// again to resume).
    Down {
        /// The version to go down to (it stays applied); 0 reverts all.
        #[arg(long)]
        to: i64,
        /// Every tenant schema instead of the platform schema.
        #[arg(long)]
        tenant: bool,
        #[command(flatten)]
        database: DatabaseConfig,
        /// Tenant schemas reverted at once.
        #[arg(long, env = "TENANTRY_MIGRATE_CONCURRENCY", default_value_t = 8)]
        concurrency: usize,
        /// With --tenant: visit every tenant schema, not only those the
        /// ledger shows above --to.
        #[arg(long)]
        all_schemas: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate an RSA-2048 key pair for signing access tokens. Prints the
    /// private key (PKCS#8 PEM) and the public key (SPKI PEM) on stdout, or
    /// writes `jwt-signing-key.pem` (mode 0600) and `jwt-public-key.pem` into
    /// --out-dir. The key id (`kid`) goes to stderr.
    Generate {
        /// Directory to write the two PEM files into (created if missing).
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Drop the schemas of deleted tenants whose grace period is over.
    Purge {
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

/// Parses the command line, runs the command, and maps the outcome to an
/// exit code; errors are printed once, without internals of secrets.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's channel lives on the runtime.
    let telemetry = match runtime.block_on(async { telemetry::init(&cli.telemetry) }) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(execute(cli.command));
    // Flush spans while the runtime still drives the exporter.
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { serve, database, dev, workers } if dev.dev => {
            dev::serve(AppConfig { role: Role::Api, serve, database, workers }, dev, shutdown_on_signals()).await
        }
        Command::Serve { serve, database, workers, .. } => {
            let app = App::build(AppConfig { role: Role::Api, serve, database, workers }).await?;
            let grpc = app.grpc_addr().context("the API listener is bound")?;
            tracing::info!(%grpc, http = %app.http_addr(), "serving");
            app.run_until_stopped(shutdown_on_signals()).await?;
            Ok(())
        }
        Command::Worker { http_addr, database, workers } => {
            let mut serve = ServeConfig { http_addr, ..config::defaults() };
            // A worker issues and verifies no access token.
            serve.identity.ephemeral_signing_key = true;
            let app = App::build(AppConfig { role: Role::Worker, serve, database, workers }).await?;
            tracing::info!(http = %app.http_addr(), "serving job workers");
            app.run_until_stopped(shutdown_on_signals()).await?;
            Ok(())
        }
        Command::Migrate { action: Some(MigrateCommand::New { name, tenant, dir }), .. } => {
            let (up, down) = migrations::write_new(&dir, &name, tenant, chrono::Utc::now())?;
            println!("{}\n{}", up.display(), down.display());
            Ok(())
        }
        Command::Migrate {
            action: Some(MigrateCommand::Down { to, tenant, database, concurrency, all_schemas }),
            ..
        } => {
            if concurrency == 0 {
                anyhow::bail!("--concurrency: must be at least 1");
            }
            let database = migrations::patient(database);
            if tenant {
                migrations::tenant_down(&database, to, concurrency, all_schemas).await
            } else {
                migrations::platform_down(&database, to).await
            }
        }
        Command::Migrate { database, status: true, .. } => {
            let database = migrations::patient(database);
            let pool = db::connect(&database).await?;
            db::check_migrations(&pool).await?;
            let started = std::time::Instant::now();
            let status = migrate::status(&pool).await?;
            let elapsed = started.elapsed();
            println!("latest tenant schema version: {}", status.latest);
            for (version, count) in &status.per_version {
                println!("  version {version}: {count} schema(s)");
            }
            println!("lagging tenants: {}", status.lagging.len());
            for (tenant, version) in status.lagging.iter().take(100) {
                println!("  {tenant} at {version}");
            }
            if status.unrecorded > 0 {
                println!(
                    "not yet in the ledger (read from the schema; `tenantry migrate` records them): {}",
                    status.unrecorded
                );
            }
            println!("read in {elapsed:.2?}");
            Ok(())
        }
        Command::Migrate { database, concurrency, all_schemas, .. } => {
            if concurrency == 0 {
                anyhow::bail!("--concurrency: must be at least 1");
            }
            let database = migrations::patient(database);
            let pool = db::connect(&database).await?;
            // Platform migrations on a direct session (their lock is
            // session-level); tenant schemas through the pool, each in one
            // transaction, which a transaction-mode pooler carries.
            let session = db::listen_pool(&database)?;
            db::migrate(&session).await?;
            session.close().await;
            let latest = db::MIGRATOR.iter().map(|m| m.version).max().unwrap_or_default();
            tracing::info!(version = latest, "platform schema is up to date");
            let report = migrate::run_all(&pool, concurrency, Direction::Up, all_schemas).await?;
            migrations::print_report(&report, "upgraded", "current", "migrate")
        }
        Command::Tenant { command: TenantCommand::Purge { database } } => {
            let pool = db::connect(&database).await?;
            db::check_migrations(&pool).await?;
            let mut purged = 0;
            loop {
                let due = purge::tenants_due_for_purge(&pool, 100).await?;
                if due.is_empty() {
                    break;
                }
                for tenant in &due {
                    purged += usize::from(purge::purge_tenant(&pool, tenant).await?);
                }
            }
            println!("purged {purged} tenant(s)");
            Ok(())
        }
        Command::Keys { command: KeysCommand::Generate { out_dir } } => {
            let key = crate::identity::keys::generate().map_err(anyhow::Error::msg)?;
            match out_dir {
                None => print!("{}{}", key.private_pem, key.public_pem),
                Some(dir) => {
                    let (private, public) = crate::identity::keys::write_pair(&dir, &key)?;
                    println!("{}\n{}", private.display(), public.display());
                }
            }
            eprintln!("kid: {}", key.kid);
            Ok(())
        }
        Command::Bootstrap { database, name } => {
            let pool = db::connect(&database).await?;
            db::check_migrations(&pool).await?;
            let (_id, key) = AdminKeys::new(pool).create(&name).await?;
            println!("{key}");
            Ok(())
        }
    }
}

/// A token cancelled by SIGTERM or SIGINT (Ctrl-C).
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        tracing::info!("shutdown requested; draining in-flight calls");
        trigger.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory;

    use super::*;

    /// Every flag (and its environment variable) of every subcommand.
    fn real_flags() -> BTreeSet<(String, Option<String>)> {
        fn walk(command: &clap::Command, out: &mut BTreeSet<(String, Option<String>)>) {
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if arg.is_hide_set() || ["help", "version"].contains(&long) {
                    continue;
                }
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                out.insert((format!("--{long}"), env));
            }
            for sub in command.get_subcommands() {
                walk(sub, out);
            }
        }
        let mut out = BTreeSet::new();
        walk(&Cli::command(), &mut out);
        out
    }

    /// The README's configuration table: the flags and the environment
    /// variables each row names (in backticks).
    fn readme_rows() -> Vec<(Vec<String>, Vec<String>)> {
        let readme = include_str!("../README.md");
        let section = readme.split("## Configuration").nth(1).expect("a Configuration section");
        let section = section.split("\n## ").next().unwrap_or_default();
        let ticked = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
        section
            .lines()
            .filter(|line| line.starts_with("| `--"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').collect();
                (ticked(cells[1]), ticked(cells[2]))
            })
            .collect()
    }

    #[test]
    fn the_readme_configuration_table_lists_every_flag_with_its_environment_variable() {
        let rows = readme_rows();
        let documented: BTreeSet<&String> = rows.iter().flat_map(|(flags, _)| flags).collect();
        let envs: BTreeSet<&String> = rows.iter().flat_map(|(_, envs)| envs).collect();
        let real = real_flags();
        let missing: Vec<_> = real.iter().filter(|(flag, _)| !documented.contains(flag)).collect();
        assert!(missing.is_empty(), "flags missing from the README's configuration table: {missing:?}");
        let missing_env: Vec<_> =
            real.iter().filter_map(|(_, env)| env.as_ref()).filter(|env| !envs.contains(env)).collect();
        assert!(missing_env.is_empty(), "environment variables missing from the README's table: {missing_env:?}");
        let known: BTreeSet<&String> = real.iter().map(|(flag, _)| flag).collect();
        let stale: Vec<_> = documented.iter().filter(|flag| !known.contains(*flag)).collect();
        assert!(stale.is_empty(), "the README documents flags that do not exist: {stale:?}");
    }

    #[test]
    fn the_help_is_valid_and_keys_has_a_one_line_summary() {
        Cli::command().debug_assert();
        let keys = Cli::command().find_subcommand("keys").expect("keys").get_about().expect("about").to_string();
        assert!(!keys.contains('\n') && keys.len() < 80, "{keys}");
    }
}
