output "service_name" {
  description = "Name of the ECS service (the ServiceName dimension of its metrics)."
  value       = aws_ecs_service.this.name
}

output "task_definition_family" {
  description = "Task definition family; CI registers new revisions in it."
  value       = aws_ecs_task_definition.this.family
}

output "task_definition_arn" {
  description = "ARN of the revision Terraform registered last (deploys register newer ones)."
  value       = aws_ecs_task_definition.this.arn
}

output "security_group_id" {
  description = "Security group of the tasks."
  value       = aws_security_group.this.id
}

output "execution_role_arn" {
  description = "ARN of the task execution role (CI's deploy role must be allowed to pass it)."
  value       = aws_iam_role.execution.arn
}

output "task_role_arn" {
  description = "ARN of the task role (CI's deploy role must be allowed to pass it)."
  value       = aws_iam_role.task.arn
}

output "log_group_name" {
  description = "CloudWatch log group of the tenantry container."
  value       = aws_cloudwatch_log_group.this.name
}

output "min_capacity" {
  description = "Lower bound of the service's autoscaling (the running-tasks alarm fires below it)."
  value       = var.min_capacity
}
