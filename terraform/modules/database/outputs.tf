output "instance_id" {
  description = "Identifier of the RDS instance (the DBInstanceIdentifier dimension of its metrics)."
  value       = aws_db_instance.this.identifier
}

output "instance_arn" {
  description = "ARN of the RDS instance."
  value       = aws_db_instance.this.arn
}

output "resource_id" {
  description = "Resource id of the RDS instance, for rds-db:connect IAM policies."
  value       = aws_db_instance.this.resource_id
}

output "address" {
  description = "DNS address of the RDS instance."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "Port of the RDS instance."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "Name of the application database."
  value       = aws_db_instance.this.db_name
}

output "master_username" {
  description = "Master user name."
  value       = aws_db_instance.this.username
}

output "database_url" {
  description = "postgres:// URL for the application, TLS required (sslmode=require). Store it in Secrets Manager; never print it."
  value       = "postgres://${aws_db_instance.this.username}:${random_password.master.result}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${aws_db_instance.this.db_name}?sslmode=require"
  sensitive   = true
}

output "security_group_id" {
  description = "Security group of the database; pass it to the service module's peer_access so the service may connect on 5432."
  value       = aws_security_group.db.id
}
