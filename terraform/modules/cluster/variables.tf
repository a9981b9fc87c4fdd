variable "name" {
  description = "Name of the ECS cluster (e.g. tenantry-staging)."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the KMS key for ECS Exec session data and its log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the ECS Exec audit log group, in days."
  type        = number
  default     = 365
}

variable "container_insights" {
  description = "Container Insights level: \"enabled\" or \"enhanced\". Its RunningTaskCount metric feeds the running-tasks alarms."
  type        = string
  default     = "enabled"

  validation {
    condition     = contains(["enabled", "enhanced"], var.container_insights)
    error_message = "container_insights must be \"enabled\" or \"enhanced\" (the alarms need it)."
  }
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
