variable "name" {
  description = "Identifier of the RDS instance and name prefix of its resources (e.g. tenantry-staging)."
  type        = string
}

variable "vpc_id" {
  description = "ID of the VPC the database lives in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnet IDs for the DB subnet group (at least two availability zones)."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "ARN of the KMS key for storage, Performance Insights and the exported log groups."
  type        = string
}

variable "engine_version" {
  description = "PostgreSQL engine version. A major version alone (\"15\") lets RDS pick and auto-upgrade the minor version."
  type        = string
  default     = "15"
}

variable "instance_class" {
  description = "RDS instance class (e.g. db.t4g.medium, db.r6g.large)."
  type        = string
}

variable "allocated_storage" {
  description = "Initial allocated storage in GiB (gp3)."
  type        = number
  default     = 50
}

variable "max_allocated_storage" {
  description = "Upper bound in GiB for storage autoscaling."
  type        = number
  default     = 500
}

variable "multi_az" {
  description = "Run a synchronous standby in a second availability zone with automatic failover."
  type        = bool
  default     = true
}

variable "database_name" {
  description = "Name of the database created on the instance."
  type        = string
  default     = "tenantry"
}

variable "master_username" {
  description = "Master user name. The application connects as this user through the DATABASE_URL secret."
  type        = string
  default     = "tenantry"
}

variable "backup_retention_days" {
  description = "Days of automated backups and point-in-time recovery (1-35)."
  type        = number
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "backup_window" {
  description = "Daily UTC window for automated backups (hh24:mi-hh24:mi), outside maintenance_window."
  type        = string
  default     = "03:00-04:00"
}

variable "maintenance_window" {
  description = "Weekly UTC maintenance window (ddd:hh24:mi-ddd:hh24:mi)."
  type        = string
  default     = "sun:04:30-sun:05:30"
}

variable "deletion_protection" {
  description = "Refuse to delete the instance until this is turned off."
  type        = bool
  default     = true
}

variable "performance_insights_retention_days" {
  description = "Performance Insights retention in days (7 is free; otherwise a multiple of 31, up to 731)."
  type        = number
  default     = 7
}

variable "monitoring_interval" {
  description = "Enhanced Monitoring interval in seconds (1, 5, 10, 15, 30 or 60)."
  type        = number
  default     = 60

  validation {
    condition     = contains([1, 5, 10, 15, 30, 60], var.monitoring_interval)
    error_message = "monitoring_interval must be one of 1, 5, 10, 15, 30, 60 (Enhanced Monitoring stays on)."
  }
}

variable "log_min_duration_statement_ms" {
  description = "Statements running longer than this many milliseconds are logged (log_min_duration_statement)."
  type        = number
  default     = 500
}

variable "log_retention_days" {
  description = "Retention of the exported PostgreSQL log groups, in days."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
