output "build_role_arn" {
  description = "Role for release.yml's build job: GitHub variable AWS_ECR_PUSH_ROLE_ARN of the build environment."
  value       = aws_iam_role.build.arn
}

output "deploy_role_arn" {
  description = "Role for deploy.yml: GitHub variable AWS_DEPLOY_ROLE_ARN of the deploy environment."
  value       = aws_iam_role.deploy.arn
}

output "github_oidc_provider_arn" {
  description = "ARN of the GitHub Actions OIDC provider used by the roles (pass it to the other environment if it shares this account)."
  value       = local.provider_arn
}
