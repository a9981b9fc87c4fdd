variable "name" {
  description = "Name of the ECS service, task definition family, roles and log group (e.g. tenantry-staging-api)."
  type        = string
}

variable "cluster_name" {
  description = "Name of the ECS cluster the service runs in."
  type        = string
}

variable "cluster_arn" {
  description = "ARN of the ECS cluster the service runs in."
  type        = string
}

variable "vpc_id" {
  description = "ID of the VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnet IDs the tasks are placed in."
  type        = list(string)
}

variable "peer_access" {
  description = "Backends the tasks connect to, by label (e.g. postgres, redis): the backend's security group and port. The module adds an ingress rule on that group from the tasks' group, and the matching egress rule."
  type = map(object({
    security_group_id = string
    port              = number
  }))
  default = {}
}

variable "image" {
  description = "Container image of tenantry, with an immutable tag (<repository url>:<git sha>). Deploys register new revisions with a new image; see docs/operations.md."
  type        = string
}

variable "command" {
  description = "Arguments to the tenantry entrypoint, e.g. [\"serve\", \"--no-workers\"] or [\"worker\"]."
  type        = list(string)
}

variable "cpu" {
  description = "Task CPU units (256, 512, 1024, 2048, 4096, ...)."
  type        = number
}

variable "memory" {
  description = "Task memory in MiB, valid for the chosen cpu."
  type        = number
}

variable "cpu_architecture" {
  description = "CPU architecture of the tasks (X86_64 or ARM64); the image must be built for it."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "environment" {
  description = "Plain environment variables of the tenantry container (never secrets)."
  type        = map(string)
  default     = {}
}

variable "secrets" {
  description = "Environment variable name => Secrets Manager secret ARN, injected at task start; the execution role may read exactly these."
  type        = map(string)
  default     = {}
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the secrets and the log groups."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ARN of the ECR repository the execution role may pull from."
  type        = string
}

variable "container_ports" {
  description = "TCP ports the tenantry container listens on."
  type        = list(number)
  default     = []
}

variable "load_balancers" {
  description = "Target groups to register the tasks in, with the container port of each. Requires ingress_security_group_id."
  type = list(object({
    target_group_arn = string
    container_port   = number
  }))
  default = []
}

variable "ingress_security_group_id" {
  description = "Security group (the ALB's) allowed to reach the load-balanced container ports; null when load_balancers is empty."
  type        = string
  default     = null
}

variable "health_check_command" {
  description = "ECS container health check command (e.g. [\"CMD\", \"bash\", \"-c\", \"...\"]); null for none."
  type        = list(string)
  default     = null
}

variable "health_check_grace_period_seconds" {
  description = "Seconds after a task starts during which failing load balancer health checks are ignored."
  type        = number
  default     = 60
}

variable "stop_timeout" {
  description = "Seconds between SIGTERM and SIGKILL (Fargate allows at most 120): time to drain calls, flush usage and release jobs."
  type        = number
  default     = 60

  validation {
    condition     = var.stop_timeout >= 2 && var.stop_timeout <= 120
    error_message = "stop_timeout must be between 2 and 120 seconds on Fargate."
  }
}

variable "desired_count" {
  description = "Tasks at creation; afterwards autoscaling owns the count (Terraform ignores later drift)."
  type        = number
}

variable "min_capacity" {
  description = "Lower bound of the autoscaling target."
  type        = number
}

variable "max_capacity" {
  description = "Upper bound of the autoscaling target."
  type        = number
}

variable "cpu_target_percent" {
  description = "Target average CPU utilisation of the service for target-tracking scaling."
  type        = number
  default     = 60
}

variable "requests_per_target" {
  description = "Target ALB requests per task per minute for target-tracking scaling (ALBRequestCountPerTarget); null disables this policy."
  type        = number
  default     = null
}

variable "request_count_resource_label" {
  description = "<alb arn suffix>/<target group arn suffix> whose requests are counted; required with requests_per_target."
  type        = string
  default     = null
}

variable "scale_in_cooldown" {
  description = "Seconds after a scale-in before another scale-in."
  type        = number
  default     = 300
}

variable "scale_out_cooldown" {
  description = "Seconds after a scale-out before another scale-out."
  type        = number
  default     = 60
}

variable "enable_execute_command" {
  description = "Allow ECS Exec into the tasks (sessions are encrypted and logged by the cluster)."
  type        = bool
  default     = false
}

variable "enable_collector_sidecar" {
  description = "Run an OpenTelemetry collector (ADOT) sidecar: it scrapes /metrics and publishes the selected series to CloudWatch as custom metrics (EMF), and receives OTLP traces on 127.0.0.1:4317 and sends them to X-Ray."
  type        = bool
  default     = false
}

variable "collector_sidecar_image" {
  description = "Image of the collector sidecar (AWS Distro for OpenTelemetry); mirror it into ECR to avoid public pull limits."
  type        = string
  default     = "amazon/aws-otel-collector:v0.47.0"
}

variable "metrics_scrape_port" {
  description = "Port of the tenantry /metrics endpoint inside the task."
  type        = number
  default     = 8080
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the published custom metrics."
  type        = string
  default     = "Tenantry"
}

variable "metrics_name_regex" {
  description = "Prometheus metric names to publish (anchored RE2, no '$'); everything else is dropped before it costs anything."
  type        = string
  default     = "tenantry_jobs_(queue_depth|oldest_age_seconds)"
}

variable "log_retention_days" {
  description = "Retention of the service's log groups, in days."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
