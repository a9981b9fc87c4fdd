variable "name" {
  description = "Name of the ECR repository (e.g. tenantry-staging)."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the repository."
  type        = string
}

variable "keep_images" {
  description = "Number of most recent images kept; older ones are expired by the lifecycle policy."
  type        = number
  default     = 100
}

variable "untagged_expiry_days" {
  description = "Untagged images (e.g. leftovers of interrupted pushes) are expired after this many days."
  type        = number
  default     = 7
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
