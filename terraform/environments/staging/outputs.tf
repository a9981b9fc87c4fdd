output "alb_dns_name" {
  description = "DNS name of the ALB (REST on https://<name>/, gRPC on <name>:443)."
  value       = module.loadbalancer.dns_name
}

output "ecr_repository_url" {
  description = "ECR repository CI pushes images to (GitHub variable ECR_REPOSITORY takes its name)."
  value       = module.registry.repository_url
}

output "ecr_repository_name" {
  description = "Name of the ECR repository."
  value       = module.registry.repository_name
}

output "ecs_cluster_name" {
  description = "ECS cluster name (GitHub variable ECS_CLUSTER)."
  value       = module.cluster.cluster_name
}

output "api_service_name" {
  description = "ECS service of the api (GitHub variable ECS_API_SERVICE)."
  value       = module.api.service_name
}

output "worker_service_name" {
  description = "ECS service of the worker (GitHub variable ECS_WORKER_SERVICE)."
  value       = module.worker.service_name
}

output "ci_build_role_arn" {
  description = "GitHub variable AWS_ECR_PUSH_ROLE_ARN of the <environment>-build GitHub environment."
  value       = module.ci.build_role_arn
}

output "ci_deploy_role_arn" {
  description = "GitHub variable AWS_DEPLOY_ROLE_ARN of the <environment> GitHub environment."
  value       = module.ci.deploy_role_arn
}

output "github_oidc_provider_arn" {
  description = "GitHub Actions OIDC provider used by the CI roles."
  value       = module.ci.github_oidc_provider_arn
}

output "aws_region" {
  description = "GitHub variable AWS_REGION of both GitHub environments."
  value       = var.region
}

output "jwt_signing_key_secret_name" {
  description = "Secret that must hold the JWT signing key PEM before the services can start (docs/operations.md)."
  value       = module.secrets.jwt_signing_key_secret_name
}

output "database_address" {
  description = "Address of the RDS instance (reachable from inside the VPC only)."
  value       = module.database.address
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of the Redis replication group (inside the VPC only)."
  value       = module.cache.primary_endpoint_address
}

output "alarm_topic_arn" {
  description = "SNS topic of the environment's alarms."
  value       = module.monitoring.alarm_topic_arn
}

output "api_log_group" {
  description = "CloudWatch log group of the api containers."
  value       = module.api.log_group_name
}

output "worker_log_group" {
  description = "CloudWatch log group of the worker containers."
  value       = module.worker.log_group_name
}
