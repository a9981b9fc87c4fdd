-- Plans: 0 means unlimited for rates and job concurrency (as for quotas).
ALTER TABLE platform.plans DROP CONSTRAINT plans_requests_per_second_check;
ALTER TABLE platform.plans ADD CONSTRAINT plans_requests_per_second_check CHECK (requests_per_second >= 0);
ALTER TABLE platform.plans DROP CONSTRAINT plans_burst_check;
ALTER TABLE platform.plans ADD CONSTRAINT plans_burst_check CHECK (burst >= 0);
ALTER TABLE platform.plans DROP CONSTRAINT plans_max_concurrent_jobs_check;
ALTER TABLE platform.plans ADD CONSTRAINT plans_max_concurrent_jobs_check CHECK (max_concurrent_jobs >= 0);

-- When a deleted tenant's schema was dropped; the row stays as a tombstone
-- so ids are never reused and audit references resolve.
ALTER TABLE platform.tenants ADD COLUMN purged_at timestamptz;
CREATE INDEX tenants_purge_due ON platform.tenants (purge_after) WHERE state = 'deleted' AND purged_at IS NULL;
