# One ECS Fargate service running the tenantry image: used twice per environment, as
# `api` (serve --no-workers, behind the ALB) and as `worker` (job workers only).
#
# - Task definition: read-only root filesystem with a writable /tmp, non-root user,
#   tini-style init, secrets injected from Secrets Manager as environment variables,
#   awslogs to an encrypted log group; optional OpenTelemetry collector sidecar (metrics
#   to CloudWatch, traces to X-Ray).
# - Roles: the execution role may pull from one ECR repository, write one log group and
#   read exactly the secrets passed in; the task role holds only what the sidecar or
#   ECS Exec needs.
# - Scaling: target tracking on CPU, and on ALB requests per target when asked.
# - Deploys: CI registers a new task definition revision with the new image and updates
#   the service (see .github/workflows/deploy.yml), so Terraform ignores task_definition
#   and desired_count drift on the service.

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  # Where the collector sidecar receives traces; the tenantry container's
  # OTEL_EXPORTER_OTLP_ENDPOINT must be http://<this> (checked on the task definition).
  otlp_endpoint = "127.0.0.1:4317"

  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  log_options = {
    awslogs-group   = aws_cloudwatch_log_group.this.name
    awslogs-region  = local.region
    mode            = "non-blocking"
    max-buffer-size = "25m"
  }

  app_container = merge(
    {
      name                   = "tenantry"
      image                  = var.image
      essential              = true
      command                = var.command
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      stopTimeout            = var.stop_timeout
      portMappings = [for port in var.container_ports : {
        containerPort = port
        hostPort      = port
        protocol      = "tcp"
      }]
      environment = [for k in sort(keys(var.environment)) : { name = k, value = var.environment[k] }]
      secrets     = [for k in sort(keys(var.secrets)) : { name = k, valueFrom = var.secrets[k] }]
      mountPoints = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
      linuxParameters = {
        initProcessEnabled = true
      }
      ulimits = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.log_options, { awslogs-stream-prefix = "tenantry" })
      }
    },
    # The collector starts first and, since ECS stops containers in reverse dependency order,
    # stops last: tenantry's final spans and scrape at SIGTERM still have somewhere to go.
    var.enable_collector_sidecar ? { dependsOn = [{ containerName = "otel-collector", condition = "START" }] } : {},
    var.health_check_command == null ? {} : {
      healthCheck = {
        command     = var.health_check_command
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
    },
  )

  # OpenTelemetry collector (ADOT) next to tenantry, reached on the task's loopback:
  # - metrics: scrape /metrics once a minute, keep only the series named by
  #   metrics_name_regex, publish them as CloudWatch custom metrics through EMF logs;
  # - traces: receive OTLP/gRPC on 127.0.0.1:4317 (what OTEL_EXPORTER_OTLP_ENDPOINT names in
  #   the tenantry container), batch, and send to AWS X-Ray over TLS with the task role.
  collector_config = yamlencode({
    receivers = {
      prometheus = {
        config = {
          scrape_configs = [{
            job_name        = "tenantry"
            scrape_interval = "60s"
            metrics_path    = "/metrics"
            static_configs  = [{ targets = ["127.0.0.1:${var.metrics_scrape_port}"] }]
            metric_relabel_configs = [{
              source_labels = ["__name__"]
              regex         = var.metrics_name_regex
              action        = "keep"
            }]
          }]
        }
      }
      otlp = {
        protocols = {
          grpc = { endpoint = local.otlp_endpoint }
        }
      }
    }
    processors = {
      batch = { timeout = "5s" }
    }
    exporters = {
      awsemf = {
        region                           = local.region
        namespace                        = var.metrics_namespace
        log_group_name                   = one(aws_cloudwatch_log_group.metrics[*].name)
        log_stream_name                  = "{TaskId}"
        dimension_rollup_option          = "ZeroAndSingleDimensionRollup"
        resource_to_telemetry_conversion = { enabled = false }
      }
      awsxray = {
        region = local.region
      }
    }
    service = {
      pipelines = {
        metrics = {
          receivers = ["prometheus"]
          exporters = ["awsemf"]
        }
        traces = {
          receivers  = ["otlp"]
          processors = ["batch"]
          exporters  = ["awsxray"]
        }
      }
    }
  })

  sidecar_container = {
    name                   = "otel-collector"
    image                  = var.collector_sidecar_image
    essential              = false
    readonlyRootFilesystem = true
    environment            = [{ name = "AOT_CONFIG_CONTENT", value = local.collector_config }]
    mountPoints            = [{ sourceVolume = "collector-tmp", containerPath = "/tmp", readOnly = false }]
    logConfiguration = {
      logDriver = "awslogs"
      options   = merge(local.log_options, { awslogs-stream-prefix = "collector" })
    }
  }

  # Joined as JSON text: the two container objects have different shapes.
  container_definitions = "[${join(",", concat(
    [jsonencode(local.app_container)],
    var.enable_collector_sidecar ? [jsonencode(local.sidecar_container)] : [],
  ))}]"

  lb_ports = { for lb in var.load_balancers : tostring(lb.container_port) => lb.container_port }
}

# ------------------------------------------------------------------- logs

