# Staging: the same shape as production, smaller and cheaper: single-AZ RDS, one NAT
# gateway, small Redis nodes, fewer tasks, shorter secret recovery window.

locals {
  name  = "tenantry-${var.environment}"
  image = "${module.registry.repository_url}:${var.image_tag}"

  # Scaling bounds of the api service. The rate limiter's Redis fallback divides each plan by
  # the expected node count: the minimum errs towards admitting (up to max/min × the plan
  # while Redis does not answer), never towards refusing paying tenants.
  api_min_tasks = 1
  api_max_tasks = 4

  # Non-secret configuration shared by api and worker. DATABASE_URL, REDIS_URL and the JWT
  # key come from Secrets Manager (module.secrets.container_secrets). tests/api/shipped_config.rs
  # starts the real binary with exactly these settings (secrets and listen addresses aside).
  app_environment = {
    TENANTRY_GRPC_ADDR  = "0.0.0.0:50051"
    TENANTRY_HTTP_ADDR  = "0.0.0.0:8080"
    TENANTRY_LOG_FORMAT = "json"
    RUST_LOG            = var.rust_log
    # Limits shared by every api task through Redis (REDIS_URL selects this engine; stated so
    # a missing REDIS_URL stops the task at start instead of limiting per task).
    TENANTRY_RATE_LIMIT_ENGINE         = "redis"
    TENANTRY_RATE_LIMIT_EXPECTED_NODES = tostring(local.api_min_tasks)
    # Traces go to the collector sidecar on the task's loopback (modules/service), then X-Ray.
    OTEL_EXPORTER_OTLP_ENDPOINT = "http://127.0.0.1:4317"
  }

  # Container health check of api and worker: GET /healthz over bash's /dev/tcp (no curl in
  # the image).
  health_check = [
    "CMD",
    "bash",
    "-c",
    "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && IFS= read -r -t 4 status <&3 && [[ $status == HTTP/1.?' 200'* ]]",
  ]
}

module "network" {
  source = "../../modules/network"

  name               = local.name
  cidr_block         = var.vpc_cidr_block
  availability_zones = var.availability_zones
  single_nat_gateway = true
  kms_key_arn        = module.secrets.kms_key_arn
}

module "secrets" {
  source = "../../modules/secrets"

  name                    = local.name
  database_url            = module.database.database_url
  redis_primary_endpoint  = module.cache.primary_endpoint_address
  redis_port              = module.cache.port
  recovery_window_in_days = 7
}

module "registry" {
  source = "../../modules/registry"

  name        = local.name
  kms_key_arn = module.secrets.kms_key_arn
}

module "database" {
  source = "../../modules/database"

  name                  = local.name
  vpc_id                = module.network.vpc_id
  subnet_ids            = module.network.private_subnet_ids
  kms_key_arn           = module.secrets.kms_key_arn
  instance_class        = "db.t4g.medium"
  allocated_storage     = 20
  max_allocated_storage = 100
  multi_az              = false
  backup_retention_days = 7
  deletion_protection   = true
}

module "cache" {
  source = "../../modules/cache"

  name                         = local.name
  vpc_id                       = module.network.vpc_id
  subnet_ids                   = module.network.private_subnet_ids
  kms_key_arn                  = module.secrets.kms_key_arn
  auth_token_secret_arn        = module.secrets.redis_auth_token_secret_arn
  auth_token_secret_version_id = module.secrets.redis_auth_token_version_id
  node_type                    = "cache.t4g.small"
  num_cache_clusters           = 2
  multi_az_enabled             = true
  snapshot_retention_days      = 1
}

module "cluster" {
  source = "../../modules/cluster"

  name        = local.name
  kms_key_arn = module.secrets.kms_key_arn
}

module "loadbalancer" {
  source = "../../modules/loadbalancer"

  name            = local.name
  vpc_id          = module.network.vpc_id
  vpc_cidr_block  = module.network.vpc_cidr_block
  subnet_ids      = module.network.public_subnet_ids
  certificate_arn = var.certificate_arn
  kms_key_arn     = module.secrets.kms_key_arn
  route53_zone_id = var.route53_zone_id
  domain_name     = var.domain_name
}

module "api" {
  source = "../../modules/service"

