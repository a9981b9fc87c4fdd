//! `tenantry serve --dev`: the embedded default. Without `DATABASE_URL` it
//! runs a private PostgreSQL cluster under `--data-dir`, migrates, makes sure
//! a platform-admin key exists (kept in `<data-dir>/admin-api-key`, mode
//! 0600), prints ready-to-paste commands, and stops the cluster on shutdown.
//!
//! One dev server per data directory: it holds an exclusive lock on
//! `<data-dir>/lock` (holding its pid) for its whole life, so a second one
//! refuses at once and never touches the first one's cluster.

use std::{
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::api_key::AdminKeys,
    config::{AppConfig, DevConfig},
    db::embedded::EmbeddedPostgres,
    startup::App,
};

/// The database `--dev` uses inside its private cluster.
const DEV_DATABASE: &str = "tenantry";
/// The file holding the dev platform-admin key.
pub const ADMIN_KEY_FILE: &str = "admin-api-key";
/// The file a running dev server holds locked.
const LOCK_FILE: &str = "lock";

/// Runs the dev server until `shutdown`.
pub async fn serve(mut config: AppConfig, dev: DevConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let database = &mut config.database;
    std::fs::create_dir_all(&dev.data_dir)
        .with_context(|| format!("creating the data directory {}", dev.data_dir.display()))?;
    let _lock = lock(&dev.data_dir)?;
    let cluster = if database.url.is_none() {
        let cluster = EmbeddedPostgres::start(&dev.data_dir.join("postgres")).await?;
        cluster.ensure_database(DEV_DATABASE).await?;
        database.connect_options = Some(cluster.connect_options(DEV_DATABASE));
        Some(cluster)
    } else {
        None
    };
    let identity = &mut config.serve.identity;
    if identity.jwt_private_key.is_none() && identity.jwt_private_key_file.is_none() {
        identity.jwt_private_key_file = Some(dev_signing_key(&dev.data_dir)?);
    }
    config.serve.migrate = true;
    let result = run(config, &dev.data_dir, shutdown).await;
    if let Some(cluster) = cluster {
        match cluster.stop().await {
            Ok(()) => tracing::info!("private PostgreSQL cluster stopped"),
            Err(error) => tracing::error!(%error, "stopping the private PostgreSQL cluster failed"),
        }
    }
    result
}

async fn run(config: AppConfig, data_dir: &Path, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    let key_file = data_dir.join(ADMIN_KEY_FILE);
    let key = admin_key(&AdminKeys::new(app.pool().clone()), &key_file).await?;
    let (grpc, http) = (app.grpc_addr().context("the API listener is bound")?, app.http_addr());
    let key_path = key_file.display();
    // A closed stdout (a parent that stopped reading) must not stop the server.
    let banner = format!(
        "\nTenantry dev server is ready.\n\
         \n  gRPC: {grpc}\n  HTTP: http://{http}\n\
         \n  Platform-admin API key (kept in {key_path}):\n    {key}\n\
         \nTry:\n\
         \n  grpcurl -plaintext {grpc} list\
         \n  grpcurl -plaintext -H \"authorization: Bearer $(cat {key_path})\" {grpc} tenantry.v1.TenantService/ListTenants\
         \n  grpcurl -plaintext -H \"authorization: Bearer $(cat {key_path})\" -d '{{\"slug\":\"acme\",\"display_name\":\"Acme\",\"plan_id\":\"free\",\"owner_email\":\"owner@acme.test\",\"owner_password\":\"change me please\"}}' {grpc} tenantry.v1.TenantService/CreateTenant\
         \n  grpcurl -plaintext -d '{{\"tenant\":\"acme\",\"email\":\"owner@acme.test\",\"password\":\"change me please\"}}' {grpc} tenantry.v1.AuthService/Login\
         \n  grpcurl -plaintext -d '{{\"service\":\"tenantry.v1.TenantService\"}}' {grpc} grpc.health.v1.Health/Check\
         \n  curl -s -H \"authorization: Bearer $(cat {key_path})\" http://{http}/v1/tenants\
         \n  curl -s http://{http}/readyz\n\nREST reference: http://{http}/docs\n"
    );

    drop(std::io::stdout().write_all(banner.as_bytes()));
    std::io::stdout().flush().ok();
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

/// The data directory's lock, or an error naming the server that holds it.
fn lock(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if file.try_lock().is_err() {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        anyhow::bail!(
            "another `tenantry serve --dev` (pid {}) is using {}; stop it first, or give this one its own --data-dir",
            holder.trim(),
            data_dir.display()
        );
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

/// The dev signing key under the data dir, generated on first use.
fn dev_signing_key(data_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = data_dir.join("keys");
    let file = dir.join("jwt-signing-key.pem");
    if !file.exists() {
        let key = crate::identity::keys::generate().map_err(anyhow::Error::msg)?;
        crate::identity::keys::write_pair(&dir, &key).with_context(|| format!("writing {}", file.display()))?;
        tracing::info!(kid = %key.kid, path = %file.display(), "generated a dev signing key for access tokens");
    }
    Ok(file)
}

/// The key in `file` when it still authenticates, else a new one written there.
async fn admin_key(keys: &AdminKeys, file: &Path) -> anyhow::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(file) {
        let existing = existing.trim().to_owned();
        if keys.authenticate(&existing).await.is_ok() {
            return Ok(existing);
        }
    }
    let (_id, key) = keys.create("dev").await?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("writing {}", file.display()))?;
    out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(out, "{key}")?;
    Ok(key)
}
