# The environment's customer-managed KMS key and the application's secrets.
#
# One key encrypts the secrets, the log groups, RDS storage and Performance Insights, the
# ElastiCache data, the ECR repository and the alarm SNS topic of one environment. Its
# policy delegates to IAM in this account (so only principals whose IAM policies name the
# key may use it) and lets the two services that act on their own behalf use it:
# CloudWatch Logs (log groups of this account only) and CloudWatch alarms (publishing to
# the encrypted SNS topic).
#
# Secrets, injected as environment variables into the ECS tasks:
#   DATABASE_URL             <name>/database-url      written by Terraform (from the database module)
#   REDIS_URL                <name>/redis-url         written by Terraform (rediss://, with the auth token)
#   TENANTRY_JWT_PRIVATE_KEY <name>/jwt-signing-key   written by an operator, never by Terraform,
#                                                     so no private key lands in the state
# and <name>/redis-auth-token, the ElastiCache AUTH token, read by the cache module.

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition
}

resource "aws_kms_key" "this" {
  description             = "Tenantry ${var.name}: secrets, logs, database, cache, registry and alarms"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = var.kms_deletion_window_in_days

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersKeyThroughIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsOfThisAccount"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action = [
          "kms:Encrypt*",
          "kms:Decrypt*",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"
          }
        }
      },
      {
        Sid       = "CloudWatchAlarmsPublishToEncryptedTopic"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action = [
          "kms:Decrypt",
          "kms:GenerateDataKey*",
        ]
        # As documented for encrypted alarm topics: SNS uses the key on CloudWatch's behalf.
        Resource = "*"
      },
    ]
  })

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

# ------------------------------------------------------------------ DATABASE_URL

resource "aws_secretsmanager_secret" "database_url" {
  #checkov:skip=CKV2_AWS_57:The URL embeds the RDS master password that Terraform manages; it is rotated by replacing module.database.random_password.master and re-applying (docs/operations.md), not by a rotation Lambda that Terraform would then fight.
  name                    = "${var.name}/database-url"
  description             = "DATABASE_URL of Tenantry ${var.name} (postgres://..., TLS required)."
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.recovery_window_in_days

  tags = var.tags
}

resource "aws_secretsmanager_secret_version" "database_url" {
  secret_id     = aws_secretsmanager_secret.database_url.id
  secret_string = var.database_url
}

# ------------------------------------------------------------- Redis AUTH / URL

# ElastiCache AUTH tokens are 16-128 printable characters without / " @ or spaces;
# alphanumerics also need no escaping inside REDIS_URL.
resource "random_password" "redis_auth_token" {
  length  = 64
  special = false
}

resource "aws_secretsmanager_secret" "redis_auth_token" {
  #checkov:skip=CKV2_AWS_57:ElastiCache AUTH rotation is a two-step ROTATE/SET change of the replication group, done through Terraform (replace module.secrets.random_password.redis_auth_token, see docs/operations.md); a rotation Lambda would bypass that sequence.
  name                    = "${var.name}/redis-auth-token"
  description             = "ElastiCache AUTH token of Tenantry ${var.name} (read by the cache module)."
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.recovery_window_in_days

  tags = var.tags
}

resource "aws_secretsmanager_secret_version" "redis_auth_token" {
  secret_id     = aws_secretsmanager_secret.redis_auth_token.id
  secret_string = random_password.redis_auth_token.result
}

resource "aws_secretsmanager_secret" "redis_url" {
  #checkov:skip=CKV2_AWS_57:Derived from the AUTH token secret and rewritten by Terraform whenever that token is rotated; it has no independent rotation.
  name                    = "${var.name}/redis-url"
  description             = "REDIS_URL of Tenantry ${var.name} (rediss://, TLS and AUTH token)."
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.recovery_window_in_days

  tags = var.tags
}

resource "aws_secretsmanager_secret_version" "redis_url" {
  secret_id     = aws_secretsmanager_secret.redis_url.id
  secret_string = "rediss://:${random_password.redis_auth_token.result}@${var.redis_primary_endpoint}:${var.redis_port}"
}

# --------------------------------------------------------------- JWT signing key

# Terraform creates the container only. The PEM value is put by an operator
# (docs/operations.md, "First deploy" and "Rotate JWT signing keys"), so the private key
# never enters the Terraform state.
resource "aws_secretsmanager_secret" "jwt_signing_key" {
  #checkov:skip=CKV2_AWS_57:JWT signing keys rotate through the application's key ring (new key verify-only, then signing, old key removed after the token lifetime), an ordered manual procedure in docs/operations.md that a Secrets Manager rotation Lambda cannot perform safely.
  name                    = "${var.name}/jwt-signing-key"
  description             = "RS256 JWT signing key(s) of Tenantry ${var.name}, PEM (TENANTRY_JWT_PRIVATE_KEY). Set by operators."
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.recovery_window_in_days

  tags = var.tags
}
