output "alb_arn" {
  description = "ARN of the ALB."
  value       = aws_lb.this.arn
}

output "alb_arn_suffix" {
  description = "ARN suffix of the ALB (the LoadBalancer dimension of its CloudWatch metrics)."
  value       = aws_lb.this.arn_suffix
}

output "dns_name" {
  description = "DNS name of the ALB; point the service's domain at it (alias record)."
  value       = aws_lb.this.dns_name
}

output "zone_id" {
  description = "Route 53 zone id of the ALB, for alias records."
  value       = aws_lb.this.zone_id
}

output "security_group_id" {
  description = "Security group of the ALB; the api service admits traffic from it."
  value       = aws_security_group.alb.id
}

output "grpc_target_group_arn" {
  description = "ARN of the gRPC target group (container port grpc_port)."
  value       = aws_lb_target_group.grpc.arn
}

output "grpc_target_group_arn_suffix" {
  description = "ARN suffix of the gRPC target group (TargetGroup metric dimension)."
  value       = aws_lb_target_group.grpc.arn_suffix
}

output "http_target_group_arn" {
  description = "ARN of the REST target group (container port http_port)."
  value       = aws_lb_target_group.http.arn
}

output "http_target_group_arn_suffix" {
  description = "ARN suffix of the REST target group (TargetGroup metric dimension)."
  value       = aws_lb_target_group.http.arn_suffix
}

output "https_listener_arn" {
  description = "ARN of the HTTPS listener."
  value       = aws_lb_listener.https.arn
}

output "web_acl_arn" {
  description = "ARN of the WAF web ACL attached to the ALB."
  value       = aws_wafv2_web_acl.this.arn
}

output "access_logs_bucket" {
  description = "S3 bucket holding the ALB access logs (prefix alb/)."
  value       = aws_s3_bucket.access_logs.id
}
