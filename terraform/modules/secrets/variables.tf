variable "name" {
  description = "Name prefix of the KMS key alias and of every secret (e.g. tenantry-staging); secrets are named <name>/<secret>."
  type        = string
}

variable "database_url" {
  description = "Full PostgreSQL connection URL for the application (from the database module). Stored as the DATABASE_URL secret."
  type        = string
  sensitive   = true
}

variable "redis_primary_endpoint" {
  description = "Primary endpoint address of the ElastiCache replication group, used to build the REDIS_URL secret."
  type        = string
}

variable "redis_port" {
  description = "Port of the ElastiCache replication group."
  type        = number
  default     = 6379
}

variable "recovery_window_in_days" {
  description = "Days a deleted secret can still be restored (0 deletes at once; 7-30 otherwise)."
  type        = number
  default     = 30

  validation {
    condition     = var.recovery_window_in_days == 0 || (var.recovery_window_in_days >= 7 && var.recovery_window_in_days <= 30)
    error_message = "recovery_window_in_days must be 0 or between 7 and 30."
  }
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the KMS key is deleted after it is scheduled for deletion (7-30 days)."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_in_days >= 7 && var.kms_deletion_window_in_days <= 30
    error_message = "kms_deletion_window_in_days must be between 7 and 30."
  }
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
