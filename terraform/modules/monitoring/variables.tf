variable "name" {
  description = "Name prefix of the topic and alarms (e.g. tenantry-staging)."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the SNS topic (its policy must let CloudWatch use it)."
  type        = string
}

variable "alarm_email_addresses" {
  description = "Email addresses subscribed to the alarm topic (each must confirm the subscription)."
  type        = list(string)
  default     = []
}

variable "alb_arn_suffix" {
  description = "ARN suffix of the ALB (LoadBalancer dimension)."
  type        = string
}

variable "target_groups" {
  description = "Target group label (e.g. grpc, rest) => ARN suffix, for the unhealthy-target alarms."
  type        = map(string)
}

variable "latency_target_group_arn_suffix" {
  description = "ARN suffix of the target group whose response time is alarmed on (REST: unary calls only; gRPC WatchJob streams would dominate a gRPC percentile)."
  type        = string
}

variable "error_rate_threshold_percent" {
  description = "Alarm when 5xx responses (target + ALB generated) exceed this percentage of requests."
  type        = number
  default     = 5
}

variable "error_rate_min_requests" {
  description = "Minimum requests per period before the 5xx rate is judged (quiet periods never alarm)."
  type        = number
  default     = 50
}

variable "latency_p99_threshold_seconds" {
  description = "Alarm when the p99 target response time exceeds this many seconds."
  type        = number
  default     = 1
}

variable "db_instance_id" {
  description = "Identifier of the RDS instance."
  type        = string
}

variable "db_cpu_threshold_percent" {
  description = "Alarm when RDS CPU utilisation exceeds this percentage."
  type        = number
  default     = 80
}

variable "db_free_storage_threshold_bytes" {
  description = "Alarm when RDS free storage falls below this many bytes."
  type        = number
  default     = 10737418240
}

variable "db_connections_threshold" {
  description = "Alarm when RDS connections exceed this number (set to ~80% of the instance's max_connections)."
  type        = number
}

variable "redis_node_ids" {
  description = "Cache cluster (node) ids of the replication group."
  type        = list(string)
}

variable "redis_cpu_threshold_percent" {
  description = "Alarm when a Redis node's engine CPU exceeds this percentage."
  type        = number
  default     = 75
}

variable "redis_memory_threshold_percent" {
  description = "Alarm when a Redis node's used memory exceeds this percentage of maxmemory."
  type        = number
  default     = 80
}

variable "ecs_cluster_name" {
  description = "Name of the ECS cluster."
  type        = string
}

variable "ecs_services" {
  description = "ECS service name => minimum running tasks; an alarm fires when fewer run."
  type        = map(number)
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the custom metrics published by the api's collector sidecar."
  type        = string
  default     = "Tenantry"
}

variable "queue_depth_metric_name" {
  description = "Custom metric holding the number of ready jobs waiting in the queue."
  type        = string
  default     = "tenantry_jobs_queue_depth"
}

variable "queue_depth_threshold" {
  description = "Alarm when more jobs than this have been waiting for the whole evaluation window."
  type        = number
  default     = 1000
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
