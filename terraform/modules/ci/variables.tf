variable "name" {
  description = "Name prefix of the roles (e.g. tenantry-staging)."
  type        = string
}

variable "github_repository" {
  description = "GitHub repository allowed to assume the roles, as owner/name."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must look like owner/name."
  }
}

variable "build_environment" {
  description = "GitHub environment of the image build job (release.yml), e.g. staging-build."
  type        = string
}

variable "deploy_environment" {
  description = "GitHub environment of the deploy job (deploy.yml), e.g. staging or production."
  type        = string
}

variable "github_oidc_provider_arn" {
  description = "ARN of an existing GitHub Actions OIDC provider in the account; null creates one (only one may exist per account)."
  type        = string
  default     = null
}

variable "ecr_repository_arn" {
  description = "ECR repository the build role pushes to and the deploy role inspects."
  type        = string
}

variable "ecs_cluster_arn" {
  description = "ARN of the ECS cluster the deploy role runs tasks and updates services in."
  type        = string
}

variable "ecs_cluster_name" {
  description = "Name of that ECS cluster."
  type        = string
}

variable "ecs_service_names" {
  description = "ECS services the deploy role may describe and update."
  type        = list(string)
}

variable "task_definition_families" {
  description = "Task definition families the deploy role may run as one-off tasks (migrations)."
  type        = list(string)
}

variable "pass_role_arns" {
  description = "Execution and task roles referenced by the task definitions; the deploy role may pass exactly these to ECS."
  type        = list(string)
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