  name               = "${local.name}-api"
  cluster_name       = module.cluster.cluster_name
  cluster_arn        = module.cluster.cluster_arn
  vpc_id             = module.network.vpc_id
  subnet_ids         = module.network.private_subnet_ids
  kms_key_arn        = module.secrets.kms_key_arn
  ecr_repository_arn = module.registry.repository_arn

  peer_access = {
    postgres = { security_group_id = module.database.security_group_id, port = module.database.port }
    redis    = { security_group_id = module.cache.security_group_id, port = module.cache.port }
  }

  image                = local.image
  command              = ["serve", "--no-workers"]
  cpu                  = 512
  memory               = 1024
  environment          = local.app_environment
  secrets              = module.secrets.container_secrets
  container_ports      = [50051, 8080]
  health_check_command = local.health_check

  load_balancers = [
    { target_group_arn = module.loadbalancer.grpc_target_group_arn, container_port = 50051 },
    { target_group_arn = module.loadbalancer.http_target_group_arn, container_port = 8080 },
  ]
  ingress_security_group_id = module.loadbalancer.security_group_id

  desired_count       = local.api_min_tasks
  min_capacity        = local.api_min_tasks
  max_capacity        = local.api_max_tasks
  cpu_target_percent  = 60
  requests_per_target = 3000
  # Requests per task counted on the gRPC target group, where the internal services' traffic
  # arrives; REST-heavy load is still caught by the CPU policy.
  request_count_resource_label = "${module.loadbalancer.alb_arn_suffix}/${module.loadbalancer.grpc_target_group_arn_suffix}"

  enable_collector_sidecar = true
}

module "worker" {
  source = "../../modules/service"

  name               = "${local.name}-worker"
  cluster_name       = module.cluster.cluster_name
  cluster_arn        = module.cluster.cluster_arn
  vpc_id             = module.network.vpc_id
  subnet_ids         = module.network.private_subnet_ids
  kms_key_arn        = module.secrets.kms_key_arn
  ecr_repository_arn = module.registry.repository_arn

  peer_access = {
    postgres = { security_group_id = module.database.security_group_id, port = module.database.port }
    redis    = { security_group_id = module.cache.security_group_id, port = module.cache.port }
  }

  image                = local.image
  command              = ["worker"]
  container_ports      = [8080]
  health_check_command = local.health_check
  cpu                  = 512
  memory               = 1024
  environment          = local.app_environment
  secrets              = module.secrets.container_secrets
  stop_timeout         = 120

  desired_count      = 1
  min_capacity       = 1
  max_capacity       = 4
  cpu_target_percent = 70

  # Job metrics from the worker's /metrics (TENANTRY_HTTP_ADDR) and its traces.
  enable_collector_sidecar = true
}

module "ci" {
  source = "../../modules/ci"

  name                     = local.name
  github_repository        = var.github_repository
  github_oidc_provider_arn = var.github_oidc_provider_arn
  build_environment        = "${var.environment}-build"
  deploy_environment       = var.environment
  ecr_repository_arn       = module.registry.repository_arn
  ecs_cluster_arn          = module.cluster.cluster_arn
  ecs_cluster_name         = module.cluster.cluster_name
  ecs_service_names        = [module.api.service_name, module.worker.service_name]
  task_definition_families = [module.api.task_definition_family, module.worker.task_definition_family]
  pass_role_arns = [
    module.api.execution_role_arn,
    module.api.task_role_arn,
    module.worker.execution_role_arn,
    module.worker.task_role_arn,
  ]
}

module "monitoring" {
  source = "../../modules/monitoring"

  name                  = local.name
  kms_key_arn           = module.secrets.kms_key_arn
  alarm_email_addresses = var.alarm_email_addresses

  alb_arn_suffix = module.loadbalancer.alb_arn_suffix
  target_groups = {
    grpc = module.loadbalancer.grpc_target_group_arn_suffix
    rest = module.loadbalancer.http_target_group_arn_suffix
  }
  latency_target_group_arn_suffix = module.loadbalancer.http_target_group_arn_suffix

  db_instance_id                  = module.database.instance_id
  db_free_storage_threshold_bytes = 4 * 1073741824
  # db.t4g.medium (4 GiB): max_connections defaults to ~410.
  db_connections_threshold = 320

  redis_node_ids = module.cache.member_cluster_ids

  ecs_cluster_name = module.cluster.cluster_name
  ecs_services = {
    "${local.name}-api"    = module.api.min_capacity
    "${local.name}-worker" = module.worker.min_capacity
  }

  queue_depth_threshold = 500
}
