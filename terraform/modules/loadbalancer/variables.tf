variable "name" {
  description = "Name of the ALB and prefix of its resources (e.g. tenantry-staging; at most 27 characters so target group names fit)."
  type        = string

  validation {
    condition     = length(var.name) <= 27
    error_message = "name must be at most 27 characters (ALB and target group names are limited to 32)."
  }
}

variable "vpc_id" {
  description = "ID of the VPC."
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR of the VPC; the ALB may only send traffic to targets inside it."
  type        = string
}

variable "subnet_ids" {
  description = "Public subnet IDs the ALB is placed in (at least two availability zones)."
  type        = list(string)
}

variable "internal" {
  description = "Make the ALB internal (reachable from inside the VPC only) instead of internet-facing."
  type        = bool
  default     = false
}

variable "ingress_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach the listeners (443, and 80 which only redirects)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "certificate_arn" {
  description = "ARN of the ACM certificate served by the HTTPS listener."
  type        = string
}

variable "additional_certificate_arns" {
  description = "Further ACM certificates for the HTTPS listener (SNI)."
  type        = list(string)
  default     = []
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener (TLS 1.2+ only)."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "grpc_port" {
  description = "Container port of the gRPC server."
  type        = number
  default     = 50051
}

variable "http_port" {
  description = "Container port of the REST gateway and health endpoints."
  type        = number
  default     = 8080
}

variable "idle_timeout" {
  description = "Seconds a connection may stay idle; also bounds quiet periods of WatchJob streams."
  type        = number
  default     = 300
}

variable "deregistration_delay" {
  description = "Seconds the ALB keeps sending in-flight requests to a draining target; keep it below the task's stop timeout."
  type        = number
  default     = 30
}

variable "deletion_protection" {
  description = "Refuse to delete the ALB until this is turned off."
  type        = bool
  default     = true
}

variable "waf_rate_limit" {
  description = "Requests per client IP per 5 minutes above which WAF blocks that IP (the application's own per-tenant limits apply below it)."
  type        = number
  default     = 60000
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the WAF log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the WAF log group, in days."
  type        = number
  default     = 365
}

variable "access_log_retention_days" {
  description = "Days ALB access logs are kept in S3."
  type        = number
  default     = 365
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone in which to create an alias record for the ALB; null creates none."
  type        = string
  default     = null
}

variable "domain_name" {
  description = "Record name of the alias (e.g. api.staging.example.com); used only with route53_zone_id."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
