//! Every shipped configuration is exercised verbatim (DESIGN §10): the
//! environment the Terraform task definitions and docker-compose.yml give
//! tenantry (over the image's own `ENV`) is read from those files, and the
//! real binary runs with exactly it: `migrate`, `bootstrap`, the api's command
//! and the worker's. Only what cannot exist here is replaced: secrets and
//! hosts (the test's PostgreSQL, Redis and signing key) and listen addresses
//! (port 0, as tests never bind fixed ports).
//!
//! The readers understand the shapes those files use today (a literal map of
//! strings in Terraform, `var.`/`local.` references to literals, compose's
//! `${VAR:-default}`), and fail naming the line they cannot read, so a change
//! of shape breaks this test instead of silently skipping a setting.

use std::{collections::BTreeMap, path::Path, process::Stdio, time::Duration};

use tenantry::proto::tenantry::v1::{GetQuotaRequest, usage_service_client::UsageServiceClient};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::transport::Channel;

use crate::harness::{TestDatabase, identity::signing_key, redis, tenants};

type Env = BTreeMap<String, String>;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The lines of the block that starts at the line ending in `opening` (and
/// containing `name`), up to its closing brace at the same indentation.
fn hcl_block<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| !(l.contains(name) && l.trim_end().ends_with('{')));
    let first = lines.next().unwrap_or_else(|| panic!("no block `{name}`"));
    let indent = first.len() - first.trim_start().len();
    lines.take_while(|l| !(l.trim() == "}" && l.len() - l.trim_start().len() == indent)).collect()
}

/// A Terraform value that is a string literal or names one (`var.x` with a
/// literal default, `local.x` / `tostring(local.x)` with a literal value).
fn hcl_value(expression: &str, main: &str, variables: &str) -> String {
    let expression = expression.trim();
    if let Some(literal) = expression.strip_prefix('"').and_then(|e| e.strip_suffix('"')) {
        return literal.replace("\\\"", "\"").replace("\\\\", "\\");
    }
    if let Some(name) = expression.strip_prefix("var.") {
        let block = hcl_block(variables, &format!("variable \"{name}\""));
        let default = block
            .iter()
            .find_map(|l| l.trim().strip_prefix("default"))
            .unwrap_or_else(|| panic!("var.{name} has no default"));
        return hcl_value(default.trim_start_matches([' ', '=']), main, variables);
    }
    let local = expression.strip_prefix("tostring(").and_then(|e| e.strip_suffix(')')).unwrap_or(expression);
    if let Some(name) = local.strip_prefix("local.") {
        let locals = hcl_block(main, "locals");
        let value = locals
            .iter()
            .find_map(|l| l.trim().strip_prefix(name)?.trim_start().strip_prefix('='))
            .unwrap_or_else(|| panic!("local.{name} is not a literal in locals"));
        let value = value.trim();
        return if value.starts_with('"') { hcl_value(value, main, variables) } else { value.to_owned() };
    }
    panic!("cannot read the Terraform expression `{expression}`: extend tests/api/shipped_config.rs");
}

/// `ENV` of the runtime image: what every container starts from.
fn image_env() -> Env {
    let dockerfile = read("Dockerfile");
    let runtime = &dockerfile[dockerfile.find("AS runtime").expect("the runtime stage")..];
    let mut env = Env::new();
    let mut lines = runtime.lines().skip_while(|l| !l.starts_with("ENV "));
    for line in lines.by_ref() {
        let assignment = line.trim_start_matches("ENV ").trim().trim_end_matches('\\').trim();
        let (key, value) = assignment.split_once('=').unwrap_or_else(|| panic!("ENV line `{line}`"));
        env.insert(key.to_owned(), value.to_owned());
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    assert!(env.contains_key("TENANTRY_GRPC_ADDR"), "the image's ENV was read: {env:?}");
    env
}

/// One environment's task definitions: the shared environment and each
/// service's command.
struct Deployment {
    name: String,
    env: Env,
    api: Vec<String>,
    worker: Vec<String>,
}

fn terraform(environment: &str) -> Deployment {
    let main = read(&format!("terraform/environments/{environment}/main.tf"));
    let variables = read(&format!("terraform/environments/{environment}/variables.tf"));
    let mut env = image_env();
    for line in hcl_block(&main, "app_environment =") {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("app_environment line `{line}`"));
        env.insert(key.trim().to_owned(), hcl_value(value, &main, &variables));
    }
    // The secrets the tasks receive (modules/secrets `container_secrets`), here the test's own.
    let secrets = read("terraform/modules/secrets/outputs.tf");
    let names: Vec<String> = hcl_block(&secrets, "value = {")
        .iter()
        .filter_map(|l| Some(l.trim().split_once('=')?.0.trim().to_owned()))
        .collect();
    assert_eq!(names, ["DATABASE_URL", "REDIS_URL", "TENANTRY_JWT_PRIVATE_KEY"], "the tasks' secrets");
    let command = |module: &str| -> Vec<String> {
        let block = hcl_block(&main, &format!("module \"{module}\""));
        let list = block.iter().find_map(|l| l.trim().strip_prefix("command")).expect("a command");
        serde_json::from_str(list.trim_start_matches([' ', '='])).expect("a list of strings")
    };
    Deployment { name: format!("terraform/{environment}"), env, api: command("api"), worker: command("worker") }
}

