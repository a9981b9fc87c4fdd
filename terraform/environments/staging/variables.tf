variable "environment" {
  description = "Environment name; part of every resource name."
  type        = string
  default     = "staging"
}

variable "region" {
  description = "AWS region of the environment."
  type        = string
}

variable "availability_zones" {
  description = "Availability zones of the environment, in var.region (two or more)."
  type        = list(string)
}

variable "aws_account_id" {
  description = "AWS account id the environment lives in; the provider refuses any other."
  type        = string
}

variable "image_tag" {
  description = "Image tag (git SHA) the services are created with. Later deploys are done by CI and do not change this value; see docs/operations.md."
  type        = string
}

variable "certificate_arn" {
  description = "ARN of the ACM certificate for the ALB's HTTPS listener (issued in var.region)."
  type        = string
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone for the api's alias record; null to manage DNS elsewhere."
  type        = string
  default     = null
}

variable "domain_name" {
  description = "DNS name of the api (e.g. api.staging.example.com), used with route53_zone_id."
  type        = string
  default     = null
}

variable "alarm_email_addresses" {
  description = "Email addresses that receive the alarms."
  type        = list(string)
  default     = []
}

variable "vpc_cidr_block" {
  description = "IPv4 CIDR of the environment's VPC."
  type        = string
  default     = "10.20.0.0/16"
}

variable "rust_log" {
  description = "RUST_LOG filter of the tenantry containers."
  type        = string
  default     = "info"
}

variable "github_repository" {
  description = "GitHub repository (owner/name) whose release workflows may assume the CI roles."
  type        = string
}

variable "github_oidc_provider_arn" {
  description = "Existing GitHub Actions OIDC provider of the account; null creates it (set it in the second environment when both share an account)."
  type        = string
  default     = null
}