resource "aws_cloudwatch_log_group" "this" {
  name              = "/tenantry/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

# Receives the EMF documents of the collector; CloudWatch extracts the metrics from them.
resource "aws_cloudwatch_log_group" "metrics" {
  count = var.enable_collector_sidecar ? 1 : 0

  name              = "/tenantry/${var.name}/metrics"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

# ------------------------------------------------------------ execution role

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    sid     = "EcsTasksAssume"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  description        = "ECS agent for ${var.name}: pull the image, write logs, read the task's secrets"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "execution" {
  # GetAuthorizationToken has no resource-level permissions.
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "PullImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = [var.ecr_repository_arn]
  }

  statement {
    sid = "WriteLogs"
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
    ]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }

  dynamic "statement" {
    for_each = length(var.secrets) > 0 ? [1] : []

    content {
      sid       = "ReadTaskSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = distinct(values(var.secrets))
    }
  }

  statement {
    sid       = "DecryptSecrets"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-log-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# ------------------------------------------------------------------ task role

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  description        = "Identity of the ${var.name} containers (holds only what the sidecar or ECS Exec needs)"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "task" {
  count = var.enable_collector_sidecar || var.enable_execute_command ? 1 : 0

  dynamic "statement" {
    for_each = var.enable_collector_sidecar ? [1] : []

    content {
      sid = "PublishEmfMetrics"
      actions = [
        "logs:CreateLogStream",
        "logs:DescribeLogStreams",
        "logs:PutLogEvents",
      ]
      resources = [
        one(aws_cloudwatch_log_group.metrics[*].arn),
        "${one(aws_cloudwatch_log_group.metrics[*].arn)}:*",
      ]
    }
  }

  dynamic "statement" {
    for_each = var.enable_collector_sidecar ? [1] : []

    content {
      sid = "PublishTraces"
      actions = [
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
      ]
      # X-Ray's trace and sampling actions have no resource-level permissions.
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []

    content {
      sid = "EcsExecChannels"
      actions = [
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
      ]
      # The Session Manager message channels have no resource-level permissions.
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []

    content {
      sid       = "EcsExecEncryption"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  count = var.enable_collector_sidecar || var.enable_execute_command ? 1 : 0

  name   = "task"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task[0].json
}

# ------------------------------------------------------------ security group

resource "aws_security_group" "this" {
  name        = var.name
  description = "ECS tasks of ${var.name}"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_vpc_security_group_ingress_rule" "from_load_balancer" {
  for_each = local.lb_ports

  security_group_id            = aws_security_group.this.id
  description                  = "From the load balancer to container port ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = var.ingress_security_group_id
}

# AWS APIs (ECR, Secrets Manager, CloudWatch, STS) are reached over HTTPS through NAT.
resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.this.id
  description       = "HTTPS to AWS APIs and image registries"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# Backends (PostgreSQL, Redis): the tasks' group may reach exactly these groups and
# ports, and each backend admits exactly this service.
resource "aws_vpc_security_group_egress_rule" "peer" {
  for_each = var.peer_access

  security_group_id            = aws_security_group.this.id
  description                  = "To ${each.key} on ${each.value.port}"
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = each.value.security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "peer" {
  for_each = var.peer_access

  security_group_id            = each.value.security_group_id
  description                  = "${each.key} from ${var.name}"
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.this.id
}

# -------------------------------------------------------- task definition

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = local.container_definitions

  lifecycle {
    precondition {
      condition     = !contains(keys(var.environment), "OTEL_EXPORTER_OTLP_ENDPOINT") || (var.enable_collector_sidecar && lookup(var.environment, "OTEL_EXPORTER_OTLP_ENDPOINT", "") == "http://${local.otlp_endpoint}")
      error_message = "OTEL_EXPORTER_OTLP_ENDPOINT must be http://${local.otlp_endpoint}, the collector sidecar's receiver, and needs enable_collector_sidecar."
    }
  }

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "tmp"
  }

  dynamic "volume" {
    for_each = var.enable_collector_sidecar ? ["collector-tmp"] : []

    content {
      name = volume.value
    }
  }

  tags = var.tags
}

# ------------------------------------------------------------------ service

resource "aws_ecs_service" "this" {
  name                   = var.name
  cluster                = var.cluster_arn
  task_definition        = aws_ecs_task_definition.this.arn
  desired_count          = var.desired_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = var.enable_execute_command
  propagate_tags         = "SERVICE"

  enable_ecs_managed_tags            = true
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = length(var.load_balancers) > 0 ? var.health_check_grace_period_seconds : null

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.this.id]
    assign_public_ip = false
  }

  dynamic "load_balancer" {
    for_each = var.load_balancers

    content {
      target_group_arn = load_balancer.value.target_group_arn
      container_name   = "tenantry"
      container_port   = load_balancer.value.container_port
    }
  }

  tags = var.tags

  lifecycle {
    ignore_changes = [desired_count, task_definition]
  }

  depends_on = [aws_iam_role_policy.execution]
}

# ------------------------------------------------------------- autoscaling

resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity

  tags = var.tags
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = var.scale_in_cooldown
    scale_out_cooldown = var.scale_out_cooldown

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "requests" {
  count = var.requests_per_target == null ? 0 : 1

  name               = "${var.name}-alb-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.requests_per_target
    scale_in_cooldown  = var.scale_in_cooldown
    scale_out_cooldown = var.scale_out_cooldown

    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = var.request_count_resource_label
    }
  }
}
