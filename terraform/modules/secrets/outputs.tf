output "kms_key_arn" {
  description = "ARN of the environment's KMS key."
  value       = aws_kms_key.this.arn
}

output "kms_key_id" {
  description = "ID of the environment's KMS key."
  value       = aws_kms_key.this.key_id
}

output "kms_key_alias" {
  description = "Alias of the environment's KMS key."
  value       = aws_kms_alias.this.name
}

output "database_url_secret_arn" {
  description = "ARN of the DATABASE_URL secret."
  value       = aws_secretsmanager_secret_version.database_url.arn
}

output "redis_url_secret_arn" {
  description = "ARN of the REDIS_URL secret."
  value       = aws_secretsmanager_secret_version.redis_url.arn
}

output "redis_auth_token_secret_arn" {
  description = "ARN of the ElastiCache AUTH token secret."
  value       = aws_secretsmanager_secret.redis_auth_token.arn
}

output "redis_auth_token_version_id" {
  description = "Version id of the current ElastiCache AUTH token; changes when the token is rotated, so readers re-read it."
  value       = aws_secretsmanager_secret_version.redis_auth_token.version_id
}

output "jwt_signing_key_secret_arn" {
  description = "ARN of the JWT signing key secret (value set by operators)."
  value       = aws_secretsmanager_secret.jwt_signing_key.arn
}

output "jwt_signing_key_secret_name" {
  description = "Name of the JWT signing key secret, for `aws secretsmanager put-secret-value --secret-id`."
  value       = aws_secretsmanager_secret.jwt_signing_key.name
}

output "container_secrets" {
  description = "Environment variable name => secret ARN, ready for the service module's `secrets` input."
  value = {
    DATABASE_URL             = aws_secretsmanager_secret_version.database_url.arn
    REDIS_URL                = aws_secretsmanager_secret_version.redis_url.arn
    TENANTRY_JWT_PRIVATE_KEY = aws_secretsmanager_secret.jwt_signing_key.arn
  }
}