/// `${VAR:-default}` as compose reads it with `VAR` unset.
fn compose_value(value: &str) -> String {
    let value = value.trim().trim_matches('"');
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(reference) => reference.split_once(":-").map(|(_, default)| default.to_owned()).unwrap_or_default(),
        None => value.to_owned(),
    }
}

fn compose() -> Deployment {
    let compose = read("docker-compose.yml");
    let mut env = image_env();
    let anchor = compose.lines().skip_while(|l| !l.starts_with("x-tenantry-env:")).skip(1);
    for line in anchor.take_while(|l| l.starts_with(' ') || l.is_empty()) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(": ").unwrap_or_else(|| panic!("x-tenantry-env line `{line}`"));
        env.insert(key.to_owned(), compose_value(value));
    }
    let command = |service: &str| -> Vec<String> {
        let start = compose.find(&format!("\n  {service}:\n")).unwrap_or_else(|| panic!("service {service}"));
        let line = compose[start..].lines().find_map(|l| l.trim().strip_prefix("command: ")).expect("a command");
        serde_json::from_str(line).expect("a list of strings")
    };
    assert_eq!(command("migrate"), ["migrate"]);
    Deployment { name: "docker-compose.yml".into(), env, api: command("api"), worker: command("worker") }
}

/// The deployment's environment with secrets and hosts pointing at this test's own.
async fn localised(deployment: &Deployment, database: &TestDatabase, key_file: &Path) -> Env {
    let mut env = deployment.env.clone();
    assert!(env.contains_key("REDIS_URL") || deployment.name.starts_with("terraform"), "compose sets REDIS_URL");
    env.insert("DATABASE_URL".into(), database.url.clone());
    env.insert("REDIS_URL".into(), redis::url().await.to_owned());
    if env.contains_key("TENANTRY_JWT_PRIVATE_KEY_FILE") {
        env.insert("TENANTRY_JWT_PRIVATE_KEY_FILE".into(), key_file.display().to_string());
    } else {
        env.insert("TENANTRY_JWT_PRIVATE_KEY".into(), signing_key().private_pem.clone());
    }
    env
}

fn tenantry(env: &Env, args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    // Only the deployment's environment: nothing from the test's own leaks in.
    command.env_clear().envs(env).args(args).stdin(Stdio::null()).kill_on_drop(true);
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command
}

async fn run_to_end(env: &Env, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tenantry(env, &args).output().await.expect("run tenantry");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tenantry {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// `line` without terminal colour codes (`ESC [ … m`), which the pretty
/// format writes even into a pipe.
fn plain(line: &str) -> String {
    let mut text = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            text.push(c);
        }
    }
    text
}

/// `host:port` of `listener` from the start-up log line, JSON or pretty.
fn address(log: &str, listener: &str) -> Option<String> {
    log.lines().map(plain).filter(|l| l.contains("serving")).find_map(|line| {
        let at = line.find(listener)? + listener.len();
        let rest = line[at..].trim_start_matches(['"', ':', '=', ' ']);
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).unwrap_or(rest.len());
        Some(rest[..end].to_owned()).filter(|a| a.contains(':'))
    })
}

/// Starts a long-running command and waits for its "serving" line.
async fn start(env: &Env, args: Vec<String>) -> (Child, String, String) {
    let mut child = tenantry(env, &args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start tenantry");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if let (Some(grpc), Some(http)) = (address(&log, "grpc"), address(&log, "http")) {
                return Some((grpc, http));
            }
        }
        None
    })
    .await;
    let Ok(Some((grpc, http))) = found else { panic!("tenantry {args:?} did not start:\n{log}") };
    // Keep draining the log so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, grpc, http)
}

