# Alarm topic (SNS, KMS-encrypted) and the CloudWatch alarms of one environment. Every
# alarm notifies on ALARM and on OK. docs/operations.md ("Alerts") says what to do for each.

data "aws_caller_identity" "current" {}

locals {
  actions = [aws_sns_topic.alarms.arn]
  # Five-minute periods, three in a row, unless an alarm says otherwise.
  period = 300
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = var.kms_key_arn

  tags = var.tags
}

data "aws_iam_policy_document" "alarms_topic" {
  statement {
    sid       = "CloudWatchAlarmsPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_sns_topic_policy" "alarms" {
  arn    = aws_sns_topic.alarms.arn
  policy = data.aws_iam_policy_document.alarms_topic.json
}

resource "aws_sns_topic_subscription" "email" {
  for_each = toset(var.alarm_email_addresses)

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

# --------------------------------------------------------------------- ALB

resource "aws_cloudwatch_metric_alarm" "alb_5xx_rate" {
  alarm_name          = "${var.name}-alb-5xx-rate"
  alarm_description   = "More than ${var.error_rate_threshold_percent}% of requests through the ALB ended in a 5xx (target or ALB generated) for 15 minutes. gRPC errors travel as grpc-status on HTTP 200 and are not counted here."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.error_rate_threshold_percent
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions

  metric_query {
    id          = "rate"
    label       = "5xx percentage"
    return_data = true
    expression  = "IF(FILL(requests, 0) >= ${var.error_rate_min_requests}, 100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests, 0)"
  }

  metric_query {
    id = "requests"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      dimensions  = { LoadBalancer = var.alb_arn_suffix }
      period      = local.period
      stat        = "Sum"
    }
  }

  metric_query {
    id = "target5xx"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = { LoadBalancer = var.alb_arn_suffix }
      period      = local.period
      stat        = "Sum"
    }
  }

  metric_query {
    id = "elb5xx"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      dimensions  = { LoadBalancer = var.alb_arn_suffix }
      period      = local.period
      stat        = "Sum"
    }
  }

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "target_latency_p99" {
  alarm_name          = "${var.name}-target-latency-p99"
  alarm_description   = "p99 response time of the REST targets above ${var.latency_p99_threshold_seconds}s for 15 minutes."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  extended_statistic  = "p99"
  period              = local.period
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.latency_p99_threshold_seconds
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions

  dimensions = {
    LoadBalancer = var.alb_arn_suffix
    TargetGroup  = var.latency_target_group_arn_suffix
  }

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "unhealthy_targets" {
  for_each = var.target_groups

  alarm_name          = "${var.name}-${each.key}-unhealthy-targets"
  alarm_description   = "At least one ${each.key} target failed its ALB health check for 5 minutes."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions

  dimensions = {
    LoadBalancer = var.alb_arn_suffix
    TargetGroup  = each.value
  }

  tags = var.tags
}

# --------------------------------------------------------------------- RDS

resource "aws_cloudwatch_metric_alarm" "rds_cpu" {
  alarm_name          = "${var.name}-rds-cpu"
  alarm_description   = "RDS CPU above ${var.db_cpu_threshold_percent}% for 15 minutes."
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  period              = local.period
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.db_cpu_threshold_percent
  treat_missing_data  = "breaching"
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions
  dimensions          = { DBInstanceIdentifier = var.db_instance_id }

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "rds_free_storage" {
  alarm_name          = "${var.name}-rds-free-storage"
  alarm_description   = "RDS free storage below ${floor(var.db_free_storage_threshold_bytes / 1073741824)} GiB."
  namespace           = "AWS/RDS"
  metric_name         = "FreeStorageSpace"
  statistic           = "Minimum"
  period              = local.period
  evaluation_periods  = 1
  comparison_operator = "LessThanThreshold"
  threshold           = var.db_free_storage_threshold_bytes
  treat_missing_data  = "breaching"
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions
  dimensions          = { DBInstanceIdentifier = var.db_instance_id }

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "rds_connections" {
  alarm_name          = "${var.name}-rds-connections"
  alarm_description   = "More than ${var.db_connections_threshold} RDS connections for 10 minutes."
  namespace           = "AWS/RDS"
  metric_name         = "DatabaseConnections"
  statistic           = "Maximum"
  period              = local.period
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.db_connections_threshold
  treat_missing_data  = "breaching"
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions
  dimensions          = { DBInstanceIdentifier = var.db_instance_id }

  tags = var.tags
}

# ------------------------------------------------------------------- Redis

resource "aws_cloudwatch_metric_alarm" "redis_cpu" {
  count = length(var.redis_node_ids)

  alarm_name          = "${var.name}-redis-cpu-${var.redis_node_ids[count.index]}"
  alarm_description   = "Redis engine CPU of ${var.redis_node_ids[count.index]} above ${var.redis_cpu_threshold_percent}% for 15 minutes."
  namespace           = "AWS/ElastiCache"
  metric_name         = "EngineCPUUtilization"
  statistic           = "Average"
  period              = local.period
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.redis_cpu_threshold_percent
  treat_missing_data  = "breaching"
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions
  dimensions          = { CacheClusterId = var.redis_node_ids[count.index] }

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "redis_memory" {
  count = length(var.redis_node_ids)

  alarm_name          = "${var.name}-redis-memory-${var.redis_node_ids[count.index]}"
  alarm_description   = "Redis memory of ${var.redis_node_ids[count.index]} above ${var.redis_memory_threshold_percent}% of maxmemory for 15 minutes."
  namespace           = "AWS/ElastiCache"
  metric_name         = "DatabaseMemoryUsagePercentage"
  statistic           = "Maximum"
  period              = local.period
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.redis_memory_threshold_percent
  treat_missing_data  = "breaching"
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions
  dimensions          = { CacheClusterId = var.redis_node_ids[count.index] }

  tags = var.tags
}

# --------------------------------------------------------------------- ECS

resource "aws_cloudwatch_metric_alarm" "ecs_running_tasks" {
  for_each = var.ecs_services

  alarm_name          = "${each.key}-running-tasks"
  alarm_description   = "Fewer than ${each.value} running tasks of ${each.key} for 5 minutes (crash loop, failed deployment or no capacity)."
  namespace           = "ECS/ContainerInsights"
  metric_name         = "RunningTaskCount"
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "LessThanThreshold"
  threshold           = each.value
  treat_missing_data  = "breaching"
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions

  dimensions = {
    ClusterName = var.ecs_cluster_name
    ServiceName = each.key
  }

  tags = var.tags
}

# -------------------------------------------------------------------- jobs

resource "aws_cloudwatch_metric_alarm" "job_queue_depth" {
  alarm_name        = "${var.name}-job-queue-depth"
  alarm_description = "More than ${var.queue_depth_threshold} ready jobs waiting for 15 minutes: workers are not keeping up or are stuck."
  namespace         = var.metrics_namespace
  metric_name       = var.queue_depth_metric_name
  # The exporter's single-dimension rollup by job state: only jobs ready to run.
  dimensions          = { state = "available" }
  statistic           = "Maximum"
  period              = local.period
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.queue_depth_threshold
  treat_missing_data  = "missing"
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions

  tags = var.tags
}
