terraform {
  required_version = ">= 1.10.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # Partial configuration: the values are given at init time so that no account, bucket
  # or key id is committed. Create backend.hcl next to this file (it is not committed):
  #
  #   bucket       = "<terraform-state-bucket>"          # versioned, SSE-KMS, public access blocked
  #   key          = "tenantry/production/terraform.tfstate"
  #   region       = "<aws-region>"                      # e.g. eu-west-1
  #   encrypt      = true
  #   kms_key_id   = "<arn of the state bucket's KMS key>"
  #   use_lockfile = true                                # S3-native state locking (Terraform >= 1.10)
  #
  # then: terraform init -backend-config=backend.hcl
  backend "s3" {}
}

provider "aws" {
  region = var.region

  # Refuse to touch any other account than the one named for this environment.
  allowed_account_ids = [var.aws_account_id]

  default_tags {
    tags = {
      Project     = "tenantry"
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
