variable "name" {
  description = "Replication group id and name prefix of its resources (e.g. tenantry-staging; at most 40 characters)."
  type        = string

  validation {
    condition     = length(var.name) <= 40
    error_message = "name must be at most 40 characters (ElastiCache replication group id)."
  }
}

variable "vpc_id" {
  description = "ID of the VPC the cache lives in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnet IDs for the cache subnet group (at least two availability zones)."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "ARN of the KMS key for at-rest encryption and the cache log groups."
  type        = string
}

variable "auth_token_secret_arn" {
  description = "ARN of the Secrets Manager secret that holds the AUTH token (from the secrets module)."
  type        = string
}

variable "auth_token_secret_version_id" {
  description = "Version id of the AUTH token secret to read; passing it makes a rotated token reach the replication group in the same apply."
  type        = string
}

variable "engine_version" {
  description = "Redis engine version."
  type        = string
  default     = "7.1"
}

variable "parameter_group_name" {
  description = "Cache parameter group (cluster mode disabled)."
  type        = string
  default     = "default.redis7"
}

variable "node_type" {
  description = "ElastiCache node type (e.g. cache.t4g.small, cache.r7g.large)."
  type        = string
}

variable "num_cache_clusters" {
  description = "Number of nodes: one primary and num_cache_clusters-1 replicas (at least 2, for automatic failover)."
  type        = number
  default     = 2

  validation {
    condition     = var.num_cache_clusters >= 2 && var.num_cache_clusters <= 6
    error_message = "num_cache_clusters must be between 2 and 6 (automatic failover needs a replica)."
  }
}

variable "multi_az_enabled" {
  description = "Place the replicas in other availability zones than the primary and fail over across zones."
  type        = bool
  default     = true
}

variable "snapshot_retention_days" {
  description = "Days of daily snapshots kept (rate-limit state is reconstructible, so a short retention is enough)."
  type        = number
  default     = 3
}

variable "snapshot_window" {
  description = "Daily UTC snapshot window (hh24:mi-hh24:mi)."
  type        = string
  default     = "02:00-03:00"
}

variable "maintenance_window" {
  description = "Weekly UTC maintenance window (ddd:hh24:mi-ddd:hh24:mi)."
  type        = string
  default     = "sun:05:30-sun:06:30"
}

variable "log_retention_days" {
  description = "Retention of the slow-log and engine-log groups, in days."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
