output "replication_group_id" {
  description = "ID of the replication group."
  value       = aws_elasticache_replication_group.this.id
}

output "primary_endpoint_address" {
  description = "Primary endpoint address (follows failover)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "reader_endpoint_address" {
  description = "Reader endpoint address (spreads over the replicas)."
  value       = aws_elasticache_replication_group.this.reader_endpoint_address
}

output "port" {
  description = "Redis port."
  value       = aws_elasticache_replication_group.this.port
}

output "num_cache_clusters" {
  description = "Number of nodes in the replication group."
  value       = var.num_cache_clusters
}

output "member_cluster_ids" {
  description = "Node ids (<replication group id>-001, -002, ...), the CacheClusterId dimension of node metrics; derived so they are known at plan time."
  value       = [for i in range(var.num_cache_clusters) : format("%s-%03d", var.name, i + 1)]
}

output "security_group_id" {
  description = "Security group of the cache; pass it to the service module's peer_access so the service may connect on 6379."
  value       = aws_security_group.cache.id
}