async fn stop(mut child: Child) {
    let pid = child.id().expect("running").to_string();
    Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("stops").unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status}");
}

/// Migrates, bootstraps, serves and calls with `deployment`'s settings, and
/// checks that rate limits were decided in Redis.
async fn exercise(deployment: Deployment) {
    let database = TestDatabase::create().await;
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("jwt-signing.pem");
    std::fs::write(&key_file, &signing_key().private_pem).unwrap();
    let env = localised(&deployment, &database, &key_file).await;
    assert!(env.contains_key("REDIS_URL"), "{}: a Redis URL is given", deployment.name);

    run_to_end(&env, &["migrate"]).await;
    let admin_key = run_to_end(&env, &["bootstrap", "--name", "shipped-config"]).await.trim().to_owned();

    let mut api = deployment.api.clone();
    api.extend(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"].map(String::from));
    let (server, grpc, http) = start(&env, api).await;
    let channel = Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    tenants::upsert_plan(&channel, &admin_key, "shipped", 100, 100, 0).await;
    let tenant = tenants::create_tenant_via(&channel, &admin_key, "shipped-config", "shipped").await;
    for _ in 0..3 {
        UsageServiceClient::new(channel.clone()).get_quota(tenant.as_admin(GetQuotaRequest::default())).await.unwrap();
    }
    let (status, _, metrics) = super::observability::exposition::get(http.parse().unwrap(), "/metrics", None).await;
    assert_eq!(status, 200);
    let scrape = super::observability::exposition::Scrape::parse(&metrics);
    let decided = |engine: &str| -> f64 {
        scrape
            .named("tenantry_rate_limit_decisions_total")
            .filter(|s| s.labels["engine"] == engine)
            .map(|s| s.value)
            .sum()
    };
    assert!(decided("redis") >= 3.0, "{}: rate limits decided in Redis:\n{metrics}", deployment.name);
    assert_eq!(decided("local"), 0.0, "{}: no call was limited per node", deployment.name);
    stop(server).await;

    // The worker with the same settings; its own listener once `worker` has one (issue 12).
    let mut worker = deployment.worker.clone();
    let help = run_to_end(&env, &[worker[0].as_str(), "--help"]).await;
    if help.contains("--http-addr") {
        worker.extend(["--http-addr", "127.0.0.1:0"].map(String::from));
        let mut child = tenantry(&env, &worker).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = String::new();
        let http = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.push_str(&line);
                log.push('\n');
                if let Some(http) = address(&log, "http") {
                    return http;
                }
            }
            panic!("the worker stopped:\n{log}")
        })
        .await
        .expect("the worker logs its HTTP address");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (status, _, metrics) = super::observability::exposition::get(http.parse().unwrap(), "/metrics", None).await;
        assert_eq!(status, 200, "{}: the worker serves /metrics", deployment.name);
        assert!(metrics.contains("tenantry_build_info"), "{metrics}");
        stop(child).await;
    } else {
        let child = tenantry(&env, &worker).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop(child).await;
    }
}

#[test]
fn the_readers_see_what_the_files_set() {
    for environment in ["production", "staging"] {
        let deployment = terraform(environment);
        assert_eq!(deployment.api, ["serve", "--no-workers"]);
        assert_eq!(deployment.worker, ["worker"]);
        assert_eq!(deployment.env["TENANTRY_RATE_LIMIT_ENGINE"], "redis", "{environment}");
        assert_eq!(deployment.env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://127.0.0.1:4317", "{environment}");
        assert_eq!(deployment.env["TENANTRY_LOG_FORMAT"], "json");
        assert_eq!(deployment.env["RUST_LOG"], "info", "the variable's default");
    }
    let expected_nodes = |environment| terraform(environment).env["TENANTRY_RATE_LIMIT_EXPECTED_NODES"].clone();
    assert_eq!(expected_nodes("production"), "3", "production's api minimum");
    assert_eq!(expected_nodes("staging"), "1", "staging's api minimum");
    let compose = compose();
    assert_eq!(compose.env["TENANTRY_LOG_FORMAT"], "pretty", "compose's default");
    assert_eq!(compose.env["REDIS_URL"], "redis://redis:6379");
    assert_eq!(compose.api, ["serve", "--no-workers"]);
}

#[tokio::test]
async fn terraform_production_limits_in_redis() {
    exercise(terraform("production")).await;
}

#[tokio::test]
async fn terraform_staging_limits_in_redis() {
    exercise(terraform("staging")).await;
}

#[tokio::test]
async fn docker_compose_limits_in_redis() {
    exercise(compose()).await;
}
